"""Issue #6 acceptance: the everyday kubectl commands against ``debian:stable``, end to end.

One ``k3py server`` with its in-process node agent on its own test host; the debootstrap-built
``debian:stable`` image and busybox are imported into the agent's image store before start.
Every check drives the real kubectl the way a user types it (``-it`` sessions on a
pseudo-terminal) and asserts what that user would see: command output, pod status columns,
restart counts, exit codes.

The pods the checks need are created together by the fixture so that they start in parallel;
the slow ones (CrashLoopBackOff's 10 s doubling back-off, probes) run while earlier checks do
their work. Checks that share a pod only read from it, except where noted. The last check
SIGKILLs the server and starts it again on the same data dir and test host: the pods must keep
running without a restart being counted.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import struct
import termios
import time
from collections.abc import Iterator

import pytest

from tests.cluster import TestCluster
from tests.e2e.test_kubectl_workloads import (
    Terminal,
    _background,
    _http_get,
    _kubectl_argv,
    _node_ready,
    _read_until,
    _wait_running,
)
from tests.images import debian_archive
from tests.kubelet.conftest import busybox_archive

GRACEFUL = "trap 'echo got TERM; sleep 3; echo bye; exit 0' TERM; echo ready; while true; do sleep 0.2; done"
SHELL = "trap 'exit 0' TERM; while true; do sleep 0.2; done"  # bash as pid 1 ignores TERM without a trap


def _pod(
    name: str,
    image: str,
    command: list[str],
    restart: str = "Always",
    volumes: list[dict] | None = None,
    **container: object,
) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart, "terminationGracePeriodSeconds": 5, "volumes": volumes or [],
            "containers": [{"name": name, "image": image, "command": command, **container}],
        },
    }  # fmt: skip


def _manifests() -> list[dict]:
    probe = {"periodSeconds": 1, "failureThreshold": 1, "initialDelaySeconds": 0}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"GREETING": "hello-from-configmap", "app.conf": "answer = 42\n"},
        },
        _pod(
            "web",
            "busybox",  # the imported :latest image: IfNotPresent, as on any offline node
            imagePullPolicy="IfNotPresent",
            command=[
                "sh",
                "-c",
                "mkdir -p /www && echo hello-debian-acceptance > /www/index.html && exec httpd -f -p 80 -h /www",
            ],
        ),
        _pod(
            "ticker",
            "debian:stable",
            ["bash", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"],
        ),
        _pod(
            "restarter",
            "debian:stable",
            ["bash", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 1; exit 1"],
        ),
        _pod(
            "liveness",
            "debian:stable",
            ["bash", "-c", SHELL],
            livenessProbe={"exec": {"command": ["test", "-f", "/tmp/healthy"]}, **probe},
        ),
        _pod(
            "readiness",
            "debian:stable",
            ["bash", "-c", SHELL],
            readinessProbe={"exec": {"command": ["test", "-f", "/tmp/ready"]}, **probe},
        ),
        _pod(
            "hog",
            "debian:stable",
            ["bash", "-c", "tail /dev/zero"],
            restart="Never",
            resources={"limits": {"memory": "32Mi"}},
        ),
        _pod(
            "configured",
            "debian:stable",
            ["bash", "-c", SHELL],
            volumes=[{"name": "settings", "configMap": {"name": "settings"}}],
            envFrom=[{"configMapRef": {"name": "settings"}}],
            volumeMounts=[{"name": "settings", "mountPath": "/etc/settings"}],
        ),
        _pod("graceful", "debian:stable", ["bash", "-c", GRACEFUL]),
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    debian = debian_archive()
    base = tmp_path_factory.mktemp("debian-e2e")
    store = ImageStore(base / "agent" / "runtime" / "images")
    import_archive(store, busybox_archive())
    import_archive(store, debian)
    manifests = _manifests()
    with TestCluster(base, agent=True) as cluster:
        cluster.wait_for(
            lambda: _node_ready(cluster),
            timeout=60,
            interval=0.2,
            what=f"a Ready node\n{cluster.server_log()}",
        )
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        )
        yield cluster


def _pod_json(cluster: TestCluster, name: str, namespace: str = "default") -> dict | None:
    result = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _container_status(pod: dict | None) -> dict:
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
    return statuses[0]


def _ready(pod: dict | None) -> str | None:
    conditions = {
        c["type"]: c["status"] for c in (pod or {}).get("status", {}).get("conditions", [])
    }
    return conditions.get("Ready")


def test_namespace_and_run_debian_interactively(cluster: TestCluster) -> None:
    created = cluster.kubectl("create", "namespace", "easysoft")
    assert created.stdout == "namespace/easysoft created\n"
    assert (
        cluster.kubectl("get", "namespace", "easysoft", "-o", "jsonpath={.status.phase}").stdout
        == "Active"
    )

    terminal = Terminal(
        _kubectl_argv(cluster, "run", "debian", "--image=debian:stable", "-it", "--", "/bin/bash")
    )
    try:
        terminal.type("\r")  # kubectl attaches after the start; the first prompt may be gone
        terminal.expect("#", timeout=90)
        # One read up to a marker that only the output contains (not the echoed command).
        terminal.type("echo answer-$((6*7)); cat /etc/debian_version; tty; echo done-$((1+1))\r")
        seen = terminal.expect("done-2")
        terminal.type("exit\r")
        ended = terminal.expect("command when the pod is running", timeout=30)
    finally:
        code = terminal.close(timeout=30)
    assert "Session ended, resume using 'kubectl attach debian -c debian -i -t'" in ended
    version, terminal_name = seen.split("answer-42", 1)[1].split()[:2]
    assert version[0].isdigit() or "/" in version, seen  # 12.x, or trixie/sid
    assert terminal_name == "/dev/pts/0", seen  # the container's own terminal, not "not a tty"
    assert code == 0

    # Without --rm the pod stays: restartPolicy Always brings bash back, once.
    def restarted() -> dict | None:
        status = _container_status(_pod_json(cluster, "debian"))
        return status if status.get("restartCount") == 1 and "running" in status["state"] else None

    status = cluster.wait_for(
        restarted, timeout=30, interval=0.2, what="debian restarted after exit"
    )
    assert status["lastState"]["terminated"]["exitCode"] == 0


def test_run_rm_removes_the_pod(cluster: TestCluster) -> None:
    argv = _kubectl_argv(
        cluster,
        "run",
        "debian2",
        "--rm=true",
        "--image=debian:stable",
        "--namespace=default",
        "-i",
        "-t",
        "--",
        "/bin/bash",
    )
    terminal = Terminal(argv)
    try:
        terminal.type("\r")
        terminal.expect("#", timeout=90)
        terminal.type("echo inside-$HOSTNAME\r")
        terminal.expect("inside-debian2")
        terminal.type("exit\r")
        output = terminal.expect('pod "debian2" deleted', timeout=60)
    finally:
        code = terminal.close(timeout=60)
    assert code == 0, output

    # kubectl run --rm deletes without waiting: the pod may show Terminating for a moment.
    def gone() -> bool:
        result = cluster.kubectl("get", "pod", "debian2", check=False)
        return result.returncode == 1 and 'pods "debian2" not found' in result.stderr

    cluster.wait_for(gone, timeout=15, interval=0.2, what="debian2 gone")


def _debian_pod(cluster: TestCluster) -> dict:
    """The pod ``kubectl run debian -it`` left running (created without attaching when that
    test was deselected): bash on a terminal, kept alive by its open stdin."""
    if _pod_json(cluster, "debian") is None:
        cluster.kubectl(
            "run",
            "debian",
            "--image=debian:stable",
            "-i",
            "-t",
            "--attach=false",
            "--",
            "/bin/bash",
        )
    return _wait_running(cluster, "debian", timeout=90)


def test_exec_it_bash_and_exit_codes(cluster: TestCluster) -> None:
    _debian_pod(cluster)
    terminal = Terminal(
        _kubectl_argv(cluster, "exec", "-it", "-n", "default", "debian", "--", "bash")
    )
    try:
        terminal.expect("#")
        terminal.type("[ -t 0 ] && echo on-a-terminal-$((6*7)); tty; echo done-$((1+1))\r")
        seen = terminal.expect("done-2")
        # The user resizes their window: kubectl gets SIGWINCH and resizes the remote terminal.
        fcntl.ioctl(terminal.master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        # (the resize and the typed line travel separately: the shell waits for the size)
        terminal.type('until [ "$(stty size)" = "33 101" ]; do sleep 0.05; done; echo size-$(stty size | tr " " x)\r')
        terminal.expect("size-33x101")
        terminal.type("exit 4\r")
    finally:
        code = terminal.close()
    assert code == 4
    tty_line = seen.split("on-a-terminal-42", 1)[1].split()[0]
    assert tty_line.startswith("/dev/pts/"), seen
    ok = cluster.kubectl("exec", "debian", "--", "bash", "-c", "echo out; echo err >&2")
    assert (ok.stdout, ok.stderr) == ("out\n", "err\n")
    failed = cluster.kubectl("exec", "debian", "--", "bash", "-c", "exit 3", check=False)
    assert failed.returncode == 3 and "command terminated with exit code 3" in failed.stderr
    missing = cluster.kubectl("exec", "debian", "--", "no-such-command", check=False)
    assert missing.returncode != 0 and "no-such-command" in missing.stderr


def test_logs_follow_and_previous(cluster: TestCluster) -> None:
    _wait_running(cluster, "ticker", timeout=90)
    with _background(cluster, "logs", "-f", "ticker") as follow:
        assert follow.stdout is not None
        seen = _read_until(follow.stdout.fileno(), b"tick 1\n")
        last = int(seen.decode().strip().splitlines()[-1].split()[-1])
        _read_until(
            follow.stdout.fileno(), f"tick {last + 3}\n".encode()
        )  # lines written later arrive

    def restarted_once() -> dict | None:
        pod = _pod_json(cluster, "restarter")
        status = _container_status(pod)
        return (
            pod
            if status.get("restartCount", 0) >= 1 and "running" in status.get("state", {})
            else None
        )

    cluster.wait_for(restarted_once, timeout=60, interval=0.3, what="restarter restarted")
    previous = cluster.kubectl("logs", "--previous", "restarter").stdout
    current = cluster.kubectl("logs", "restarter").stdout
    assert previous.startswith("run-") and current.startswith("run-")
    assert previous != current  # two runs, two different uuids


def _http_get_from(host: str, port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.request("GET", "/index.html")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_port_forward_to_busybox_httpd(cluster: TestCluster) -> None:
    _wait_running(cluster, "web", timeout=60)
    with _background(cluster, "port-forward", "pod/web", "8080:80") as forward:
        assert forward.stdout is not None
        _read_until(forward.stdout.fileno(), b"Forwarding from 127.0.0.1:8080 -> 80")
        assert cluster.in_netns(_http_get, 8080) == (200, b"hello-debian-acceptance\n")


def test_attach_follows_output(cluster: TestCluster) -> None:
    _wait_running(cluster, "ticker", timeout=60)
    with _background(cluster, "attach", "ticker") as attach:
        assert attach.stdout is not None
        seen = _read_until(attach.stdout.fileno(), b"tick", timeout=20)
        seen += _read_until(attach.stdout.fileno(), b"\n", timeout=20)
        last = int(seen.decode().split("tick")[-1].split()[0])
        _read_until(attach.stdout.fileno(), f"tick {last + 2}\n".encode(), timeout=20)


def test_attach_it_to_the_debian_terminal(cluster: TestCluster) -> None:
    """What ``kubectl run -it`` tells a user after the session: resume with ``attach -i -t``.

    kubectl run -i sets stdinOnce, which ends a container's input with the first attach — but
    not on a terminal: a user who closes the attaching kubectl leaves bash running (Docker's
    and containerd's rule), so nothing restarts."""
    pod = _debian_pod(cluster)
    assert pod["spec"]["containers"][0].get("stdinOnce") is True
    before = _container_status(pod)
    terminal = Terminal(_kubectl_argv(cluster, "attach", "debian", "-c", "debian", "-i", "-t"))
    try:
        terminal.type("echo attached-$((2+3))\r")
        terminal.expect("attached-5")
    finally:
        terminal.process.terminate()  # the user closes their terminal
        terminal.close()
    # bash is still the same process: a second attach reaches it.
    terminal = Terminal(_kubectl_argv(cluster, "attach", "debian", "-c", "debian", "-i", "-t"))
    try:
        terminal.type("echo again-$((3+4)) $$\r")
        terminal.expect("again-7 1")  # still pid 1, the container's first process
        # A window resize travels over the attach stream to the container's own terminal.
        fcntl.ioctl(terminal.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        # (the resize and the typed line travel separately: the shell waits for the size)
        terminal.type('until [ "$(stty size)" = "40 120" ]; do sleep 0.05; done; echo size-$(stty size | tr " " x)\r')
        terminal.expect("size-40x120")
    finally:
        terminal.process.terminate()
        terminal.close()
    status = _container_status(_pod_json(cluster, "debian"))
    assert status["restartCount"] == before["restartCount"]
    assert status["containerID"] == before["containerID"]


def test_liveness_probe_restarts_the_container(cluster: TestCluster) -> None:
    def restarted() -> int:
        return _container_status(_pod_json(cluster, "liveness")).get("restartCount", 0)

    cluster.wait_for(restarted, timeout=60, interval=0.3, what="a liveness restart")
    events = cluster.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=liveness"
    ).stdout
    assert "Liveness probe failed" in events or "Unhealthy" in events, events


def test_readiness_probe_toggles_ready(cluster: TestCluster) -> None:
    _wait_running(cluster, "readiness", timeout=60)
    assert _ready(_pod_json(cluster, "readiness")) == "False"
    cluster.kubectl("exec", "readiness", "--", "touch", "/tmp/ready")
    cluster.wait_for(
        lambda: _ready(_pod_json(cluster, "readiness")) == "True", timeout=20, what="Ready=True"
    )
    assert "1/1" in cluster.kubectl("get", "pod", "readiness").stdout
    cluster.kubectl("exec", "readiness", "--", "rm", "/tmp/ready")
    cluster.wait_for(
        lambda: _ready(_pod_json(cluster, "readiness")) == "False", timeout=20, what="Ready=False"
    )
    assert _container_status(_pod_json(cluster, "readiness")).get("restartCount") == 0


def test_memory_limit_oom_killed(cluster: TestCluster) -> None:
    def terminated() -> dict | None:
        return _container_status(_pod_json(cluster, "hog")).get("state", {}).get("terminated")

    state = cluster.wait_for(terminated, timeout=60, interval=0.3, what="hog terminated")
    assert state["reason"] == "OOMKilled" and state["exitCode"] == 137
    assert "OOMKilled" in cluster.kubectl("get", "pod", "hog").stdout


def test_configmap_as_env_and_volume(cluster: TestCluster) -> None:
    _wait_running(cluster, "configured", timeout=60)
    out = cluster.kubectl(
        "exec", "configured", "--", "bash", "-c", 'echo "$GREETING"; cat /etc/settings/app.conf'
    ).stdout
    assert out == "hello-from-configmap\nanswer = 42\n"


def test_deployment_bash_crash_loops_with_growing_back_off(cluster: TestCluster) -> None:
    """bash without a terminal reads EOF and exits 0; Always restarts it: immediately the first
    time, then after the kubelet's 10 s back-off (CrashLoopBackOff in between)."""
    created = cluster.kubectl(
        "create", "deployment", "debian", "--image=debian:stable", "--", "/bin/bash"
    )
    assert created.stdout == "deployment.apps/debian created\n"
    first_seen: dict[int, float] = {0: time.monotonic()}  # bash's first run is too short to see
    waiting_reasons: set[str] = set()

    def restarts() -> int:
        pods = cluster.kubectl_json("get", "pods", "-l", "app=debian")["items"]
        status = _container_status(pods[0] if pods else None)
        if "running" in status.get("state", {}) or status.get("lastState", {}).get("terminated"):
            first_seen.setdefault(status.get("restartCount", 0), time.monotonic())
        waiting_reasons.add(status.get("state", {}).get("waiting", {}).get("reason", ""))
        return status.get("restartCount", 0)

    cluster.wait_for(
        lambda: restarts() >= 2,
        timeout=60,
        interval=0.2,
        what="two restarts of the deployment's bash",
    )
    assert "CrashLoopBackOff" in waiting_reasons
    pod = cluster.kubectl_json("get", "pods", "-l", "app=debian")["items"][0]
    assert _container_status(pod)["lastState"]["terminated"]["exitCode"] == 0  # end of input

    # After the third exit kubectl's STATUS column shows the back-off (now 20 s long).
    def backing_off() -> str | None:
        listing = cluster.kubectl("get", "pods", "-l", "app=debian").stdout
        return listing if "CrashLoopBackOff" in listing else None

    listing = cluster.wait_for(backing_off, timeout=15, what="CrashLoopBackOff in kubectl get pods")
    assert listing.splitlines()[1].split()[1:4] == ["0/1", "CrashLoopBackOff", "2"], listing
    # The back-off grows: the second restart comes later after the first than the first did.
    assert set(first_seen) >= {1, 2}, first_seen
    assert first_seen[2] - first_seen[1] > first_seen[1] - first_seen[0] + 5, first_seen
    cluster.kubectl("delete", "deployment", "debian", "--wait=false")


def test_delete_pod_honours_the_grace_period(cluster: TestCluster) -> None:
    _wait_running(cluster, "graceful", timeout=60)
    cluster.wait_for(
        lambda: "ready" in cluster.kubectl("logs", "graceful").stdout,
        timeout=20,
        what="trap installed",
    )
    started = time.monotonic()
    with _background(cluster, "delete", "pod", "graceful", "--grace-period=20") as deletion:
        # TERM reached bash's trap while the pod is still there (terminating).
        cluster.wait_for(
            lambda: "got TERM" in cluster.kubectl("logs", "graceful", check=False).stdout,
            timeout=15,
            interval=0.2,
            what="TERM handled",
        )
        assert deletion.wait(timeout=30) == 0
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 20, elapsed
    gone = cluster.kubectl("get", "pod", "graceful", check=False)
    assert 'pods "graceful" not found' in gone.stderr


def test_server_restart_keeps_pods_running(cluster: TestCluster) -> None:
    names = ["debian", "ticker", "web", "configured"]
    _debian_pod(cluster)
    before = {n: _container_status(_wait_running(cluster, n)) for n in names}
    # SIGKILL, then start again on the same test host (the pods' network lives there).
    cluster.restart(kill=True)
    cluster.wait_for(
        lambda: _node_ready(cluster), timeout=60, interval=0.2, what="node Ready again"
    )
    # A few kubelet sync rounds: nothing gets restarted, the same containers keep running.
    ticks = cluster.kubectl("logs", "ticker").stdout.count("tick")
    cluster.wait_for(
        lambda: cluster.kubectl("logs", "ticker").stdout.count("tick") >= ticks + 10,
        timeout=20,
        what="ticker still ticking",
    )
    for name in names:
        status = _container_status(_pod_json(cluster, name))
        assert status.get("restartCount") == before[name].get("restartCount"), (name, status)
        assert status.get("containerID") == before[name].get("containerID"), (name, status)
        assert "running" in status.get("state", {}), (name, status)
    # The pod network survived too: httpd answers on its pod IP from the test host.
    web_ip = _pod_json(cluster, "web")["status"]["podIP"]  # type: ignore[index]
    assert cluster.in_netns(_http_get_from, web_ip, 80) == (200, b"hello-debian-acceptance\n")
    assert cluster.kubectl("exec", "debian", "--", "echo", "still-here").stdout == "still-here\n"
