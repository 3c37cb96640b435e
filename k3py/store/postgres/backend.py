"""PostgresStore: the Store verbs over SQLAlchemy async + asyncpg, for several servers.

Writes go through PgWriter (batched, serialised across servers by an advisory lock); reads
run in REPEATABLE READ read-only transactions so a list's revision, its compact check and its
rows come from one snapshot; watches join table history to a broadcaster fed by the Poller
(LISTEN/NOTIFY plus polling), so a server sees writes made through any other server. TTL
expiry and compaction run on every server as compare-and-swap / idempotent steps, so
running them twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from k3py.store import queries
from k3py.store.broadcaster import Broadcaster
from k3py.store.keys import check_key, decode_continue, encode_continue
from k3py.store.postgres.poller import Poller
from k3py.store.postgres.schema import asyncpg_dsn, ensure_schema, sqlalchemy_url
from k3py.store.postgres.writer import PgWriter
from k3py.store.rows import Row, event_from_rows
from k3py.store.types import (
    CompactedError,
    CorruptDatabaseError,
    Event,
    FutureRevisionError,
    KeyValue,
    ListResult,
    StoreClosedError,
    StoreError,
)
from k3py.store.watch import WatchStream
from k3py.store.writeverbs import WriteVerbs

log = logging.getLogger(__name__)

T = TypeVar("T")


class PgSnapshot:
    """Read verbs inside one REPEATABLE READ transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def current_revision(self) -> int:
        # PostgreSQL's dialect difference: the revision is a meta row kept under the lock.
        return (
            await self.conn.execute(
                text(f"SELECT value FROM {queries.META_TABLE} WHERE key = 'revision'")
            )
        ).scalar_one()

    async def compact_revision(self) -> int:
        return (await self.conn.execute(text(queries.COMPACT_REVISION))).scalar_one()

    async def resolve_revision(self, revision: int | None) -> int:
        current = await self.current_revision()
        if not revision:
            return current
        if revision > current:
            raise FutureRevisionError(revision, current)
        compact = await self.compact_revision()
        if revision < compact:
            raise CompactedError(revision, compact)
        return revision

    async def get(self, key: str, revision: int) -> KeyValue | None:
        result = await self.conn.execute(
            text(queries.KEY_AT_REVISION), {"name": key, "rev": revision}
        )
        t = result.first()
        if t is None or t[3]:
            return None
        return Row.from_tuple(tuple(t)).to_kv()

    async def list(
        self, prefix: str, revision: int, after: str | None, limit: int
    ) -> list[KeyValue]:
        query, params = queries.list_query(prefix, revision, after, limit)
        result = await self.conn.execute(text(query), params)
        return [KeyValue(t[1], bytes(t[7]), t[4], t[0], t[6]) for t in result]

    async def count(self, prefix: str, revision: int, after: str | None = None) -> int:
        query, params = queries.count_query(prefix, revision, after)
        return (await self.conn.execute(text(query), params)).scalar_one()

    async def history(self, prefix: str, start: int, limit: int) -> tuple[list[Event], int, bool]:
        compact = await self.compact_revision()
        if start <= compact:
            raise CompactedError(start, compact)
        head = await self.current_revision()
        query, params = queries.history_query(prefix, start, head, limit)
        rows = (await self.conn.execute(text(query), params)).all()
        events = [
            event_from_rows(
                Row.from_tuple(tuple(t[:8])),
                Row.from_tuple(tuple(t[8:])) if t[8] is not None else None,
            )
            for t in rows
            if t[1]  # placeholders fill gaps, they are not events
        ]
        if len(rows) < limit:
            return events, head, False
        return events, rows[-1][0], True


class PostgresStore(WriteVerbs):
    def __init__(
        self,
        endpoint: str,
        *,
        retention: float = 300.0,
        compact_interval: float = 30.0,
        compact_slice: int = 1000,
        maintenance_interval: float = 1.0,
        poll_interval: float = 1.0,
        gap_wait: float = 1.0,
        pool_size: int = 10,
    ) -> None:
        self.endpoint = endpoint
        self._retention = retention
        self._compact_interval = compact_interval
        self._compact_slice = compact_slice
        self._maintenance_interval = maintenance_interval
        self._poll_interval = poll_interval
        self._gap_wait = gap_wait
        self._pool_size = pool_size
        self._broadcaster = Broadcaster()
        self._engine: AsyncEngine | None = None
        self._read_engine: AsyncEngine | None = None
        self._writer: PgWriter | None = None
        self.poller: Poller | None = None
        self._maintenance: asyncio.Task | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._closed = False

    async def start(self) -> None:
        self._engine = create_async_engine(
            sqlalchemy_url(self.endpoint), pool_size=self._pool_size, max_overflow=self._pool_size
        )
        self._read_engine = self._engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        try:
            async with self._engine.begin() as conn:
                await ensure_schema(conn)
        except CorruptDatabaseError:
            await self._engine.dispose()
            raise
        except Exception as exc:
            await self._engine.dispose()
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        current = await self._read(lambda s: s.current_revision())
        self.poller = Poller(
            self._engine,
            asyncpg_dsn(self.endpoint),
            self._broadcaster,
            self._poll_interval,
            self._gap_wait,
        )
        self._writer = PgWriter(self._engine, self.poller.wake)
        self._writer.committed_revision = current
        await self.poller.start(current)
        self._writer.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="k3py-store-pg-maint")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self._writer is not None:
            await self._writer.stop()
        if self.poller is not None:
            await self.poller.stop()
        self._broadcaster.close()
        if self._engine is not None:
            await self._engine.dispose()

    # -- plumbing ----------------------------------------------------------------------

    def _w(self) -> PgWriter:
        if self._closed or self._writer is None:
            raise StoreClosedError("the store is closed" if self._closed else "store not started")
        return self._writer

    async def _read(self, fn: Callable[[PgSnapshot], Awaitable[T]]) -> T:
        if self._closed or self._read_engine is None:
            raise StoreClosedError("the store is closed" if self._closed else "store not started")
        async with self._read_engine.connect() as conn, conn.begin():
            return await fn(PgSnapshot(conn))

    # -- verbs -------------------------------------------------------------------------

    async def current_revision(self) -> int:
        return await self._read(lambda s: s.current_revision())

    async def compact_revision(self) -> int:
        return await self._read(lambda s: s.compact_revision())

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        check_key(key)

        async def run(s: PgSnapshot) -> KeyValue | None:
            return await s.get(key, await s.resolve_revision(revision))

        return await self._read(run)

    async def list(
        self,
        prefix: str,
        revision: int | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> ListResult:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        after: str | None = None
        if continue_token:
            revision, after = decode_continue(continue_token, prefix)

        async def run(s: PgSnapshot) -> ListResult:
            rev = await s.resolve_revision(revision)
            items = await s.list(prefix, rev, after, limit + 1 if limit else 0)
            if limit and len(items) > limit:
                del items[limit:]
                last = items[-1].key
                remaining = await s.count(prefix, rev, last)
                return ListResult(rev, items, encode_continue(rev, last), remaining)
            return ListResult(rev, items)

        return await self._read(run)

    async def count(self, prefix: str) -> tuple[int, int]:
        async def run(s: PgSnapshot) -> tuple[int, int]:
            rev = await s.current_revision()
            return rev, await s.count(prefix, rev)

        return await self._read(run)

    def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[list[Event]]:
        writer = self._w()
        if start_revision < 0:
            raise ValueError(f"start_revision must be >= 0, got {start_revision}")

        async def read_history(p: str, start: int, limit: int) -> tuple[list[Event], int, bool]:
            return await self._read(lambda s: s.history(p, start, limit))

        # "From now": everything this server has committed or already published is old.
        now = max(writer.committed_revision, self.poller.last if self.poller else 0)
        return WatchStream(self._broadcaster, read_history, prefix, start_revision, now)

    async def compact(self, revision: int) -> None:
        """Drop history below ``revision`` (no-op when already compacted that far)."""
        writer = self._w()
        current = await self.current_revision()
        if revision > current:
            raise FutureRevisionError(revision, current)
        while await self.compact_revision() < revision:
            await writer.submit(lambda t: t.compact_step(revision, self._compact_slice))

    @property
    def watcher_count(self) -> int:
        return self._broadcaster.watcher_count

    # -- maintenance -------------------------------------------------------------------

    async def _expire_due(self) -> None:
        async with self._engine.connect() as conn:  # type: ignore[union-attr]
            result = await conn.execute(
                text(queries.EXPIRED_KEYS), {"now": time.time(), "limit": 500}
            )
            due = result.all()
        for name, rev in due:
            await self.delete(name, rev)  # CAS: a renewed key or another server's delete wins

    def _retention_target(self, now: float) -> int:
        target = 0
        while self._samples and self._samples[0][0] <= now - self._retention:
            target = self._samples.popleft()[1]
        if target:
            self._samples.appendleft((now - self._retention, target))
        return target

    async def _maintain(self) -> None:
        next_compact = time.monotonic() + self._compact_interval
        while True:
            await asyncio.sleep(self._maintenance_interval)
            now = time.monotonic()
            try:
                await self._expire_due()
                self._samples.append((now, await self.current_revision()))
                if now >= next_compact:
                    next_compact = now + self._compact_interval
                    target = self._retention_target(now)
                    if target > await self.compact_revision():
                        await self.compact(target)
            except StoreClosedError:
                return
            except Exception:
                log.exception("store maintenance failed; retrying next interval")
