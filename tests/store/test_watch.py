"""Watches: ordered events with prev values, history→live with no gap, compaction errors."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator

import pytest

from k3py.store import CompactedError, Event, EventType, Store, broadcaster


async def collect(
    watch: AsyncIterator[list[Event]], count: int, timeout: float = 10
) -> list[Event]:
    events: list[Event] = []

    async def run() -> None:
        async for batch in watch:
            events.extend(batch)
            if len(events) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return events


async def test_watch_from_a_past_revision_replays_history_with_prev_values(store: Store) -> None:
    kv = await store.create("/w/a", b"1")
    await store.update("/w/a", b"2", kv.mod_revision)
    await store.create("/other/x", b"x")
    await store.delete("/w/a")
    watch = store.watch("/w/", kv.mod_revision)
    events = await collect(watch, 3)
    await watch.aclose()
    assert [e.type for e in events] == [EventType.PUT, EventType.PUT, EventType.DELETE]
    assert events[0].prev_kv is None
    assert events[1].prev_kv.value == b"1" and events[1].kv.value == b"2"
    assert events[2].kv.value == b"2" and events[2].prev_kv.value == b"2"
    assert events[2].kv.mod_revision > events[1].kv.mod_revision


async def test_no_event_lost_or_reordered_across_the_history_live_seam(store: Store) -> None:
    start = await store.current_revision() + 1

    async def writer() -> None:
        for i in range(300):
            await store.create(f"/seam/{i}", b"x")
            if i % 50 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    while await store.current_revision() < start + 100:  # start mid-way: history + live
        assert not task.done()
        await asyncio.sleep(0.001)
    watch = store.watch("/seam/", start)
    events = await collect(watch, 300)
    await task
    await watch.aclose()
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(set(revisions))
    assert [e.kv.key for e in events] == [f"/seam/{i}" for i in range(300)]


async def test_watch_from_now_sees_only_new_events(store: Store) -> None:
    await store.create("/n/old", b"x")
    watch = store.watch("/n/")
    await store.create("/n/new", b"y")  # the watch subscribed when it was opened
    events = await collect(watch, 1)
    await watch.aclose()
    assert [e.kv.key for e in events] == ["/n/new"]


async def test_watch_below_compact_revision_fails_with_compacted(store: Store) -> None:
    kv = await store.create("/c/a", b"1")
    for i in range(5):
        kv = (await store.update("/c/a", str(i).encode(), kv.mod_revision)).kv
    await store.compact(kv.mod_revision - 1)
    with pytest.raises(CompactedError) as info:
        await store.watch("/c/", kv.mod_revision - 2).__anext__()
    assert info.value.compact_revision == kv.mod_revision - 1
    events = await collect(store.watch("/c/", kv.mod_revision), 1)
    assert events[0].kv == kv and events[0].prev_kv is not None


async def test_ttl_keys_are_deleted_by_the_store(store: Store) -> None:
    watch = store.watch("/events/")
    await store.create("/events/e1", b"x", ttl=1)
    await store.create("/events/keep", b"y")
    events = await collect(watch, 2, timeout=5)
    await watch.aclose()
    assert [(e.type, e.kv.key) for e in events] == [
        (EventType.PUT, "/events/e1"),
        (EventType.PUT, "/events/keep"),
    ]
    deadline = time.monotonic() + 5
    while await store.get("/events/e1") is not None:
        assert time.monotonic() < deadline, "TTL key was not deleted"
        await asyncio.sleep(0.05)
    assert (await store.get("/events/keep")).value == b"y"


async def test_ttl_deletion_is_a_watch_event_and_update_renews(store: Store) -> None:
    kv = await store.create("/e/a", b"x", ttl=1)
    watch = store.watch("/e/", kv.mod_revision + 1)
    renewed = await store.update("/e/a", b"y", kv.mod_revision, ttl=1)
    events = await collect(watch, 2, timeout=5)
    await watch.aclose()
    assert events[1].type == EventType.DELETE
    assert events[1].kv.value == b"y" and events[1].prev_kv == renewed.kv


async def test_thousand_watchers_all_get_every_event(store: Store) -> None:
    watches = [store.watch("/many/") for _ in range(1000)]
    tasks = [asyncio.ensure_future(collect(w, 5)) for w in watches]
    for i in range(5):
        await store.create(f"/many/{i}", b"x")
    results = await asyncio.gather(*tasks)
    assert all([e.kv.key for e in r] == [f"/many/{i}" for i in range(5)] for r in results)
    for w in watches:
        await w.aclose()
    assert store.watcher_count == 0


async def test_aclose_from_another_task_ends_a_pending_watch(store: Store) -> None:
    watch = store.watch("/idle/")
    consumer = asyncio.ensure_future(collect(watch, 1, timeout=10))
    while watch._sub._waiter is None:  # wait until the consumer is parked in __anext__
        assert not consumer.done()
        await asyncio.sleep(0.01)
    await watch.aclose()
    assert await asyncio.wait_for(consumer, 5) == []
    assert store.watcher_count == 0


@pytest.mark.store_options(retention=0.2, compact_interval=0.1)  # defaults: 5 min / 30 s
async def test_automatic_compaction_keeps_only_recent_history(store: Store) -> None:
    old = await store.create("/auto/a", b"1")
    for i in range(5):
        old_kv = await store.get("/auto/a")
        await store.update("/auto/a", str(i).encode(), old_kv.mod_revision)
    latest = await store.get("/auto/a")
    deadline = time.monotonic() + 10
    while await store.compact_revision() < latest.mod_revision:
        assert time.monotonic() < deadline, "automatic compaction did not run"
        await asyncio.sleep(0.05)
    with pytest.raises(CompactedError):
        await store.watch("/auto/", old.mod_revision).__anext__()
    assert await store.get("/auto/a") == latest  # the live state is untouched


async def test_a_stalled_watcher_overflows_then_catches_up_from_history(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broadcaster, "MAX_PENDING_EVENTS", 10)  # a tiny bound, same code path
    watch = store.watch("/slow/")
    for i in range(40):  # nobody reads: the subscription overflows after 10 events
        await store.create(f"/slow/{i:02d}", b"x")
    events = await collect(watch, 40)
    await watch.aclose()
    assert [e.kv.key for e in events] == [f"/slow/{i:02d}" for i in range(40)]
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(set(revisions))


async def test_watchers_started_at_random_revisions_see_every_revision_once(
    store: Store,
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    writers, per_writer = 8, 60
    total = writers * per_writer
    first = await store.current_revision() + 1
    final = first + total - 1

    async def write(w: int) -> None:
        for i in range(per_writer):
            await store.create(f"/rand/{w}/{i}", b"x")

    async def watch_from(start: int) -> tuple[int, list[int]]:
        revisions: list[int] = []
        watch = store.watch("", start)
        try:
            async for batch in watch:
                revisions += [e.kv.mod_revision for e in batch]
                if revisions and revisions[-1] >= final:
                    return start, revisions
        finally:
            await watch.aclose()
        return start, revisions

    write_tasks = [asyncio.create_task(write(w)) for w in range(writers)]
    watchers = []
    for _ in range(50):  # start watchers from random past revisions while writes go on
        current = await store.current_revision()
        # Start at most at ``final``: when the writers are already done, a watch from
        # ``final + 1`` would rightly see nothing and wait for ever.
        start = rng.randint(first, min(current + 1, final))
        watchers.append(asyncio.create_task(watch_from(start)))
        await asyncio.sleep(rng.uniform(0, 0.01))
    await asyncio.gather(*write_tasks)
    results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    for start, revisions in results:
        assert revisions == list(range(start, final + 1)), f"gap or reorder from {start}"
