"""The PostgreSQL schema: kine's table plus a small meta table, created once under a lock.

Names use ``COLLATE "C"`` so ``name >= P AND name < upper(P)`` is a byte-order prefix range
served by the (name, id) index, exactly as in SQLite. ``k3py_meta`` holds the schema version,
the compact revision and the current revision; an existing ``kine`` table without it (say,
a real kine database) is refused with CorruptDatabaseError rather than adopted.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from k3py.store import queries
from k3py.store.types import CorruptDatabaseError

SCHEMA_VERSION = 1
INITIAL_REVISION = 1  # as in SQLite: the empty store is revision 1

# pg_advisory_xact_lock keys: one serialises writers (revision order = commit order), one
# serialises schema creation when several servers start at once.
WRITE_LOCK = 0x6B337079
SCHEMA_LOCK = 0x6B337080
NOTIFY_CHANNEL = "k3py_kine"

DDL = [
    """CREATE TABLE kine (
        id BIGINT PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        create_revision BIGINT NOT NULL,
        prev_revision BIGINT NOT NULL,
        lease BIGINT NOT NULL,
        expires DOUBLE PRECISION,
        value BYTEA NOT NULL
    )""",
    "CREATE UNIQUE INDEX kine_name_prev_revision ON kine (name, prev_revision)",
    "CREATE INDEX kine_name_id ON kine (name, id)",
    "CREATE INDEX kine_expires ON kine (expires) WHERE expires IS NOT NULL",
    f"CREATE TABLE {queries.META_TABLE} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    f"INSERT INTO {queries.META_TABLE} (key, value) VALUES ('schema_version', {SCHEMA_VERSION}),"
    f" ('compact_revision', 0), ('revision', {INITIAL_REVISION})",
]


def sqlalchemy_url(endpoint: str) -> str:
    """postgres://... → postgresql+asyncpg://... (libpq-only query options dropped)."""
    parts = urlsplit(endpoint)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("sslmode", "connect_timeout")]
    return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), ""))


def asyncpg_dsn(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


async def ensure_schema(conn: AsyncConnection) -> None:
    """Create the tables in a fresh database, or verify they are k3py's (inside a txn)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
    tables = set(
        (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                    " AND table_name IN ('kine', 'k3py_meta')"
                )
            )
        ).scalars()
    )
    if not tables:
        for statement in DDL:
            await conn.execute(text(statement))
        return
    if tables != {"kine", "k3py_meta"}:
        raise CorruptDatabaseError(
            "the PostgreSQL database has a 'kine' table that is not a k3py store "
            "(no k3py_meta table); refusing to use it"
        )
    version = (await conn.execute(text(queries.SCHEMA_VERSION))).scalar()
    if version != SCHEMA_VERSION:
        raise CorruptDatabaseError(f"unsupported k3py store schema version {version!r}")
