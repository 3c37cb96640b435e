"""Reads on separate WAL reader connections, one per pool thread.

A WAL reader sees a fixed snapshot from its BEGIN to its COMMIT and never blocks or is
blocked by the writer, so each read verb runs its statements inside one read transaction:
the revision it reports, the compact-revision check and the rows all come from the same
snapshot. The current revision is read from ``sqlite_sequence`` (AUTOINCREMENT's high-water
mark), which survives compaction deleting the newest rows and is part of every commit.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from k3py.store import queries
from k3py.store.rows import Row, event_from_rows
from k3py.store.sqlite.schema import connect
from k3py.store.types import CompactedError, Event, FutureRevisionError, KeyValue


class Snapshot:
    """Read verbs over one connection; call them inside ``with snapshot:`` (one read txn)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Snapshot:
        self.conn.execute("BEGIN")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("COMMIT")

    def current_revision(self) -> int:
        # SQLite's dialect difference: AUTOINCREMENT's high-water mark is the revision.
        return self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()[
            0
        ]

    def compact_revision(self) -> int:
        return self.conn.execute(queries.COMPACT_REVISION).fetchone()[0]

    def resolve_revision(self, revision: int | None) -> int:
        """The revision to read at; raise if it is compacted or in the future."""
        current = self.current_revision()
        if revision is None or revision == 0:
            return current
        if revision > current:
            raise FutureRevisionError(revision, current)
        compact = self.compact_revision()
        if revision < compact:
            raise CompactedError(revision, compact)
        return revision

    def get(self, key: str, revision: int) -> KeyValue | None:
        t = self.conn.execute(queries.KEY_AT_REVISION, {"name": key, "rev": revision}).fetchone()
        if t is None or t[3]:
            return None
        return Row.from_tuple(t).to_kv()

    def list(self, prefix: str, revision: int, after: str | None, limit: int) -> list[KeyValue]:
        query, params = queries.list_query(prefix, revision, after, limit)
        return [KeyValue(t[1], t[7], t[4], t[0], t[6]) for t in self.conn.execute(query, params)]

    def count(self, prefix: str, revision: int, after: str | None = None) -> int:
        query, params = queries.count_query(prefix, revision, after)
        return self.conn.execute(query, params).fetchone()[0]

    def history(self, prefix: str, start: int, limit: int) -> tuple[list[Event], int, bool]:
        """Events with revision >= start, at most ``limit`` rows, plus where the scan stopped."""
        compact = self.compact_revision()
        if start <= compact:
            raise CompactedError(start, compact)
        head = self.current_revision()
        query, params = queries.history_query(prefix, start, head, limit)
        rows = self.conn.execute(query, params).fetchall()
        events = [
            event_from_rows(Row.from_tuple(t[:8]), Row.from_tuple(t[8:]) if t[8] else None)
            for t in rows
        ]
        if len(rows) < limit:
            return events, head, False
        return events, rows[-1][0], True


class ReaderPool:
    """A few threads, each holding its own read connection to the store file."""

    def __init__(self, path: Path, synchronous: str, threads: int) -> None:
        self._path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="k3py-store-read"
        )

    def snapshot(self) -> Snapshot:
        """The calling pool thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, self._synchronous, writer=False)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return Snapshot(conn)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
