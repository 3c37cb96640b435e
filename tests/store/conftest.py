"""Fixtures for the store tests: a fresh SQLite store per test (PostgreSQL added below)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.store.sqlite import SqliteStore


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "db" / "state.db", maintenance_interval=0.05)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
