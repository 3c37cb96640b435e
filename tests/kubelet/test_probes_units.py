"""Probes need only their narrow interfaces (probes.RuntimeCalls, probes.ProbeHost): here a
host that knows one pod address, and real sockets on loopback as the probed container."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from k3py.agent.kubelet.hooks import run_hook
from k3py.agent.kubelet.probes import ProbeManager

Obj = dict[str, Any]


class Host:
    """The pod manager as probes see it: a pod address, events, wake-ups."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.woken: list[str] = []
        self.changed = asyncio.Event()  # set at every event or wake-up

    def pod_ip(self, uid: str) -> str:
        return "127.0.0.1" if uid == "u-1" else ""

    def event(self, pod: Obj, kind: str, reason: str, message: str, once: str = "") -> None:
        self.events.append((kind, reason, message))
        self.changed.set()

    def wake(self, uid: str) -> None:
        self.woken.append(uid)
        self.changed.set()


class NoRuntime:
    """tcpSocket and httpGet probes never touch the runtime."""

    @property
    def runtime(self) -> Any:
        raise AssertionError("the runtime was used")

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise AssertionError("a blocking call was made")


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    """A real HTTP/1.1 server on loopback: /healthz answers 200, everything else 503."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        status = "200 OK" if request.split()[1] == b"/healthz" else "503 Service Unavailable"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_probe_handlers_reach_the_pod_address_the_host_gives(http_server: int) -> None:
    prober = ProbeManager(NoRuntime(), Host())
    container = {"name": "web", "ports": [{"name": "http", "containerPort": http_server}]}
    assert await prober.check("u-1", container, "c1", {"httpGet": {"path": "/healthz", "port": "http"}}) == (True, "")
    ok, message = await prober.check("u-1", container, "c1", {"httpGet": {"path": "/other", "port": http_server}})
    assert not ok and message == "HTTP probe failed with statuscode: 503"
    assert (await prober.check("u-1", container, "c1", {"tcpSocket": {"port": http_server}}))[0]
    ok, message = await prober.check("u-1", container, "c1", {"tcpSocket": {"port": closed_port()}})
    assert not ok and message
    ok, message = await prober.check("u-1", container, "c1", {"httpGet": {"port": "nope"}})
    assert not ok and "not a container port name" in message
    # A lifecycle hook runs through the same handlers, worded as the kubelet words hooks.
    failed = await run_hook(prober, "u-1", container, "c1", {"httpGet": {"path": "/other", "port": http_server}}, 5)
    assert failed == 'HTTP lifecycle hook for Container "web" failed: HTTP probe failed with statuscode: 503'
    assert await run_hook(prober, "u-1", container, "c1", {"sleep": {"seconds": 0}}, 5) is None


async def test_readiness_changes_wake_the_pod_and_failures_are_events(http_server: int) -> None:
    host = Host()
    prober = ProbeManager(NoRuntime(), host)
    pod = {"metadata": {"uid": "u-1", "name": "p", "namespace": "default"}, "spec": {}}
    container = {"name": "web", "readinessProbe": {"httpGet": {"path": "/healthz", "port": http_server},
                                                   "periodSeconds": 1}}
    prober.container_started(pod, container, "c1")
    assert not prober.ready("u-1", "web")
    try:
        async with asyncio.timeout(10):
            await host.changed.wait()
        assert host.woken == ["u-1"] and prober.ready("u-1", "web")
        # Without probes a started container is ready; a removed pod's probes stop.
        prober.container_started(pod, {"name": "plain"}, "c2")
        assert prober.ready("u-1", "plain") and prober.started("u-1", "plain")
        prober.pod_removed("u-1")
        assert not prober.states
    finally:
        await prober.stop()
    failing = {"name": "web", "readinessProbe": {"tcpSocket": {"port": closed_port()}, "periodSeconds": 1}}
    host.changed.clear()
    prober.container_started(pod, failing, "c3")
    try:
        async with asyncio.timeout(10):
            await host.changed.wait()
        kind, reason, message = host.events[0]
        assert (kind, reason) == ("Warning", "Unhealthy") and message.startswith("Readiness probe failed: ")
    finally:
        with contextlib.suppress(Exception):
            await prober.stop()
