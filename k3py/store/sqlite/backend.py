"""SqliteStore: the Store verbs over one writer thread, a reader pool and a broadcaster.

Writes queue to the writer (group commit, see writer.py); reads run on WAL reader
connections (reader.py); watches join table history to the live broadcaster (watch.py).
A maintenance task expires TTL keys, compacts history older than ``retention`` seconds in
short slices queued between client writes, and asks for passive WAL checkpoints, so the file
stays bounded without ever stopping writers for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from k3py.store.broadcaster import Broadcaster
from k3py.store.keys import (
    check_key,
    decode_continue,
    encode_continue,
)
from k3py.store.sqlite.reader import ReaderPool, Snapshot
from k3py.store.sqlite.schema import lock_exclusively, open_database
from k3py.store.sqlite.writer import Writer
from k3py.store.types import (
    Event,
    FutureRevisionError,
    KeyValue,
    ListResult,
    StoreClosedError,
)
from k3py.store.watch import WatchStream
from k3py.store.writeverbs import WriteVerbs

log = logging.getLogger(__name__)

T = TypeVar("T")

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


class SqliteStore(WriteVerbs):
    """The embedded store. Tunables exist so tests can run compaction in seconds."""

    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        *,
        reader_threads: int = 2,
        retention: float = 300.0,
        compact_interval: float = 30.0,
        compact_slice: int = 1000,
        maintenance_interval: float = 1.0,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = mode
        self._reader_threads = reader_threads
        self._retention = retention
        self._compact_interval = compact_interval
        self._compact_slice = compact_slice
        self._maintenance_interval = maintenance_interval
        self._broadcaster = Broadcaster()
        self._writer: Writer | None = None
        self._readers: ReaderPool | None = None
        self._maintenance: asyncio.Task | None = None
        self._closed = False
        self._lock_fd: int | None = None
        # (monotonic time, committed revision) samples to map "retention ago" to a revision.
        self._samples: deque[tuple[float, int]] = deque()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def open_writer() -> Writer:
            lock_fd = lock_exclusively(self.path)
            try:
                conn = open_database(self.path, self.synchronous)
            except BaseException:
                os.close(lock_fd)
                raise
            try:
                writer = Writer(conn, loop, self._broadcaster.publish)
            except BaseException:
                conn.close()
                os.close(lock_fd)
                raise
            self._lock_fd = lock_fd
            return writer

        self._writer = await asyncio.to_thread(open_writer)
        self._writer.start()
        self._readers = ReaderPool(self.path, self.synchronous, self._reader_threads)
        self._maintenance = asyncio.create_task(self._maintain(), name="k3py-store-maintenance")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop().join)
            await asyncio.sleep(0)  # let the last batch's results reach their futures
        self._broadcaster.close()
        if self._readers is not None:
            await asyncio.to_thread(self._readers.close)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- plumbing ----------------------------------------------------------------------

    def _w(self) -> Writer:
        if self._closed or self._writer is None:
            raise StoreClosedError("the store is closed" if self._closed else "store not started")
        return self._writer

    async def _read(self, fn: Callable[[Snapshot], T]) -> T:
        if self._closed or self._readers is None:
            raise StoreClosedError("the store is closed" if self._closed else "store not started")
        readers = self._readers

        def run() -> T:
            with readers.snapshot() as snap:
                return fn(snap)

        return await asyncio.get_running_loop().run_in_executor(readers.executor, run)

    # -- verbs -------------------------------------------------------------------------

    async def current_revision(self) -> int:
        return self._w().committed_revision

    async def compact_revision(self) -> int:
        return await self._read(lambda s: s.compact_revision())

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        check_key(key)
        return await self._read(lambda s: s.get(key, s.resolve_revision(revision)))

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

        def run(s: Snapshot) -> ListResult:
            rev = s.resolve_revision(revision)
            items = s.list(prefix, rev, after, limit + 1 if limit else 0)
            if limit and len(items) > limit:
                del items[limit:]
                last = items[-1].key
                remaining = s.count(prefix, rev, last)
                return ListResult(rev, items, encode_continue(rev, last), remaining)
            return ListResult(rev, items)

        return await self._read(run)

    async def count(self, prefix: str) -> tuple[int, int]:
        def run(s: Snapshot) -> tuple[int, int]:
            rev = s.current_revision()
            return rev, s.count(prefix, rev)

        return await self._read(run)

    def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[list[Event]]:
        writer = self._w()
        if start_revision < 0:
            raise ValueError(f"start_revision must be >= 0, got {start_revision}")

        async def read_history(p: str, start: int, limit: int) -> tuple[list[Event], int, bool]:
            return await self._read(lambda s: s.history(p, start, limit))

        return WatchStream(
            self._broadcaster, read_history, prefix, start_revision, writer.committed_revision
        )

    async def compact(self, revision: int) -> None:
        """Drop history below ``revision`` (no-op when already compacted that far)."""
        writer = self._w()
        current = writer.committed_revision
        if revision > current:
            raise FutureRevisionError(revision, current)
        while writer.compact_revision < revision:
            await writer.submit(lambda w: w.compact_step(revision, self._compact_slice))

    # -- maintenance -------------------------------------------------------------------

    @property
    def watcher_count(self) -> int:
        return self._broadcaster.watcher_count

    def _retention_target(self, now: float) -> int:
        """The newest revision committed at least ``retention`` seconds ago."""
        target = 0
        while self._samples and self._samples[0][0] <= now - self._retention:
            target = self._samples.popleft()[1]
        if target:
            self._samples.appendleft((now - self._retention, target))
        return target

    async def _maintain(self) -> None:
        writer = self._w()
        next_compact = time.monotonic() + self._compact_interval
        while True:
            await asyncio.sleep(self._maintenance_interval)
            now = time.monotonic()
            try:
                if writer.next_expiry_due(time.time()):
                    await writer.submit(lambda w: w.expire_due(time.time()))
                self._samples.append((now, writer.committed_revision))
                if now >= next_compact:
                    next_compact = now + self._compact_interval
                    target = self._retention_target(now)
                    if target > writer.compact_revision:
                        await self.compact(target)
                        await writer.submit(lambda w: w.request_checkpoint())
            except StoreClosedError:
                return
            except Exception:
                log.exception("store maintenance failed; retrying next interval")
