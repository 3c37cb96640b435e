"""PostgreSQL writes: one writer task per store, batched, serialised across servers.

Each store instance queues writes to one asyncio task that runs everything queued in ONE
transaction (group commit, as the SQLite writer does). The transaction first takes
``pg_advisory_xact_lock(WRITE_LOCK)``, so transactions of every server sharing the database
run one at a time; the revision counter lives in ``k3py_meta`` and ids are assigned from it
under the lock. Hence revisions commit in order and a reader's snapshot never contains
revision N+1 without N — the gap problem of sequence-assigned ids cannot arise from
concurrency. The poller still handles gaps (a row written by something that bypassed this
path) the way kine does. UNIQUE(name, prev_revision) remains the schema's CAS guarantee.

Commit sends ``NOTIFY k3py_kine`` so every server's poller reads the new rows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from k3py.store import queries
from k3py.store.postgres.schema import NOTIFY_CHANNEL, WRITE_LOCK
from k3py.store.rows import NewRow, Row, plan_create, plan_delete, plan_update
from k3py.store.types import KeyValue, StoreClosedError, StoreError, WriteResult

log = logging.getLogger(__name__)

MAX_BATCH = 500

LATEST_SQL = text(queries.LATEST_FOR_KEY)
INSERT_SQL = text(queries.INSERT_ROW)


class Txn:
    """The verbs inside one batch transaction (revision counter held under the lock)."""

    def __init__(self, conn: AsyncConnection, revision: int, compact_revision: int) -> None:
        self.conn = conn
        self.revision = revision
        self.compact_revision = compact_revision

    async def latest(self, key: str) -> Row | None:
        t = (await self.conn.execute(LATEST_SQL, {"name": key})).first()
        return Row.from_tuple(tuple(t)) if t else None

    async def _append(self, row: NewRow) -> None:
        expires = time.time() + row.lease if row.lease and not row.deleted else None
        await self.conn.execute(INSERT_SQL, row.as_params(expires))
        self.revision = row.id

    async def create(self, key: str, value: bytes, lease: int) -> KeyValue:
        row = plan_create(key, value, lease, await self.latest(key), self.revision + 1)
        await self._append(row)
        return row.event.kv

    async def update(self, key: str, value: bytes, lease: int, expected: int) -> WriteResult:
        plan = plan_update(key, value, lease, expected, await self.latest(key), self.revision + 1)
        if isinstance(plan, WriteResult):
            return plan
        await self._append(plan)
        return WriteResult(True, plan.event.kv, plan.id)

    async def delete(self, key: str, expected: int | None) -> WriteResult:
        plan = plan_delete(key, expected, await self.latest(key), self.revision + 1)
        if isinstance(plan, WriteResult):
            return plan
        await self._append(plan)
        return WriteResult(True, plan.event.kv, plan.id)

    async def compact_step(self, target: int, max_revisions: int) -> int:
        """One slice of compaction (the rule is in queries.COMPACT_PREDECESSORS)."""
        lo = self.compact_revision
        hi = min(target, lo + max_revisions, self.revision)
        if hi <= lo:
            return lo
        params = {"lo": lo, "hi": hi}
        await self.conn.execute(text(queries.COMPACT_PREDECESSORS), params)
        await self.conn.execute(text(queries.COMPACT_TOMBSTONES), params)
        await self.conn.execute(text(queries.SET_COMPACT_REVISION), params)
        self.compact_revision = hi
        return hi


@dataclass(slots=True)
class _Op:
    run: Callable[[Txn], Awaitable[Any]]
    future: asyncio.Future


class PgWriter:
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[int], None]) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._closed = False
        self.committed_revision = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="k3py-store-pg-writer")

    def submit(self, run: Callable[[Txn], Awaitable[Any]]) -> asyncio.Future:
        if self._closed:
            raise StoreClosedError("the store is closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(run, future))
        return future

    async def stop(self) -> None:
        self._closed = True
        self._queue.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            op = await self._queue.get()
            stopping = op is None
            batch = [op] if op is not None else []
            while len(batch) < MAX_BATCH and not stopping and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                else:
                    batch.append(nxt)
            if batch:
                await self._run_batch(batch)
            if stopping:
                return

    async def _run_batch(self, batch: list[_Op]) -> None:
        outcomes: list[tuple[asyncio.Future, bool, Any]] = []
        try:
            async with self._engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
                meta = {
                    key: value
                    for key, value in await conn.execute(text("SELECT key, value FROM k3py_meta"))
                }
                txn = Txn(conn, meta["revision"], meta["compact_revision"])
                start = txn.revision
                for op in batch:
                    try:
                        outcomes.append((op.future, True, await op.run(txn)))
                    except StoreError as exc:
                        outcomes.append((op.future, False, exc))
                if txn.revision != start:
                    await conn.execute(
                        text("UPDATE k3py_meta SET value = :rev WHERE key = 'revision'"),
                        {"rev": txn.revision},
                    )
                    await conn.execute(
                        text("SELECT pg_notify(:channel, :rev)"),
                        {"channel": NOTIFY_CHANNEL, "rev": str(txn.revision)},
                    )
        except Exception as exc:  # every queued operation must get an answer
            log.exception("store write batch failed; rolled back %d operations", len(batch))
            error = StoreError(f"the database write failed: {exc}")
            outcomes = [(op.future, False, error) for op in batch]
        else:
            self.committed_revision = max(self.committed_revision, txn.revision)
            self._on_commit(txn.revision)
        for future, ok, value in outcomes:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
