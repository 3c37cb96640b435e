"""A real k3py cluster for integration tests, each on its own "test host".

A test host is a network namespace (``ip netns add``) with only a loopback interface, and the
server runs there in a private mount namespace with its own data dir. Nothing a cluster does —
listening sockets, routes, bridges, mounts — is visible outside it, so clusters can run side by
side on the same port (6443 inside each namespace) and vanish with their namespace.

Clients reach the cluster from inside the namespace:

- ``kubectl(...)`` and ``helm(...)`` run the real binaries through ``ip netns exec``; each cluster
  has its own kubectl cache dir (kubectl caches discovery per server address for hours).
- ``in_netns(fn, ...)`` runs a Python callable on a thread that has joined the namespace with
  setns(2): sockets that thread opens live in the namespace. The official ``kubernetes`` client
  and raw ``http.client`` requests (``request(...)``) use it.

A missing kubectl or helm is an error, never a skip: the real clients are the judges.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import ctypes
import http.client
import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from k3py.util.loopwatch import ENV_THRESHOLD as LOOP_WATCHDOG_ENV
from k3py.util.loopwatch import STALL_MESSAGE

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
LOOP_STALL_MS = 100
REPO_ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def find_kubectl(version: str | None = None) -> str:
    """The kubectl dispatcher, or the binary of one minor version ("1.27")."""
    dispatcher = shutil.which("kubectl")
    if dispatcher is None:
        raise RuntimeError("kubectl is not installed: the integration tests need the real kubectl")
    if version is None:
        return dispatcher
    binary = Path(os.path.realpath(dispatcher)).parent / f"kubectl.{version}"
    if not binary.exists():
        raise RuntimeError(f"kubectl {version} is not installed (looked for {binary})")
    return str(binary)


def find_helm() -> str:
    local = REPO_ROOT / ".cache" / "bin" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if found is None:
        raise RuntimeError("helm is not installed: run scripts/install-test-deps")
    return found


def _join_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class TestHost:
    """A network namespace with loopback up; removed by ``close``."""

    __test__ = False  # not a pytest test class

    def __init__(self, prefix: str = "k3py-t") -> None:
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4,
            thread_name_prefix=self.name,
            initializer=_join_netns,
            initargs=(f"/run/netns/{self.name}",),
        )

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def in_netns(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._executor.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class TestCluster:
    """A ``k3py server`` on its own test host. Use as a context manager."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        base_dir: Path,
        server_args: Sequence[str] = (),
        port: int = 6443,
        start_timeout: float = 30.0,
        agent: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """``agent=False`` (API-level tests) runs the server with ``--disable-agent``; ``True``
        runs its in-process node agent (root, cgroups, a pod network in the test host), whose
        data dir is ``base_dir/agent`` and whose containers are removed by ``stop``."""
        self.base_dir = base_dir
        self.data_dir = base_dir / "server"
        self.kubeconfig = base_dir / "kubeconfig.yaml"
        self.cache_dir = base_dir / "kube-cache"
        self.log_path = base_dir / "server.log"
        self.port = port
        self.server_args = list(server_args)
        self.agent = agent
        self.env = dict(env or {})  # extra environment of the server process
        self.agent_dir = base_dir / "agent"
        if not agent and "--disable-agent" not in self.server_args:
            self.server_args.append("--disable-agent")
        self.start_timeout = start_timeout
        self.host: TestHost | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> TestCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = TestHost()
        self._spawn_server()

    def restart(self, kill: bool = True) -> None:
        """Stop the server (SIGKILL, or SIGTERM when ``kill`` is False) and start it again on the
        same test host and data dir: pods, their network and the runtime's containers stay."""
        assert self.process is not None and self.host is not None, "cluster not started"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        self.process.wait(timeout=30)
        self._spawn_server()

    def _spawn_server(self) -> None:
        assert self.host is not None
        argv = [
            "unshare", "--mount", "--propagation", "private",
            sys.executable, "-m", "k3py", "server",
            "--data-dir", str(self.data_dir),
            "--write-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1",
            "--https-listen-port", str(self.port),
            *self.server_args,
        ]  # fmt: skip
        if self.agent:
            # nsenter rather than `ip netns exec`: the latter remounts /sys, hiding the cgroup
            # hierarchies the agent's container runtime needs.
            command = ["nsenter", f"--net=/run/netns/{self.host.name}", *argv]
        else:
            command = self.host.exec_argv(argv)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # Every test server reports any stretch over 100 ms in which its event loop was held
            # (see k3py/util/loopwatch.py); loop_stalls() reads the reports.
            env={LOOP_WATCHDOG_ENV: str(LOOP_STALL_MS), **os.environ, **self.env},
        )
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error = "kubeconfig not written"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"k3py server exited with {self.process.returncode}:\n{self.server_log()}"
                )
            if self.kubeconfig.exists():
                try:
                    status, body, _ = self.request("GET", "/readyz")
                    if status == 200:
                        return
                    last_error = f"/readyz answered {status}: {body[:200]!r}"
                except (OSError, ValueError, KeyError, yaml.YAMLError) as e:
                    last_error = repr(e)
            time.sleep(0.05)
        raise TimeoutError(f"k3py server not ready: {last_error}\n{self.server_log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        try:
            if self.agent and (self.agent_dir / "runtime").exists():
                self._remove_agent_containers()
        finally:
            if self.host is not None:
                self.host.close()
                self.host = None

    def _remove_agent_containers(self) -> None:
        """Containers outlive the server (their supervisor is detached): remove them all, then
        the supervisor. Only the runtime is used, so a kubelet change cannot break the cleanup."""
        from k3py.runtime.containers import ContainerError, ContainerRuntime

        parent = None  # the data dir's own cgroup parent, unless the test named one
        if "--cgroup-parent" in self.server_args:
            parent = self.server_args[self.server_args.index("--cgroup-parent") + 1]
        runtime = ContainerRuntime(self.agent_dir / "runtime", cgroup_parent=parent)
        for status in runtime.list_containers():
            with contextlib.suppress(ContainerError):
                runtime.remove_container(status.id, force=True)
        for sandbox in runtime.list_sandboxes():
            with contextlib.suppress(ContainerError):
                runtime.remove_sandbox(sandbox.id)
        runtime.shutdown_supervisor(force=True)
        runtime.remove_cgroup_parent()

    def loop_stalls(self) -> list[str]:
        """The server's reports of its event loop held for more than LOOP_STALL_MS, each with
        the stack the loop was in."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        reports: list[str] = []
        for line in text.splitlines():
            if STALL_MESSAGE in line:
                reports.append(line)
            elif reports and line.startswith("  ") and reports[-1].count("\n") < 60:
                reports[-1] += "\n" + line  # the stack lines that follow the report
        return reports

    def server_log(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(lines[-tail:])

    # -- clients ----------------------------------------------------------------------------

    @property
    def netns(self) -> str:
        assert self.host is not None, "cluster not started"
        return self.host.name

    def in_netns(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self.host is not None, "cluster not started"
        return self.host.in_netns(fn, *args, **kwargs)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the test host; output as text."""
        assert self.host is not None, "cluster not started"
        text_input = input.decode() if isinstance(input, bytes) else input
        try:
            result = subprocess.run(
                self.host.exec_argv(argv),
                input=text_input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired as exc:
            # Whatever held the command up is most likely in the server's log.
            raise AssertionError(
                f"{' '.join(argv)} did not finish in {timeout}s\nstderr so far: {exc.stderr!r}\n"
                f"server log:\n{self.server_log(120)}"
            ) from None
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def kubectl(
        self,
        *args: str,
        version: str | None = None,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster (dispatcher, or one minor version)."""
        argv = [
            find_kubectl(version),
            "--kubeconfig", str(self.kubeconfig),
            "--cache-dir", str(self.cache_dir / (version or "default")),
            *args,
        ]  # fmt: skip
        return self.run(argv, input=input, check=check, timeout=timeout)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        helm_home = self.base_dir / "helm"
        env = {
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
            "KUBECONFIG": str(self.kubeconfig),
        }
        return self.run([find_helm(), *args], check=check, timeout=timeout, env=env)

    # -- raw HTTPS --------------------------------------------------------------------------

    def _credentials_dir(self) -> Path:
        creds = self.base_dir / "client-creds"
        if not (creds / "client.key").exists():
            config = yaml.safe_load(self.kubeconfig.read_text())
            cluster = config["clusters"][0]["cluster"]
            user = config["users"][0]["user"]
            creds.mkdir(exist_ok=True)
            (creds / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            (creds / "client.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
            key = creds / "client.key"
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            key.chmod(0o600)
        return creds

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext:
        creds = self._credentials_dir()
        context = ssl.create_default_context(cafile=str(creds / "ca.crt"))
        if client_cert:
            context.load_cert_chain(str(creds / "client.crt"), str(creds / "client.key"))
        return context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        client_cert: bool = True,
        timeout: float = 30,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One HTTPS request to the API server from inside the test host."""
        context = self.ssl_context(client_cert)

        def _do() -> tuple[int, bytes, dict[str, str]]:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=timeout)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
            finally:
                conn.close()

        return self.in_netns(_do)

    def readyz_latencies(self, samples: int = 20, interval: float = 0.05, timeout: float = 5) -> list[float]:
        """Seconds each of ``samples`` GET /readyz took on one kept-alive connection (opened
        beforehand, so no TLS handshake is counted); a request that fails or times out counts
        as ``timeout``."""
        context = self.ssl_context()

        def _probe() -> list[float]:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=timeout)
            latencies: list[float] = []
            try:
                conn.connect()
                for _ in range(samples):
                    started = time.monotonic()
                    try:
                        conn.request("GET", "/readyz")
                        response = conn.getresponse()
                        response.read()
                        latencies.append(time.monotonic() - started if response.status == 200 else timeout)
                    except (OSError, http.client.HTTPException):
                        latencies.append(timeout)
                        conn.close()
                        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=timeout)
                    time.sleep(interval)
            finally:
                conn.close()
            return latencies

        return self.in_netns(_probe)

    def request_json(self, method: str, path: str, obj: Any = None) -> tuple[int, Any]:
        body = None if obj is None else json.dumps(obj)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, data, _ = self.request(method, path, body, headers)
        return status, json.loads(data) if data else None

    def wait_for(
        self, condition: Callable[[], T], timeout: float = 30, interval: float = 0.1, what: str = ""
    ) -> T:
        """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = condition()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: last={last!r}")


@contextlib.contextmanager
def running_cluster(base_dir: Path, server_args: Sequence[str] = ()) -> Iterator[TestCluster]:
    with TestCluster(base_dir, server_args) as cluster:
        yield cluster
