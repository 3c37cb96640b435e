"""The work queue's guarantees: de-duplication, one worker per key, backoff, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from k3py.client.workqueue import ShutDown, TokenBucket, WorkQueue


async def test_duplicate_adds_are_processed_once() -> None:
    q = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_key_added_while_processing_waits_until_done() -> None:
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # arrives while a worker holds "a"
    assert len(q) == 0, "a key in flight must not be handed to a second worker"
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"


async def test_waiting_worker_is_woken_by_add() -> None:
    q = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_concurrent_workers_never_share_a_key() -> None:
    q = WorkQueue()
    active: set[str] = set()
    seen: list[str] = []

    async def worker() -> None:
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            assert key not in active
            active.add(key)
            seen.append(key)
            await asyncio.sleep(0)
            q.add(key if len(seen) < 20 else "done")  # re-add while processing
            active.discard(key)
            q.done(key)
            if len(seen) >= 40:
                q.shutdown()

    q.add("k1")
    q.add("k2")
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), 5)
    assert len(seen) >= 40


def test_backoff_is_exponential_per_key_and_forget_resets() -> None:
    q = WorkQueue(base_delay=0.01, max_delay=1.0, qps=1000, burst=1000)
    delays = [q.backoff("a") for _ in range(5)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16])
    assert q.num_requeues("a") == 5
    assert q.backoff("b") == pytest.approx(0.01), "keys back off independently"
    for _ in range(20):
        q.backoff("a")
    assert q.backoff("a") == pytest.approx(1.0), "capped at max_delay"
    q.forget("a")
    assert q.backoff("a") == pytest.approx(0.01)


def test_token_bucket_limits_overall_rate() -> None:
    bucket = TokenBucket(qps=10, burst=3)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.reserve()
    assert 0.05 < wait <= 0.1


async def test_add_after_delays_and_keeps_the_earliest() -> None:
    q = WorkQueue()
    q.add_after("a", 0.05)
    q.add_after("a", 0.01)  # earlier wins
    q.add_after("a", 10)  # later is ignored
    assert len(q) == 0
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_shutdown_wakes_waiters_with_shutdown() -> None:
    q = WorkQueue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shutdown()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, ShutDown) for r in results)
    q.add("late")
    assert len(q) == 0
