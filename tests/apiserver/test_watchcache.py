"""The watch cache over a real SQLite store: snapshot + events, filters, resume points."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from k3py.server.apiserver.watchcache import RING_SIZE, CacheEvent, WatchCache, Watcher
from k3py.store.factory import open_store

PREFIX = "/registry/core/configmaps/"


def _value(name: str, **labels: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", "labels": labels}})


async def _drain(watcher: Watcher, count: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(count):
        async with asyncio.timeout(5):
            event = await watcher.queue.get()
        assert event is not None
        out.append((event.type, event.obj["metadata"]["name"]))
    return out


async def test_cache_follows_the_store_and_translates_filtered_events(tmp_path: Path) -> None:
    store = open_store("", tmp_path)
    await store.start()
    cache = WatchCache(store)
    try:
        first = await store.create(PREFIX + "ns/a", _value("a", tier="web"))
        await cache.start()
        assert cache.cache(PREFIX).objects[PREFIX + "ns/a"]["metadata"]["resourceVersion"] == str(first.mod_revision)

        web_only = Watcher(PREFIX, lambda o: (o["metadata"].get("labels") or {}).get("tier") == "web")
        cache.add_watcher(web_only)
        kv = await store.create(PREFIX + "ns/b", _value("b", tier="db"))
        moved = await store.update(PREFIX + "ns/b", _value("b", tier="web"), kv.mod_revision)
        await store.update(PREFIX + "ns/a", _value("a", tier="db"), first.mod_revision)
        await store.delete(PREFIX + "ns/b")
        # b enters the selection (ADDED), a leaves it (DELETED), b is deleted.
        assert await _drain(web_only, 3) == [("ADDED", "b"), ("DELETED", "a"), ("DELETED", "b")]

        assert await cache.wait_for(moved.revision, 5)
        resumed = cache.cache(PREFIX).events_after(kv.mod_revision)
        assert resumed is not None
        assert [(e.type, e.obj["metadata"]["name"]) for e in resumed] == [("MODIFIED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    finally:
        await cache.close()
        await store.close()


def test_ring_floor_moves_when_old_events_fall_out() -> None:
    from k3py.server.apiserver.watchcache import ResourceCache

    rc = ResourceCache(PREFIX, start_revision=10)
    for rev in range(11, 11 + RING_SIZE + 5):
        rc.apply(CacheEvent("ADDED", f"{PREFIX}ns/x{rev}", {"metadata": {"name": f"x{rev}"}}, None, rev))
    assert rc.events_after(10) is None  # those events are gone: the client must re-list (410)
    newest = 10 + RING_SIZE + 5
    tail = rc.events_after(newest - 3)
    assert tail is not None and [e.revision for e in tail] == [newest - 2, newest - 1, newest]
