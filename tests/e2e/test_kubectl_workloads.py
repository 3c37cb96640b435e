"""End to end: the real kubectl against ``k3py server`` with its in-process node agent.

One cluster for the module (``TestCluster(..., agent=True)``): the server runs the kubelet in
its own process, on a test host (network namespace) of its own, with the busybox test image
imported into the agent's image store before start. The pods every test needs are created at
once by the fixture so that they start in parallel; each test waits for its pod.

exec, attach and port-forward go kubectl -> API server (pods/exec|attach|portforward) -> the
node's kubelet streaming server, over WebSockets (kubectl's default) and over SPDY
(``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``). ``-t`` sessions run kubectl on a pseudo-terminal.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import pty
import select
import signal
import subprocess
import termios
import time
from collections.abc import Iterator, Sequence

import pytest

from tests.cluster import TestCluster, find_kubectl
from tests.kubelet.conftest import busybox_archive

PODS: dict[str, list[str]] = {
    "sleeper": ["sleep", "3600"],
    "web": ["sh", "-c", "mkdir -p /www && echo hello-through-port-forward > /www/index.html && exec httpd -f -p 80 -h /www"],
    "ticker": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"],
    "counter": ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 1; done"],
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    base = tmp_path_factory.mktemp("e2e")
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    import_archive(ImageStore(base / "agent" / "runtime" / "images"), busybox_archive())
    with TestCluster(base, agent=True) as cluster:
        cluster.wait_for(lambda: _node_ready(cluster), timeout=60, interval=0.2, what=f"a Ready node\n{cluster.server_log()}")
        for name, command in PODS.items():
            restart = "Never" if name == "counter" else "Always"
            cluster.kubectl("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent", f"--restart={restart}", "--", *command)
        yield cluster


def _node_ready(cluster: TestCluster) -> bool:
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    for node in nodes:
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            return True
    return False


def _wait_running(cluster: TestCluster, name: str, timeout: float = 60) -> dict:
    def running() -> dict | None:
        result = cluster.kubectl("get", "pod", name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        pod = json.loads(result.stdout)
        return pod if pod.get("status", {}).get("phase") == "Running" else None

    return cluster.wait_for(running, timeout=timeout, interval=0.2, what=f"pod {name} Running\n{cluster.server_log()}")


def _kubectl_argv(cluster: TestCluster, *args: str) -> list[str]:
    return cluster.host.exec_argv(  # type: ignore[union-attr]
        [find_kubectl(), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.cache_dir / "default"), *args]
    )


@contextlib.contextmanager
def _background(cluster: TestCluster, *args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """kubectl running in the background, its stdout a pipe; killed at the end."""
    process = subprocess.Popen(
        _kubectl_argv(cluster, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def _read_until(fd: int, wanted: bytes, timeout: float = 20) -> bytes:
    """Read from ``fd`` until ``wanted`` has been seen; everything read so far on timeout fails."""
    deadline = time.monotonic() + timeout
    seen = b""
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"did not see {wanted!r} within {timeout}s; got {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a pty's master reads EIO once the other side is closed
            chunk = b""
        if not chunk:
            raise AssertionError(f"stream ended before {wanted!r}; got {seen!r}")
        seen += chunk
    return seen


class Terminal:
    """kubectl on a pseudo-terminal: what a user typing into ``kubectl ... -it`` does."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.master, slave = pty.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty, close_fds=True
        )
        os.close(slave)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, wanted: str, timeout: float = 20) -> str:
        return _read_until(self.master, wanted.encode(), timeout).decode(errors="replace")

    def close(self, timeout: float = 20) -> int | None:
        """The exit code of kubectl, or None if it did not exit within ``timeout`` (killed)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.master)


def test_kubectl_run_reaches_running_on_the_in_process_node(cluster: TestCluster) -> None:
    pod = _wait_running(cluster, "sleeper")
    node = cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
    assert "node-role.kubernetes.io/control-plane" in node["metadata"]["labels"]
    assert pod["status"]["podIP"].startswith("10.42.")


@pytest.mark.parametrize("websockets", ["true", "false"], ids=["websocket", "spdy"])
def test_exec_exit_codes_and_stdin(cluster: TestCluster, websockets: str) -> None:
    _wait_running(cluster, "sleeper")
    env = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": websockets}
    kubectl = [find_kubectl(), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.cache_dir / "default")]
    ok = cluster.run([*kubectl, "exec", "sleeper", "--", "sh", "-c", "echo out; echo err >&2"], env=env)
    assert ok.stdout == "out\n" and ok.stderr == "err\n"
    failed = cluster.run([*kubectl, "exec", "sleeper", "--", "sh", "-c", "exit 3"], env=env, check=False)
    assert failed.returncode == 3
    assert "command terminated with exit code 3" in failed.stderr
    piped = cluster.run([*kubectl, "exec", "-i", "sleeper", "--", "tr", "a-z", "A-Z"], input="hello stdin\n", env=env)
    assert piped.stdout == "HELLO STDIN\n"
    missing = cluster.run([*kubectl, "exec", "sleeper", "--", "/no/such/binary"], env=env, check=False)
    assert missing.returncode != 0 and "/no/such/binary" in missing.stderr


def test_exec_it_through_a_terminal(cluster: TestCluster) -> None:
    _wait_running(cluster, "sleeper")
    terminal = Terminal(_kubectl_argv(cluster, "exec", "-it", "sleeper", "--", "sh"))
    try:
        terminal.expect("#")
        terminal.type("[ -t 0 ] && [ -t 1 ] && echo $((6 * 7)) on a terminal\r")
        terminal.expect("42 on a terminal")
        terminal.type("exit 5\r")
    finally:
        code = terminal.close()
    assert code == 5


def test_logs_and_follow(cluster: TestCluster) -> None:
    _wait_running(cluster, "ticker")
    cluster.wait_for(lambda: "tick 2" in cluster.kubectl("logs", "ticker").stdout, timeout=20, what="two ticks in the log")
    with _background(cluster, "logs", "-f", "ticker") as follow:
        assert follow.stdout is not None
        seen = _read_until(follow.stdout.fileno(), b"tick 1\n")
        # Following: lines written after the request arrive on the open stream.
        last = int(seen.decode().strip().splitlines()[-1].split()[-1])
        _read_until(follow.stdout.fileno(), f"tick {last + 2}\n".encode(), timeout=20)
    # A container that exits ends `logs -f`.
    result = cluster.kubectl("logs", "-f", "counter", timeout=60)
    assert result.stdout == "line 1\nline 2\nline 3\n"


def _http_get(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/index.html")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("websockets", ["true", "false"], ids=["websocket", "spdy"])
def test_port_forward_to_httpd(cluster: TestCluster, websockets: str) -> None:
    _wait_running(cluster, "web")
    local = 18080 if websockets == "true" else 18081
    env = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets}
    with _background(cluster, "port-forward", "pod/web", f"{local}:80", env=env) as forward:
        assert forward.stdout is not None
        _read_until(forward.stdout.fileno(), f"Forwarding from 127.0.0.1:{local} -> 80".encode())
        for _ in range(2):  # two connections over the same tunnel
            assert cluster.in_netns(_http_get, local) == (200, b"hello-through-port-forward\n")


def test_python_client_port_forward_and_exec(cluster: TestCluster) -> None:
    """The official client's port-forward sends ``ports=80`` (v4 channels): the API server
    turns it into the kubelet's ``port=80``."""
    _wait_running(cluster, "web")
    from kubernetes import client as k8s
    from kubernetes import config
    from kubernetes.stream import portforward, stream

    def run() -> tuple[bytes, str]:
        core = k8s.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        forward = portforward(core.connect_get_namespaced_pod_portforward, "web", "default", ports="80")
        sock = forward.socket(80)
        sock.settimeout(20)
        sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        received = b""
        while not received.endswith(b"hello-through-port-forward\n") and (chunk := sock.recv(4096)):
            received += chunk
        sock.close()
        forward.close()
        output = stream(core.connect_get_namespaced_pod_exec, "web", "default",
                        command=["cat", "/www/index.html"], stdout=True, stderr=True, stdin=False, tty=False)
        return received, output

    received, output = cluster.in_netns(run)
    assert received.startswith(b"HTTP/1.") and received.endswith(b"\r\n\r\nhello-through-port-forward\n")
    assert output == "hello-through-port-forward\n"


def test_oldest_kubectl_execs_over_spdy(cluster: TestCluster) -> None:
    _wait_running(cluster, "sleeper")
    result = cluster.kubectl("exec", "-i", "sleeper", "--", "sh", "-c", "cat; exit 7", version="1.27", input="old\n", check=False)
    assert (result.returncode, result.stdout) == (7, "old\n")
    assert "command terminated with exit code 7" in result.stderr


def test_attach_streams_the_running_container(cluster: TestCluster) -> None:
    _wait_running(cluster, "ticker")
    with _background(cluster, "attach", "ticker") as attach:
        assert attach.stdout is not None
        seen = _read_until(attach.stdout.fileno(), b"tick", timeout=20)
        last = int(seen.decode().split("tick")[-1].split()[0]) if seen.decode().split("tick")[-1].strip() else 0
        _read_until(attach.stdout.fileno(), f"tick {last + 2}\n".encode(), timeout=20)


def test_run_rm_interactive_terminal(cluster: TestCluster) -> None:
    terminal = Terminal(_kubectl_argv(cluster, "run", "scratch", "--rm", "-i", "-t", "--image=busybox", "--image-pull-policy=IfNotPresent", "--restart=Never", "--", "sh"))
    try:
        terminal.type("\r")  # kubectl attaches after the start; the prompt may already be gone
        terminal.expect("#", timeout=60)
        terminal.type("echo scratch-$((1 + 1))\r")
        terminal.expect("scratch-2")
        terminal.type("exit\r")
    finally:
        code = terminal.close(timeout=60)
    assert code == 0
    gone = cluster.kubectl("get", "pod", "scratch", check=False)
    assert gone.returncode == 1 and 'pods "scratch" not found' in gone.stderr


def test_streaming_errors_are_clear_statuses(cluster: TestCluster) -> None:
    missing = cluster.kubectl("exec", "nosuchpod", "--", "true", check=False)
    assert missing.returncode == 1 and 'pods "nosuchpod" not found' in missing.stderr
    wrong = cluster.kubectl("exec", "sleeper", "-c", "nope", "--", "true", check=False)
    assert wrong.returncode == 1 and "container nope is not valid for pod sleeper" in wrong.stderr
    status, body, _ = cluster.request("GET", "/api/v1/namespaces/default/pods/web/portforward?ports=http")
    assert status == 400 and b'invalid port \\"http\\"' in body


def test_kubectl_cp_round_trip(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """kubectl cp is tar over exec stdin/stdout: binary data and stdin EOF must be exact."""
    _wait_running(cluster, "sleeper")
    work = tmp_path_factory.mktemp("cp")
    content = os.urandom(200_000)
    (work / "blob.bin").write_bytes(content)
    cluster.kubectl("cp", str(work / "blob.bin"), "sleeper:/tmp/blob.bin")
    cluster.kubectl("cp", "sleeper:/tmp/blob.bin", str(work / "back.bin"))
    assert (work / "back.bin").read_bytes() == content
