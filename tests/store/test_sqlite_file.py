"""The SQLite file: durable across restarts, never silently re-initialised when foreign."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from k3py.store import CorruptDatabaseError, StoreClosedError, StoreError
from k3py.store.factory import open_store
from k3py.store.sqlite import SqliteStore


async def test_data_and_revisions_survive_a_restart(tmp_path: Path) -> None:
    store = open_store("", tmp_path)
    await store.start()
    kv = await store.create("/k", b"v")
    await store.close()
    assert (tmp_path / "state.db").exists()
    again = open_store("", tmp_path)
    await again.start()
    assert await again.get("/k") == kv
    assert await again.current_revision() == kv.mod_revision
    assert (await again.create("/k2", b"v")).mod_revision == kv.mod_revision + 1
    await again.close()


async def test_sqlite_endpoint_with_a_path(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/custom.db?_journal=WAL", tmp_path, "NORMAL")
    await store.start()
    await store.create("/k", b"v")
    await store.close()
    assert (tmp_path / "custom.db").exists()


def test_unknown_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported datastore endpoint"):
        open_store("mysql://x", tmp_path)
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(tmp_path / "x.db", "SOMETIMES")


async def test_random_bytes_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CorruptDatabaseError, match="not an SQLite database"):
        await SqliteStore(path).start()
    assert path.read_bytes().startswith(b"this is not")


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptDatabaseError, match="not a k3py store"):
        await SqliteStore(path).start()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]
    conn.close()


async def test_damaged_store_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.start()
    for i in range(200):
        await store.create(f"/k/{i}", b"v" * 200)
    await store.close()
    data = bytearray(path.read_bytes())
    # Overwrite the middle of the file (table/index pages) but keep the header intact.
    data[4096 : len(data)] = b"\xff" * (len(data) - 4096)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError):
        await SqliteStore(path).start()


async def test_operations_after_close_fail_clearly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.start()
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.create("/k", b"v")
    with pytest.raises(StoreClosedError):
        await store.get("/k")


async def test_a_second_store_on_the_same_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SqliteStore(path)
    await first.start()
    try:
        with pytest.raises(StoreError, match="in use by another k3py process"):
            await SqliteStore(path).start()
    finally:
        await first.close()
    reopened = SqliteStore(path)  # the lock went away with the first store
    await reopened.start()
    await reopened.close()


async def test_mixed_client_concurrency_never_reports_database_locked(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", reader_threads=4)
    await store.start()
    errors: list[BaseException] = []

    async def client(n: int) -> None:
        try:
            kv = await store.create(f"/c/{n}", b"0")
            for i in range(30):
                result = await store.update(f"/c/{n}", str(i).encode(), kv.mod_revision)
                assert result.succeeded
                kv = result.kv
                await store.get(f"/c/{(n * 7 + i) % 200}")
                if i % 10 == 0:
                    await store.list("/c/", limit=50)
                    await store.count("/c/")
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    watch = store.watch("/c/", 2)
    try:
        await asyncio.gather(*(client(n) for n in range(200)))
        assert not errors, errors[:3]
        assert await store.count("/c/") == (await store.current_revision(), 200)
        # The watch saw every one of the 200 * 31 writes, in order.
        seen: list[int] = []
        async for batch in watch:
            seen += [e.kv.mod_revision for e in batch]
            if len(seen) >= 200 * 31:
                break
        assert seen == list(range(2, 2 + 200 * 31))
    finally:
        await watch.aclose()
        await store.close()


async def test_the_store_file_is_private_to_its_owner(tmp_path: Path) -> None:
    store = open_store("", tmp_path / "db")
    await store.start()
    await store.create("/registry/secrets/default/token", b"secret")
    try:
        db = tmp_path / "db" / "state.db"
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
        assert (tmp_path / "db").stat().st_mode & 0o077 == 0
    finally:
        await store.close()
