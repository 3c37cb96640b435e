"""The single SQLite writer: one thread, one connection, group commit.

Every write (and every maintenance step: TTL expiry, a compaction slice, a checkpoint) is an
operation on one queue. The thread takes whatever is queued — everything that arrived while
the previous commit was fsyncing — and runs it in ONE ``BEGIN IMMEDIATE … COMMIT``: one fsync
acknowledges the whole batch. Because only this thread writes, SQLite never reports
"database is locked" to a client, and the compare-and-swap checks read a state no one else
can change before the insert (UNIQUE(name, prev_revision) stays as the schema's guarantee).

Why the stdlib ``sqlite3`` in a plain thread rather than aiosqlite or SQLAlchemy: aiosqlite
runs one thread per connection too but hops to it once per statement, and the writer needs
several statements per operation; driving the batch loop inside the thread makes each write
a handful of C calls with one loop wake-up per *batch*. SQLAlchemy would add per-statement
overhead and buys nothing for one fixed dialect. (PostgreSQL uses SQLAlchemy + asyncpg.)

Results go back to the event loop with one ``call_soon_threadsafe`` per batch, which also
publishes the batch's events to the broadcaster — after COMMIT, in commit order.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from k3py.store import queries
from k3py.store.rows import NewRow, Row, plan_create, plan_delete, plan_update
from k3py.store.types import Event, KeyValue, StoreClosedError, StoreError, WriteResult

log = logging.getLogger(__name__)

MAX_BATCH = 2000  # operations per transaction; bounds how long one commit holds the lock


@dataclass(slots=True)
class Operation:
    """One queued unit of work: ``run(writer)`` executes inside the batch transaction."""

    run: Callable[[Writer], Any]
    future: asyncio.Future | None = None


@dataclass(order=True, slots=True)
class _Expiry:
    at: float
    revision: int
    key: str = field(compare=False)


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[list[Event]], None],
    ) -> None:
        self.conn = conn
        self._loop = loop
        self._publish = publish
        self._queue: queue.SimpleQueue[Operation | None] = queue.SimpleQueue()
        self._events: list[Event] = []
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
        self.revision = seq[0]  # last revision assigned in this (maybe open) transaction
        self.committed_revision = self.revision  # last revision durably committed
        self.compact_revision = conn.execute(queries.COMPACT_REVISION).fetchone()[0]
        self._expiries: list[_Expiry] = []
        for name, rev, expires in conn.execute(
            "SELECT name, id, expires FROM kine WHERE expires IS NOT NULL AND deleted = 0"
        ):
            self._expiries.append(_Expiry(expires, rev, name))
        heapq.heapify(self._expiries)
        self._closed = False
        self._checkpoint = False
        self._thread = threading.Thread(target=self._run, name="k3py-store-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, run: Callable[[Writer], Any]) -> asyncio.Future:
        if self._closed:
            raise StoreClosedError("the store is closed")
        future = self._loop.create_future()
        self._queue.put(Operation(run, future))
        return future

    def stop(self) -> threading.Thread:
        """Let queued operations finish, then end the thread (join the returned thread)."""
        self._closed = True
        self._queue.put(None)
        return self._thread

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            op = self._queue.get()
            batch: list[Operation] = []
            stopping = op is None
            if op is not None:
                batch.append(op)
            while len(batch) < MAX_BATCH and not stopping:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stopping = True
                else:
                    batch.append(op)
            if batch:
                self._run_batch(batch)
            if stopping:
                self.conn.close()
                return

    def _run_batch(self, batch: list[Operation]) -> None:
        outcomes: list[tuple[asyncio.Future | None, bool, Any]] = []
        self._events = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    outcomes.append((op.future, True, op.run(self)))
                except StoreError as exc:
                    outcomes.append((op.future, False, exc))
            self.conn.execute("COMMIT")
        except Exception as exc:  # every queued operation must get an answer
            log.exception("store write batch failed; rolling back %d operations", len(batch))
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            self.revision = self.committed_revision
            self._reload_compact_revision()
            error = StoreError(f"the database write failed: {exc}")
            outcomes = [(op.future, False, error) for op in batch]
            self._events = []
        else:
            self.committed_revision = self.revision
            if self._checkpoint:
                self._checkpoint = False
                try:
                    self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.exception("WAL checkpoint failed")
        events, self._events = self._events, []
        self._loop.call_soon_threadsafe(self._deliver, outcomes, events)

    def _reload_compact_revision(self) -> None:
        try:
            self.compact_revision = self.conn.execute(queries.COMPACT_REVISION).fetchone()[0]
        except sqlite3.Error:
            log.exception("could not re-read the compact revision")

    def _deliver(self, outcomes: list, events: list[Event]) -> None:
        """On the loop: publish first, so a watcher started by a caller sees its own write."""
        if events:
            self._publish(events)
        for future, ok, value in outcomes:
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    # -- operations (run inside the batch transaction, on the thread) ----------------

    def latest(self, key: str) -> Row | None:
        t = self.conn.execute(queries.LATEST_FOR_KEY, {"name": key}).fetchone()
        return Row.from_tuple(t) if t else None

    def _append(self, row: NewRow) -> None:
        expires = time.time() + row.lease if row.lease and not row.deleted else None
        self.conn.execute(queries.INSERT_ROW, row.as_params(expires))
        self.revision = row.id
        self._events.append(row.event)
        if expires is not None:
            heapq.heappush(self._expiries, _Expiry(expires, row.id, row.name))

    def create(self, key: str, value: bytes, lease: int) -> KeyValue:
        row = plan_create(key, value, lease, self.latest(key), self.revision + 1)
        self._append(row)
        return row.event.kv

    def update(self, key: str, value: bytes, lease: int, expected: int) -> WriteResult:
        plan = plan_update(key, value, lease, expected, self.latest(key), self.revision + 1)
        if isinstance(plan, WriteResult):
            return plan
        self._append(plan)
        return WriteResult(True, plan.event.kv, plan.id)

    def delete(self, key: str, expected: int | None) -> WriteResult:
        plan = plan_delete(key, expected, self.latest(key), self.revision + 1)
        if isinstance(plan, WriteResult):
            return plan
        self._append(plan)
        return WriteResult(True, plan.event.kv, plan.id)

    def expire_due(self, now: float, limit: int = 500) -> int:
        """Delete TTL keys whose time has come (a CAS on the version that set the TTL)."""
        done = 0
        while self._expiries and self._expiries[0].at <= now and done < limit:
            due = heapq.heappop(self._expiries)
            result = self.delete(due.key, due.revision)
            done += result.succeeded
        return done

    def next_expiry_due(self, now: float) -> bool:
        """Whether a TTL key is due (read from the loop thread; a stale answer is harmless)."""
        try:
            return self._expiries[0].at <= now
        except IndexError:
            return False

    def request_checkpoint(self) -> None:
        """Run a passive WAL checkpoint right after this batch commits."""
        self._checkpoint = True

    def compact_step(self, target: int, max_revisions: int) -> int:
        """Compact one slice (compact_revision, hi]; return the new compact revision.

        The rule is in queries.COMPACT_PREDECESSORS/COMPACT_TOMBSTONES. Work per step is
        bounded by the slice size, so writers queued behind it wait only briefly.
        """
        lo = self.compact_revision
        hi = min(target, lo + max_revisions, self.committed_revision)
        if hi <= lo:
            return lo
        params = {"lo": lo, "hi": hi}
        self.conn.execute(queries.COMPACT_PREDECESSORS, params)
        self.conn.execute(queries.COMPACT_TOMBSTONES, params)
        self.conn.execute(queries.SET_COMPACT_REVISION, params)
        self.compact_revision = hi
        return hi
