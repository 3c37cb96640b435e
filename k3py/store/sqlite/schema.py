"""Opening the SQLite file: create it, or prove it is ours and intact — never re-initialise.

The file is marked with ``PRAGMA application_id`` (ASCII "k3py") and a ``k3py_meta`` row holding
the schema version. At start-up an existing file must carry both and pass
``PRAGMA quick_check``; anything else (a foreign SQLite database, random bytes, a truncated
file) raises CorruptDatabaseError with the path, so an operator restores a backup instead of
k3py silently starting an empty cluster over the data.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from k3py.store import queries
from k3py.store.types import CorruptDatabaseError, StoreError

APPLICATION_ID = 0x6B337079  # "k3py"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

# Revision 1 is the empty store (like etcd), so the first write is revision 2 and no list
# ever reports revision 0, which Kubernetes clients read as "any version".
INITIAL_REVISION = 1

DDL = [
    """CREATE TABLE kine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        create_revision INTEGER NOT NULL,
        prev_revision INTEGER NOT NULL,
        lease INTEGER NOT NULL,
        expires REAL,
        value BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX kine_name_prev_revision ON kine (name, prev_revision)",
    "CREATE INDEX kine_name_id ON kine (name, id)",
    "CREATE INDEX kine_expires ON kine (expires) WHERE expires IS NOT NULL",
    f"CREATE TABLE {queries.META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    f"INSERT INTO {queries.META_TABLE} (key, value) VALUES"
    f" ('schema_version', {SCHEMA_VERSION}), ('compact_revision', 0)",
    f"INSERT INTO sqlite_sequence (name, seq) VALUES ('kine', {INITIAL_REVISION})",
    f"PRAGMA application_id = {APPLICATION_ID}",
]


def _check_header(path: Path) -> bool:
    """True when the file exists with content; raise if that content is not SQLite."""
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return False
    if not header:
        return False
    if header != SQLITE_MAGIC:
        raise CorruptDatabaseError(f"{path} is not an SQLite database (refusing to overwrite it)")
    return True


def lock_exclusively(path: Path) -> int:
    """Hold ``<path>.lock`` with flock so a second process gets a clear error, not
    "database is locked" later. The kernel drops the lock when the process dies."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"{path} is in use by another k3py process; only one server may open it"
        ) from None
    return fd


def connect(path: Path, synchronous: str, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit BEGIN/COMMIT)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if writer:
        conn.execute("PRAGMA journal_size_limit = 16777216")  # truncate the WAL back to 16 MiB
    else:
        conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cache_size = -16000")
    return conn


def open_database(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open (creating if new) and verify the store file; return the writer connection."""
    existed = _check_header(path)
    if not existed:
        # The store holds Secrets: owner-only. SQLite gives -wal/-shm the main file's mode.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        conn = connect(path, synchronous, writer=True)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise CorruptDatabaseError(f"{path}: could not switch to WAL mode (got {mode})")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not existed and not tables and app_id == 0:
            conn.execute("BEGIN IMMEDIATE")
            for statement in DDL:
                conn.execute(statement)
            conn.execute("COMMIT")
            return conn
        _verify(conn, path, app_id, tables)
        return conn
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabaseError(f"{path} is damaged or not a k3py store: {exc}") from None


def _verify(conn: sqlite3.Connection, path: Path, app_id: int, tables: set[str]) -> None:
    if app_id != APPLICATION_ID or not {"kine", queries.META_TABLE} <= tables:
        raise CorruptDatabaseError(
            f"{path} is an SQLite database but not a k3py store "
            f"(application_id {app_id:#x}); refusing to use or overwrite it"
        )
    row = conn.execute(queries.SCHEMA_VERSION).fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        raise CorruptDatabaseError(f"{path}: unsupported k3py store schema version {row}")
    result = conn.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in result[:5])
        raise CorruptDatabaseError(f"{path} failed its integrity check: {detail}")
