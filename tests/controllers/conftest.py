"""Fixtures for controller tests.

``plane`` runs chosen controllers against the in-memory transport (k3py.client.memory) —
fast, pure asyncio — for reconcile logic the real server cannot serve yet or that needs
precise control (readiness timing, stale caches). Tests against a real server and kubectl
use ``tests/cluster.py``.

Where polling the end state would hide what happened, a test states the exact actions of one
reconcile, as kubernetes/sample-controller's tests do: ``plane.prepare`` builds a controller
whose informers are synced but whose workers do not run (its events go to a
:class:`RecordedEvents`), ``plane.caught_up`` waits until its caches hold what the API holds,
and ``plane.writes_of(controller.reconcile(key))`` returns every write that reconcile sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import pytest

from k3py.api.errors import ApiError
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory, object_key
from k3py.client.interface import PODS, Client, Request
from k3py.client.memory import MemoryTransport

READS = ("get", "list", "watch")


class Write(NamedTuple):
    """One write a controller sent."""

    verb: str
    path: str  # resource plural, then /subresource if any
    name: str
    body: Any


class RecordingTransport(MemoryTransport):
    """A MemoryTransport that keeps every write while ``writes`` is a list."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[Write] | None = None

    async def call(self, request: Request) -> Any:
        if self.writes is not None and request.verb not in READS:
            path = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            self.writes.append(Write(request.verb, path, request.name, request.body))
        return await super().call(request)


class RecordedEvents:
    """Stands in for a controller's EventRecorder: keeps (reason, message) of each event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str, *,
               kind: str = "", api_version: str = "") -> None:
        self.events.append((reason, message))

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class Plane:
    """Controllers + informers over a MemoryTransport, torn down by the fixture."""

    def __init__(self) -> None:
        self.transport = RecordingTransport()
        self.client = Client(self.transport)
        self.informers = InformerFactory(self.client)
        self.controllers: list[Controller] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self, *classes: Callable[[Client, InformerFactory], Controller]) -> list[Controller]:
        made = [cls(self.client, self.informers) for cls in classes]
        self.controllers.extend(made)
        self.informers.start()
        await asyncio.wait_for(self.informers.wait_synced(), 5)
        for c in made:
            self.tasks.append(asyncio.create_task(c.run()))
        return made

    async def prepare(self, cls: Callable[[Client, InformerFactory], Controller]) -> Any:
        """A controller with synced informers and no workers (the test calls ``reconcile``);
        its events are kept in a :class:`RecordedEvents` as ``controller.recorder``."""
        controller = cls(self.client, self.informers)
        controller.recorder = RecordedEvents()  # type: ignore[assignment]
        self.controllers.append(controller)
        self.informers.start()
        await asyncio.wait_for(self.informers.wait_synced(), 5)
        return controller

    async def caught_up(self, controller: Controller) -> None:
        """Wait until every cache of ``controller`` holds exactly what the API holds."""

        def same() -> bool:
            for informer in controller.own_informers():
                stored = {object_key(o): o["metadata"]["resourceVersion"] for o in self.transport.all(informer.resource)}
                cached = {object_key(o): o["metadata"]["resourceVersion"] for o in informer.cache.list()}
                if stored != cached:
                    return False
            return True

        await self.until(same, what="the caches to catch up")

    async def writes_of(self, reconcile: Any) -> list[Write]:
        """Await ``reconcile`` (a controller's reconcile call) and return the writes it sent."""
        self.transport.writes = []
        try:
            await reconcile
            return self.transport.writes
        finally:
            self.transport.writes = None

    async def until(self, cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Poll ``cond`` until it is truthy (returning its value) or fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = cond()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}")
            await asyncio.sleep(0.005)

    async def reconcile(self, controller: Controller, key: str, timeout: float = 5.0) -> float | None:
        """Run one reconcile of ``key`` now, as the test's own pass next to the workers.

        A worker may write the same object at the same moment; the 409 that loses that race
        is retried once the informer has caught up, as the controller itself would.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await controller.reconcile(key)
            except ApiError as e:
                if e.code != 409 or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.01)

    def pods(self, namespace: str = "default") -> list[dict[str, Any]]:
        return [p for p in self.transport.all(PODS, namespace)]

    async def mark_ready(self, pod: dict[str, Any], ready: bool = True, since: str = "") -> None:
        """Play kubelet: Running with the Ready condition (what controllers count)."""
        from k3py.api.meta import now_rfc3339

        stamp = since or now_rfc3339()
        pod = self.transport.peek(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        assert pod is not None
        pod["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": stamp}],
        }
        await self.client.update_status(PODS, pod)

    def auto_ready(self, ready: bool = True) -> None:
        """Play a kubelet for every pod: mark it Running+Ready (or never ready)."""

        async def loop() -> None:
            client = self.client
            async for event in client.watch(PODS, resource_version="0", bookmarks=False):
                pod = event["object"]
                if event["type"] == "DELETED" or pod["metadata"].get("deletionTimestamp"):
                    continue
                if pod.get("status", {}).get("phase") == "Pending":
                    await self.mark_ready(pod, ready)

        self.tasks.append(asyncio.create_task(loop()))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.informers.stop()
        await self.transport.close()


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    p = Plane()
    try:
        yield p
    finally:
        await p.stop()
