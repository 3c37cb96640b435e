"""Feed the broadcaster from the shared table: LISTEN/NOTIFY plus a polling fallback.

Every server sharing the database learns of new rows the same way, its own writes included:
a NOTIFY wakes the poller (or the poll interval elapses, if notifications are lost or the
listener connection is down), and the poller reads ``id > last`` in id order and publishes.
It never skips a revision: on a hole in the ids it waits ``gap_wait`` seconds for the
missing row to commit, then writes a placeholder row (empty name, marked deleted) at that
id, as kine does — after which a late original insert fails on the primary key instead of
appearing behind watchers' backs. Placeholders are never published as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from k3py.store import queries
from k3py.store.broadcaster import Broadcaster
from k3py.store.postgres.schema import NOTIFY_CHANNEL
from k3py.store.rows import Row, event_from_rows

log = logging.getLogger(__name__)

PAGE = 1000
NEW_ROWS_SQL = text(queries.ROWS_AFTER)
FILL_GAP_SQL = text(
    "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease,"
    " value) SELECT g, '', 0, 1, 0, g, 0, ''::bytea FROM generate_series("
    "CAST(:lo AS BIGINT), CAST(:hi AS BIGINT)) AS g ON CONFLICT DO NOTHING"
)


class Poller:
    def __init__(
        self,
        engine: AsyncEngine,
        dsn: str,
        broadcaster: Broadcaster,
        poll_interval: float,
        gap_wait: float,
    ) -> None:
        self._engine = engine
        self._dsn = dsn
        self._broadcaster = broadcaster
        self._poll_interval = poll_interval
        self._gap_wait = gap_wait
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listener: asyncpg.Connection | None = None
        self._gap: tuple[int, float] | None = None  # (missing revision, first seen)
        self.last = 0  # highest revision published
        self.gaps_filled = 0

    async def start(self, last: int) -> None:
        self.last = last
        await self._listen()
        self._task = asyncio.create_task(self._run(), name="k3py-store-pg-poller")

    def wake(self, revision: int = 0) -> None:
        if revision == 0 or revision > self.last:
            self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection; on failure, polling alone keeps watches going."""
        try:
            self._listener = await asyncpg.connect(self._dsn)
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN %s failed (%s); falling back to polling", NOTIFY_CHANNEL, exc)
            self._listener = None

    async def _run(self) -> None:
        while True:
            timeout = self._poll_interval if self._gap is None else min(0.05, self._gap_wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                if await self.poll_once():
                    self._wake.set()
            except Exception:
                log.exception("store poll failed; retrying")
                await asyncio.sleep(self._poll_interval)

    async def poll_once(self) -> bool:
        """Publish the next rows in revision order; True when more may be waiting."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(NEW_ROWS_SQL, {"last": self.last, "limit": PAGE})).all()
        events = []
        blocked = False
        for t in rows:
            rev = t[0]
            if rev != self.last + 1:
                blocked = True
                break
            self._gap = None
            row = Row.from_tuple(tuple(t[:8]))
            if row.name:  # placeholders carry no event
                prev = Row.from_tuple(tuple(t[8:])) if t[8] is not None else None
                events.append(event_from_rows(row, prev))
            self.last = rev
        if events:
            self._broadcaster.publish(events)
        if blocked:
            return await self._handle_gap()
        return len(rows) == PAGE

    async def _handle_gap(self) -> bool:
        missing = self.last + 1
        now = time.monotonic()
        if self._gap is None or self._gap[0] != missing:
            self._gap = (missing, now)
            return False
        if now - self._gap[1] < self._gap_wait:
            return False
        async with self._engine.begin() as conn:
            nxt = (
                await conn.execute(
                    text("SELECT MIN(id) FROM kine WHERE id > :last"), {"last": self.last}
                )
            ).scalar()
            if nxt is None or nxt <= missing:
                return True
            await conn.execute(FILL_GAP_SQL, {"lo": missing, "hi": nxt - 1})
        log.warning("filled revision gap %d..%d with placeholder rows", missing, nxt - 1)
        self.gaps_filled += nxt - missing
        self._gap = None
        return True
