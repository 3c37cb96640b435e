"""The in-process transport's copy rules: callers and the watch cache never share a dict.

The transport skips copies where the registry already made a private object (update bodies,
write results); these tests change every object a caller gets or gives and check that nothing
else — the caller's body, the watch cache, later reads and watch events — sees the change.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.api.resources import builtin_resources
from k3py.client.interface import NAMESPACES, PODS, Client
from k3py.server.apiserver.handlers import RestHandler
from k3py.server.apiserver.inprocess import InProcessTransport
from k3py.server.apiserver.registry import Registry
from k3py.server.apiserver.watchcache import WatchCache
from k3py.store.factory import open_store

POD_KEY = "/registry/core/pods/t/p"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Client, Registry]]:
    store = open_store("", tmp_path)
    await store.start()
    cache = WatchCache(store)
    await cache.start()
    table = builtin_resources()
    registry = Registry(store, cache, table)
    try:
        yield Client(InProcessTransport(RestHandler(registry, table)), field_manager="test"), registry
    finally:
        await cache.close()
        await store.close()


def _pod() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "t", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}}


async def _cached(registry: Registry, revision: str) -> dict[str, Any]:
    assert await registry.cache.wait_for(int(revision), 5)
    return registry.cache.cache("/registry/core/pods/").objects[POD_KEY]


async def test_update_leaves_the_callers_body_alone_and_returns_a_private_object(client: tuple[Client, Registry]) -> None:
    c, registry = client
    await c.create(NAMESPACES, {"metadata": {"name": "t"}})
    created = await c.create(PODS, _pod(), "t")
    body = {**created, "metadata": {**created["metadata"], "labels": {"a": "2"}}}
    sent = copy.deepcopy(body)
    updated = await c.update(PODS, body)
    assert body == sent  # no defaulting, managedFields or resourceVersion written into it
    assert updated["metadata"]["labels"] == {"a": "2"}
    cached = await _cached(registry, updated["metadata"]["resourceVersion"])
    snapshot = copy.deepcopy(cached)
    updated["metadata"]["labels"]["a"] = "changed by the caller"
    updated["spec"]["containers"][0]["image"] = "changed"
    assert cached == snapshot
    assert (await c.get(PODS, "p", "t"))["metadata"]["labels"] == {"a": "2"}


async def test_status_update_and_create_results_are_private(client: tuple[Client, Registry]) -> None:
    c, registry = client
    await c.create(NAMESPACES, {"metadata": {"name": "t"}})
    created = await c.create(PODS, _pod(), "t")
    created["spec"]["containers"][0]["image"] = "changed"
    status = await c.update_status(PODS, {**(await c.get(PODS, "p", "t")), "status": {"phase": "Running"}})
    cached = await _cached(registry, status["metadata"]["resourceVersion"])
    assert cached["spec"]["containers"][0]["image"] == "i:1"
    snapshot = copy.deepcopy(cached)
    status["spec"]["containers"][0]["image"] = "changed"
    status["status"]["phase"] = "changed"
    status["metadata"]["managedFields"].clear()
    assert cached == snapshot


async def test_watch_events_are_private_copies(client: tuple[Client, Registry]) -> None:
    c, registry = client
    await c.create(NAMESPACES, {"metadata": {"name": "t"}})
    events = c.watch(PODS, "t", resource_version="0", bookmarks=False)
    created = await c.create(PODS, _pod(), "t")
    async with asyncio.timeout(5):
        event = await anext(events)
    assert event["type"] == "ADDED"
    event["object"]["metadata"]["labels"]["a"] = "changed by the informer"
    cached = await _cached(registry, created["metadata"]["resourceVersion"])
    assert cached["metadata"]["labels"] == {"a": "1"}
    await events.aclose()
