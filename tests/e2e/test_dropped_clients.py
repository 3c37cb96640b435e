"""A streaming client that dies mid-session must not stop the cluster (issue #10).

The attack: start `kubectl exec -i`, `exec -it`, `attach`, `port-forward` or `logs -f` against
a real pod, then SIGKILL kubectl while the session is open. The API server, the controllers and
the kubelet share one event loop; before the fix, the kubelet's exec clean-up waited on a lock a
worker thread held until the exec'd process exited, and the whole server froze (`/readyz`
timed out, every kubectl call hung on the TLS handshake).

Each test checks what a user sees: `/readyz` keeps answering at once (the median of 20 probes
on a kept-alive connection under 100 ms, none over a second, so that a loaded test machine does
not decide the result; a frozen loop answers none of them), the server-side session ends (an
exec'd process is killed, as containerd kills an exec whose stream ended), the pod keeps
working for the next client, and the server's loop watchdog reported no stall (tests/e2e/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import socket
import statistics
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.cluster import TestCluster, find_kubectl
from tests.e2e.test_kubectl_workloads import _read_until
from tests.kubelet.conftest import busybox_archive

PODS = {
    "sleeper": {"command": ["sleep", "3600"]},
    "talker": {
        "command": ["sh", "-c", 'while read line; do echo "got $line"; done'],
        "stdin": True,
    },
    "web": {
        "command": ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 80 -h /www"],
    },
    "ticker": {"command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]},
}


def _manifest(name: str, container: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": name, "image": "busybox", "imagePullPolicy": "IfNotPresent", **container}
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    base = tmp_path_factory.mktemp("dropped")
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    import_archive(ImageStore(base / "agent" / "runtime" / "images"), busybox_archive())
    # Keep-alive probes after 1 s idle, every second, twice: a client whose network drops is
    # noticed within seconds (k3py/util/keepalive.py; 15 s, 15 s, 9 by default, as Go's).
    with TestCluster(base, agent=True, env={"K3PY_TCP_KEEPALIVE": "1,1,2"}) as cluster:
        documents = [_manifest(name, container) for name, container in PODS.items()]
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
        for name in PODS:
            cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
        yield cluster


def _kubectl_argv(cluster: TestCluster, *args: str) -> list[str]:
    return cluster.host.exec_argv(  # type: ignore[union-attr]
        [find_kubectl(), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.cache_dir / "default"), *args]
    )


@contextlib.contextmanager
def _kubectl_session(
    cluster: TestCluster, *args: str, terminal: bool = False, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """kubectl in the background: (process, fd to write its stdin, fd to read its output).

    With ``terminal`` it runs on a pseudo-terminal, as `-t` needs."""
    if terminal:
        master, slave = pty.openpty()
        stdin = stdout = slave
        ours = (master, master)
    else:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        stdin, stdout = in_r, out_w
        ours = (in_w, out_r)
    process = subprocess.Popen(
        _kubectl_argv(cluster, *args), stdin=stdin, stdout=stdout, stderr=stdout,
        start_new_session=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    for fd in {stdin, stdout}:
        os.close(fd)
    try:
        yield process, ours[0], ours[1]
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for fd in set(ours):
            with contextlib.suppress(OSError):
                os.close(fd)


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _assert_server_answers(cluster: TestCluster) -> None:
    latencies = cluster.readyz_latencies()
    in_ms = [round(latency * 1000, 1) for latency in latencies]
    assert statistics.median(latencies) < 0.1 and max(latencies) < 1.0, f"/readyz took {in_ms} ms"
    # And the server still serves real work, not just its health endpoint.
    assert cluster.kubectl("get", "pods", "-o", "name", timeout=10).stdout.count("pod/") == len(PODS)


def _processes_in(cluster: TestCluster, pod: str) -> str:
    return cluster.kubectl("exec", pod, "--", "ps", "-o", "args", timeout=30).stdout


@pytest.mark.parametrize("websockets", ["true", "false"], ids=["websocket", "spdy"])
def test_killed_exec_client_leaves_the_server_answering(
    cluster: TestCluster, websockets: str
) -> None:
    marker = "sleep 1001" if websockets == "true" else "sleep 1002"
    env = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": websockets}
    with _kubectl_session(cluster, "exec", "-i", "sleeper", "--", *marker.split(), env=env) as (kubectl, _, _):
        cluster.wait_for(lambda: marker in _processes_in(cluster, "sleeper"), timeout=30, interval=0.3, what=f"{marker} running")
        _kill(kubectl)
        _assert_server_answers(cluster)
    # The session ends on the node too: the process nobody can talk to any more is killed.
    cluster.wait_for(lambda: marker not in _processes_in(cluster, "sleeper"), timeout=30, interval=0.3, what=f"{marker} gone")


def test_killed_exec_terminal_client_leaves_the_server_answering(cluster: TestCluster) -> None:
    with _kubectl_session(cluster, "exec", "-it", "sleeper", "--", "sh", terminal=True) as (kubectl, tty, _):
        os.write(tty, b"echo READY-$((6*7)); sleep 1003\n")
        _read_until(tty, b"READY-42")
        cluster.wait_for(lambda: "sleep 1003" in _processes_in(cluster, "sleeper"), timeout=30, interval=0.3, what="sleep 1003 running")
        _kill(kubectl)
        _assert_server_answers(cluster)
    cluster.wait_for(lambda: "sleep 1003" not in _processes_in(cluster, "sleeper"), timeout=30, interval=0.3, what="the shell's sleep gone")


def test_killed_attach_client_leaves_the_server_answering(cluster: TestCluster) -> None:
    with _kubectl_session(cluster, "attach", "-i", "talker") as (kubectl, stdin, output):
        os.write(stdin, b"first\n")
        _read_until(output, b"got first")
        _kill(kubectl)
        _assert_server_answers(cluster)
    # Detaching never stops the container, and the next client is served.
    with _kubectl_session(cluster, "attach", "-i", "talker") as (kubectl, stdin, output):
        os.write(stdin, b"second\n")
        _read_until(output, b"got second")
    assert cluster.kubectl_json("get", "pod", "talker")["status"]["containerStatuses"][0]["restartCount"] == 0


def test_killed_port_forward_client_leaves_the_server_answering(cluster: TestCluster) -> None:
    with _kubectl_session(cluster, "port-forward", "pod/web", ":80") as (kubectl, _, output):
        seen = _read_until(output, b"-> 80")
        port = int(seen.split(b"Forwarding from 127.0.0.1:")[1].split(b" ")[0])

        def open_tunnel() -> socket.socket:
            # A connection through the tunnel, mid-request: the kubelet holds a stream to httpd.
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: web\r\n")
            return sock

        tunnel = cluster.in_netns(open_tunnel)
        try:
            _read_until(output, b"Handling connection")
            _kill(kubectl)
            _assert_server_answers(cluster)
        finally:
            tunnel.close()
    with _kubectl_session(cluster, "port-forward", "pod/web", ":80") as (kubectl, _, output):
        seen = _read_until(output, b"-> 80")
        port = int(seen.split(b"Forwarding from 127.0.0.1:")[1].split(b" ")[0])

        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                return b"".join(iter(lambda: sock.recv(4096), b""))

        assert b"served" in cluster.in_netns(fetch)


def test_killed_log_follower_leaves_the_server_answering(cluster: TestCluster) -> None:
    with _kubectl_session(cluster, "logs", "-f", "ticker") as (kubectl, _, output):
        _read_until(output, b"tick")
        _kill(kubectl)
        _assert_server_answers(cluster)
    assert "tick" in cluster.kubectl("logs", "--tail=1", "ticker", timeout=10).stdout


@contextlib.contextmanager
def _network_dropped(cluster: TestCluster, ports: list[int]) -> Iterator[None]:
    """Every packet of the client's connections (by its local ports) vanishes, both ways, as
    when its network goes away: no FIN, no reset."""
    rules = "".join(f"tcp sport {port} drop; tcp dport {port} drop; " for port in ports)
    table = "k3py-test-network-drop"
    cluster.run(["nft", f"add table inet {table}; add chain inet {table} input "
                 f"{{ type filter hook input priority -300; policy accept; {rules}}}"])  # fmt: skip
    try:
        yield
    finally:
        cluster.run(["nft", "delete", "table", "inet", table], check=False)


def _client_ports(cluster: TestCluster, pid: int) -> list[int]:
    """The local ports of ``pid``'s connections to the API server."""
    out = cluster.run(["ss", "-tnpH", "state", "established", "( dport = :6443 )"]).stdout
    return [int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if f"pid={pid}," in line]


def test_exec_client_whose_network_drops_is_let_go(cluster: TestCluster) -> None:
    with _kubectl_session(cluster, "exec", "-i", "sleeper", "--", "sleep", "1005") as (kubectl, _, _):
        cluster.wait_for(lambda: "sleep 1005" in _processes_in(cluster, "sleeper"), timeout=30, interval=0.3, what="sleep 1005 running")
        ports = _client_ports(cluster, kubectl.pid)
        assert ports, "kubectl has no connection to the API server"
        with _network_dropped(cluster, ports):
            # kubectl is still there, silent; the server's keep-alive probes go unanswered and
            # the session ends on the node.
            cluster.wait_for(lambda: "sleep 1005" not in _processes_in(cluster, "sleeper"), timeout=30, interval=0.5, what="sleep 1005 gone")
            assert kubectl.poll() is None
            _assert_server_answers(cluster)
