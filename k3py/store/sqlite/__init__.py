"""The embedded SQLite backend (the default)."""

from k3py.store.sqlite.backend import SqliteStore

__all__ = ["SqliteStore"]
