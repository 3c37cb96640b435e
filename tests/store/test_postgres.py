"""PostgreSQL specifics: several servers on one database, revision gaps, foreign tables."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from k3py.store import CorruptDatabaseError, EventType, StoreError
from k3py.store.postgres import PostgresStore
from tests.store.conftest import make_postgres_store
from tests.store.test_watch import collect


async def test_two_servers_see_each_others_writes_in_their_watches(postgres_url: str) -> None:
    a, b = make_postgres_store(postgres_url), make_postgres_store(postgres_url)
    await a.start()
    await b.start()
    try:
        watch_a, watch_b = a.watch("/shared/"), b.watch("/shared/")
        kv = await a.create("/shared/x", b"from a")
        await b.update("/shared/x", b"from b", kv.mod_revision)
        await b.create("/shared/y", b"from b")
        seen_a = await collect(watch_a, 3)
        seen_b = await collect(watch_b, 3)
        for events in (seen_a, seen_b):
            assert [(e.kv.key, e.kv.value) for e in events] == [
                ("/shared/x", b"from a"),
                ("/shared/x", b"from b"),
                ("/shared/y", b"from b"),
            ]
            assert events[1].prev_kv.value == b"from a"
        assert await a.get("/shared/y") == await b.get("/shared/y")
        await watch_a.aclose()
        await watch_b.aclose()
    finally:
        await a.close()
        await b.close()


async def test_compare_and_swap_across_servers_lets_one_win(postgres_url: str) -> None:
    a, b = make_postgres_store(postgres_url), make_postgres_store(postgres_url)
    await a.start()
    await b.start()
    try:
        kv = await a.create("/race", b"0")
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).update("/race", str(i).encode(), kv.mod_revision)
                for i in range(40)
            )
        )
        assert sum(r.succeeded for r in results) == 1
        revisions = [r.revision for r in results]
        assert max(revisions) == kv.mod_revision + 1
    finally:
        await a.close()
        await b.close()


async def test_a_revision_gap_is_waited_for_then_filled(postgres_url: str) -> None:
    """A row appearing at N+2 before N+1 commits: watchers wait, then N+1 is a placeholder."""
    store = make_postgres_store(postgres_url)
    await store.start()
    try:
        watch = store.watch("/gap/")
        await store.create("/gap/a", b"1")
        first = await collect(watch, 1)
        head = first[0].kv.mod_revision
        conn = await asyncpg.connect(postgres_url)
        try:
            # An insert that bypassed the writer's ordering: revision head+2 with no head+1.
            await conn.execute(
                "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision,"
                " lease, value) VALUES ($1, '/gap/b', 1, 0, $1, 0, 0, 'late'::bytea)",
                head + 2,
            )
            await conn.execute("UPDATE k3py_meta SET value = $1 WHERE key = 'revision'", head + 2)
            await conn.execute("NOTIFY k3py_kine")
        finally:
            await conn.close()
        events = await collect(watch, 1, timeout=10)
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
            (EventType.PUT, "/gap/b", head + 2)
        ]
        assert store.poller.gaps_filled == 1
        # Writes continue above the gap and the placeholder is invisible to reads.
        kv = await store.create("/gap/c", b"3")
        assert kv.mod_revision == head + 3
        assert [k.key for k in (await store.list("/gap/")).items] == ["/gap/a", "/gap/b", "/gap/c"]
        await watch.aclose()
    finally:
        await store.close()


async def test_a_gap_filled_in_time_is_delivered_in_order(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, poll_interval=0.05, gap_wait=5.0)
    await store.start()
    try:
        watch = store.watch("/late/")
        head = await store.current_revision()
        conn = await asyncpg.connect(postgres_url)
        try:
            insert = (
                "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision,"
                " lease, value) VALUES ($1, $2, 1, 0, $1, 0, 0, 'v'::bytea)"
            )
            await conn.execute(insert, head + 2, "/late/second")
            await conn.execute("NOTIFY k3py_kine")
            await conn.execute(insert, head + 1, "/late/first")
            await conn.execute("UPDATE k3py_meta SET value = $1 WHERE key = 'revision'", head + 2)
            await conn.execute("NOTIFY k3py_kine")
        finally:
            await conn.close()
        events = await collect(watch, 2, timeout=10)
        assert [e.kv.key for e in events] == ["/late/first", "/late/second"]
        assert store.poller.gaps_filled == 0
        await watch.aclose()
    finally:
        await store.close()


async def test_a_foreign_kine_table_is_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE kine (id BIGSERIAL PRIMARY KEY, name TEXT)")
    finally:
        await conn.close()
    store = make_postgres_store(postgres_url)
    with pytest.raises(CorruptDatabaseError, match="not a k3py store"):
        await store.start()


async def test_data_survives_a_server_restart(postgres_url: str) -> None:
    store = make_postgres_store(postgres_url)
    await store.start()
    kv = await store.create("/persist", b"v")
    await store.close()
    again = make_postgres_store(postgres_url)
    await again.start()
    try:
        assert await again.get("/persist") == kv
        assert (await again.create("/persist2", b"v")).mod_revision == kv.mod_revision + 1
    finally:
        await again.close()


async def test_an_unreachable_server_is_a_clear_error(postgres_server: str) -> None:
    closed_port = postgres_server.rsplit(":", 1)[0] + ":1"
    with pytest.raises(StoreError, match="cannot open the PostgreSQL store"):
        await make_postgres_store(f"{closed_port}/nothing").start()
