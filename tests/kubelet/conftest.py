"""A cluster plus one real ``k3py agent`` node on its test host, shared by a test module.

The server runs without its own agent (``--disable-agent``); the agent joins it over HTTPS with
the token, in a private mount namespace, with the busybox test image imported into its image
store first. Teardown kills the agent, then every container and the supervisor of its runtime;
the bridge, routes and NAT table vanish with the test host's network namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import TestCluster
from tests.images import busybox_archive

TOKEN = "kubelet-test-token-0123456789"
NODE = "node-a"
@dataclass
class AgentNode:
    cluster: TestCluster
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: Sequence[str] = ()  # more `k3py agent` flags

    def start(self) -> None:
        assert self.cluster.host is not None
        # nsenter rather than `ip netns exec`: the latter remounts /sys, hiding the cgroup
        # hierarchies the runtime needs; the private mount namespace keeps the agent's mounts.
        argv = [
            "nsenter", f"--net=/run/netns/{self.cluster.host.name}",
            "unshare", "--mount", "--propagation", "private",
            sys.executable, "-m", "k3py", "agent",
            "--server", f"https://127.0.0.1:{self.cluster.port}",
            "--token", TOKEN, "--data-dir", str(self.data_dir), "--node-name", NODE,
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

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
        self.process = None

    def log(self, tail: int = 60) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        return "(no agent log)"

    def wait_node_ready(self, timeout: float = 30) -> dict:
        def ready() -> dict | None:
            result = self.cluster.kubectl("get", "node", NODE, "-o", "json", check=False)
            if result.returncode != 0:
                return None
            node = json.loads(result.stdout)
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return node if conditions.get("Ready") == "True" else None

        try:
            return self.cluster.wait_for(ready, timeout=timeout, interval=0.2, what="node Ready")
        except AssertionError as e:
            raise AssertionError(f"{e}\nagent log:\n{self.log()}") from None


def teardown_runtime(data_dir: Path) -> None:
    from k3py.agent.node_agent import shutdown_runtime

    if (data_dir / "runtime").exists():
        shutdown_runtime(data_dir)


@pytest.fixture(scope="module")
def agent_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestCluster, AgentNode]]:
    base = tmp_path_factory.mktemp("kubelet")
    agent_dir = base / "agent"
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    import_archive(ImageStore(agent_dir / "runtime" / "images"), busybox_archive())
    with TestCluster(base, ["--disable-agent", "--token", TOKEN]) as cluster:
        node = AgentNode(cluster, agent_dir, base / "agent.log")
        try:
            node.start()
            node.wait_node_ready()
            yield cluster, node
        finally:
            node.stop()
            teardown_runtime(agent_dir)


def wait_pod(cluster: TestCluster, name: str, condition, what: str, timeout: float = 30, namespace: str = "default") -> dict:  # type: ignore[no-untyped-def]
    """Poll the pod until ``condition(pod)`` holds; returns the pod."""
    def check() -> dict | None:
        result = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        pod = json.loads(result.stdout)
        return pod if condition(pod) else None

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    result = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    status = json.loads(result.stdout).get("status") if result.returncode == 0 else result.stderr
    raise AssertionError(f"pod {name}: timed out waiting for {what}; status:\n{json.dumps(status, indent=1)}")


def poll(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """``check()``'s first truthy result within ``timeout`` seconds, else an AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def kubelet_client_context(cluster: TestCluster) -> ssl.SSLContext:
    """TLS as the API server dials a kubelet: its kubelet-client certificate (the only identity
    a kubelet accepts), the kubelet's serving certificate verified against the cluster CA."""
    from k3py.server.bootstrap.certs import tls_files

    files = tls_files(cluster.data_dir)
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(str(files.kubelet_client_cert), str(files.kubelet_client_key))
    return context


def kubelet_get(cluster: TestCluster, path: str, timeout: float = 30) -> tuple[int, bytes]:
    """GET from the node's kubelet streaming server (as the API server's proxy would)."""
    import http.client

    context = kubelet_client_context(cluster)

    def _do() -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", 10250, context=context, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    return cluster.in_netns(_do)


def kubelet_websocket(
    cluster: TestCluster, path: str, protocol: str, send: Sequence[bytes] = (),
    done: Callable[[list[bytes]], bool] | None = None,
) -> list[bytes]:
    """Open a WebSocket stream on the kubelet, send ``send`` frames and return the frames received
    until the server closes (or ``done(frames)`` holds: then the client closes)."""
    import asyncio

    import aiohttp

    context = kubelet_client_context(cluster)

    async def _run() -> list[bytes]:
        frames: list[bytes] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(
            f"wss://127.0.0.1:10250{path}", protocols=(protocol,), ssl=context
        ) as ws:
            for frame in send:
                await ws.send_bytes(frame)
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    frames.append(message.data)
                    if done is not None and done(frames):
                        break
                elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                    break
        return frames

    return cluster.in_netns(lambda: asyncio.run(asyncio.wait_for(_run(), 30)))
