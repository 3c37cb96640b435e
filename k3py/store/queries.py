"""The SQL both backends run, written once with named parameters (``:name``).

SQLite's sqlite3 module and SQLAlchemy's ``text()`` both bind ``:name`` parameters from a
dict, and every statement here is plain SQL both engines accept, so the dialects stay thin:
each backend only says where its current revision lives (SQLite: AUTOINCREMENT's
``sqlite_sequence``; PostgreSQL: the ``k3py_meta`` row kept under the write lock) and
creates its tables. Semantics cannot drift between the two.

Key ranges: ``prefix_range`` turns "keys starting with P" into ``name >= :lo AND name < :hi``
over the (name, id) index, falling back to a substr comparison for the rare prefix with
no upper bound.
"""

from __future__ import annotations

from k3py.store.keys import prefix_upper_bound
from k3py.store.rows import ROW_COLUMNS

_COLUMNS = [c.strip() for c in ROW_COLUMNS.split(",")]
K_COLUMNS = ", ".join(f"k.{c}" for c in _COLUMNS)
P_COLUMNS = ", ".join(f"p.{c}" for c in _COLUMNS)

META_TABLE = "k3py_meta"
COMPACT_REVISION = f"SELECT value FROM {META_TABLE} WHERE key = 'compact_revision'"
SET_COMPACT_REVISION = f"UPDATE {META_TABLE} SET value = :hi WHERE key = 'compact_revision'"
SCHEMA_VERSION = f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'"

LATEST_FOR_KEY = f"SELECT {ROW_COLUMNS} FROM kine WHERE name = :name ORDER BY id DESC LIMIT 1"
KEY_AT_REVISION = (
    f"SELECT {ROW_COLUMNS} FROM kine WHERE name = :name AND id <= :rev ORDER BY id DESC LIMIT 1"
)
INSERT_ROW = (
    "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease,"
    " value, expires) VALUES (:id, :name, :created, :deleted, :create_revision,"
    " :prev_revision, :lease, :value, :expires)"
)

# Compaction of the slice (lo, hi]: at compact revision hi a row may go once a row with
# id <= hi supersedes it — the predecessors of the slice's rows — and the slice's
# tombstones (the key is absent at hi). Both are primary-key range work, bounded by the slice.
COMPACT_PREDECESSORS = (
    "DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine"
    " WHERE id > :lo AND id <= :hi AND prev_revision > 0)"
)
COMPACT_TOMBSTONES = "DELETE FROM kine WHERE id > :lo AND id <= :hi AND deleted <> 0"

# Live TTL versions that are due: not deleted and not superseded (no row links to them).
EXPIRED_KEYS = (
    "SELECT k.name, k.id FROM kine AS k WHERE k.expires <= :now AND k.deleted = 0"
    " AND NOT EXISTS (SELECT 1 FROM kine AS n WHERE n.name = k.name AND n.prev_revision = k.id)"
    " LIMIT :limit"
)


def prefix_range(prefix: str, column: str, params: dict) -> str:
    """A WHERE fragment for keys starting with ``prefix``; adds its parameters."""
    if not prefix:
        return "1 = 1"
    params["lo"] = prefix
    upper = prefix_upper_bound(prefix)
    if upper is None:
        params["plen"] = len(prefix)
        return f"{column} >= :lo AND substr({column}, 1, :plen) = :lo"
    params["hi"] = upper
    return f"{column} >= :lo AND {column} < :hi"


def _latest_rows(prefix: str, revision: int, after: str | None) -> tuple[str, dict]:
    """FROM/WHERE selecting each key's version at ``revision`` that is live."""
    params: dict = {"rev": revision}
    where = prefix_range(prefix, "m.name", params)
    if after is not None:
        where += " AND m.name > :after"
        params["after"] = after
    sql = (
        f"FROM (SELECT MAX(m.id) AS id FROM kine AS m WHERE {where} AND m.id <= :rev"
        " GROUP BY m.name) AS latest JOIN kine AS k ON k.id = latest.id WHERE k.deleted = 0"
    )
    return sql, params


def list_query(prefix: str, revision: int, after: str | None, limit: int) -> tuple[str, dict]:
    """Live keys under prefix at revision, after ``after``, in key order (limit 0: all)."""
    sql, params = _latest_rows(prefix, revision, after)
    query = f"SELECT {K_COLUMNS} {sql} ORDER BY k.name"
    if limit > 0:
        query += " LIMIT :limit"
        params["limit"] = limit
    return query, params


def count_query(prefix: str, revision: int, after: str | None = None) -> tuple[str, dict]:
    sql, params = _latest_rows(prefix, revision, after)
    return f"SELECT COUNT(*) {sql}", params


def history_query(prefix: str, start: int, head: int, limit: int) -> tuple[str, dict]:
    """Rows with start <= id <= head under prefix, each with the row it superseded."""
    params: dict = {"start": start, "head": head, "limit": limit}
    where = prefix_range(prefix, "k.name", params)
    sql = (
        f"SELECT {K_COLUMNS}, {P_COLUMNS} FROM kine AS k LEFT JOIN kine AS p"
        " ON p.id = k.prev_revision WHERE k.id >= :start AND k.id <= :head"
        f" AND {where} ORDER BY k.id LIMIT :limit"
    )
    return sql, params


# Rows after :last in revision order (the PostgreSQL poller's feed).
ROWS_AFTER = (
    f"SELECT {K_COLUMNS}, {P_COLUMNS} FROM kine AS k LEFT JOIN kine AS p"
    " ON p.id = k.prev_revision WHERE k.id > :last ORDER BY k.id LIMIT :limit"
)
