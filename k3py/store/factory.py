"""Choose a store backend from a datastore endpoint string.

``data_dir`` is the store's own directory (the server passes ``<data-dir>/db``, k3s's layout).
``""`` → SQLite at ``<data_dir>/state.db``; ``sqlite://<path>`` → SQLite at that path (relative
paths are under data_dir; kine-style query parameters are ignored);
``postgres://`` / ``postgresql://`` → the PostgreSQL backend (several servers, one database).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from k3py.store.interface import Store
from k3py.store.types import StoreError


def open_store(endpoint: str, data_dir: Path, synchronous: str = "FULL") -> Store:
    endpoint = (endpoint or "").strip()
    if not endpoint or endpoint.startswith("sqlite:"):
        from k3py.store.sqlite import SqliteStore

        rest = endpoint[len("sqlite:") :] if endpoint else ""
        rest = rest.removeprefix("//").split("?", 1)[0]
        path = Path(rest) if rest else Path("state.db")
        if not path.is_absolute():
            path = Path(data_dir) / path
        return SqliteStore(path, synchronous)
    scheme = urlsplit(endpoint).scheme.lower()
    if scheme in ("postgres", "postgresql"):
        try:
            from k3py.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL datastore needs asyncpg ({exc}): pip install 'k3py[postgres]'"
            ) from None

        return PostgresStore(endpoint)
    raise ValueError(
        f"unsupported datastore endpoint {endpoint!r}: use sqlite://<path> or postgres://..."
    )
