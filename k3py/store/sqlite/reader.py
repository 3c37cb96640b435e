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

from k3py.store.keys import prefix_upper_bound
from k3py.store.rows import ROW_COLUMNS, Row, event_from_rows
from k3py.store.sqlite.schema import connect
from k3py.store.types import CompactedError, Event, FutureRevisionError, KeyValue

_ROW_COLS_K = ", ".join(f"k.{c.strip()}" for c in ROW_COLUMNS.split(","))
_ROW_COLS_P = ", ".join(f"p.{c.strip()}" for c in ROW_COLUMNS.split(","))


def _range_sql(prefix: str, column: str = "name") -> tuple[str, list]:
    """A WHERE fragment selecting keys that start with ``prefix`` (index friendly)."""
    if not prefix:
        return "1", []
    upper = prefix_upper_bound(prefix)
    if upper is None:
        return f"{column} >= ? AND substr({column}, 1, ?) = ?", [prefix, len(prefix), prefix]
    return f"{column} >= ? AND {column} < ?", [prefix, upper]


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
        return self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()[
            0
        ]

    def compact_revision(self) -> int:
        return self.conn.execute(
            "SELECT value FROM meta WHERE key = 'compact_revision'"
        ).fetchone()[0]

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
        t = self.conn.execute(
            f"SELECT {ROW_COLUMNS} FROM kine WHERE name = ? AND id <= ? ORDER BY id DESC LIMIT 1",
            (key, revision),
        ).fetchone()
        if t is None or t[3]:
            return None
        return Row.from_tuple(t).to_kv()

    def _latest_sql(self, prefix: str, after: str | None) -> tuple[str, list]:
        where, params = _range_sql(prefix, "m.name")
        if after is not None:
            where += " AND m.name > ?"
            params.append(after)
        sql = (
            f"FROM (SELECT MAX(m.id) AS id FROM kine AS m WHERE {where} AND m.id <= ?"
            " GROUP BY m.name) AS latest JOIN kine AS k ON k.id = latest.id WHERE k.deleted = 0"
        )
        return sql, params

    def list(self, prefix: str, revision: int, after: str | None, limit: int) -> list[KeyValue]:
        sql, params = self._latest_sql(prefix, after)
        params.append(revision)
        query = f"SELECT {_ROW_COLS_K} {sql} ORDER BY k.name"
        if limit > 0:
            query += f" LIMIT {int(limit)}"
        return [KeyValue(t[1], t[7], t[4], t[0], t[6]) for t in self.conn.execute(query, params)]

    def count(self, prefix: str, revision: int, after: str | None = None) -> int:
        sql, params = self._latest_sql(prefix, after)
        params.append(revision)
        return self.conn.execute(f"SELECT COUNT(*) {sql}", params).fetchone()[0]

    def history(self, prefix: str, start: int, limit: int) -> tuple[list[Event], int, bool]:
        """Events with revision >= start, at most ``limit`` rows, plus where the scan stopped."""
        compact = self.compact_revision()
        if start <= compact:
            raise CompactedError(start, compact)
        head = self.current_revision()
        where, params = _range_sql(prefix, "k.name")
        rows = self.conn.execute(
            f"SELECT {_ROW_COLS_K}, {_ROW_COLS_P} FROM kine AS k"
            " LEFT JOIN kine AS p ON p.id = k.prev_revision"
            f" WHERE k.id >= ? AND k.id <= ? AND {where} ORDER BY k.id LIMIT ?",
            [start, head, *params, limit],
        ).fetchall()
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
