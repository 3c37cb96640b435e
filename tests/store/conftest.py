"""Fixtures for the store tests: SQLite stores, and a real PostgreSQL server on loopback.

The PostgreSQL server is started once per session as the ``postgres`` user (root may not
run it) in a temporary directory on a free loopback port, with fsync off (these tests check
semantics; durability is test_crash.py's job on SQLite). Every test gets its own database.
Missing PostgreSQL binaries FAIL the tests that need them — they are a required tool.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from k3py.store import Store
from k3py.store.postgres import PostgresStore
from k3py.store.sqlite import SqliteStore

PG_BIN = Path(os.environ.get("K3PY_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Base URL (no database) of a throwaway PostgreSQL 15 server on 127.0.0.1."""
    for tool in ("initdb", "pg_ctl", "postgres", "psql"):
        if not (PG_BIN / tool).exists():
            pytest.fail(f"PostgreSQL binary {PG_BIN / tool} is missing (apt install postgresql-15)")
    if shutil.which("runuser") is None:
        pytest.fail("runuser is missing; it is needed to run postgres as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="k3py-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    port = _free_port()
    started = False
    try:
        result = _as_postgres(
            str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"initdb failed: {result.stderr}")
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        result = _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if result.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            pytest.fail(f"pg_ctl start failed: {result.stderr}\n{log}")
        started = True
        yield f"postgres://postgres@127.0.0.1:{port}"
    finally:
        if started:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _psql(server: str, sql: str) -> None:
    result = subprocess.run(
        [str(PG_BIN / "psql"), f"{server}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"psql {sql!r} failed: {result.stderr}")


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped afterwards."""
    name = f"k3py_{uuid.uuid4().hex[:12]}"
    _psql(postgres_server, f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    _psql(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "store_options(**kwargs): constructor options for the `store` fixture"
    )


def make_postgres_store(url: str, **options: float) -> PostgresStore:
    options = {"maintenance_interval": 0.05, "poll_interval": 0.2, "gap_wait": 0.3, **options}
    return PostgresStore(url, **options)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "db" / "state.db", maintenance_interval=0.05)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The same behaviour test, once per backend (options from @pytest.mark.store_options)."""
    marker = request.node.get_closest_marker("store_options")
    options = dict(marker.kwargs) if marker else {}
    if request.param == "sqlite":
        options = {"maintenance_interval": 0.05, **options}
        backend: Store = SqliteStore(tmp_path / "db" / "state.db", **options)
    else:
        backend = make_postgres_store(request.getfixturevalue("postgres_url"), **options)
    await backend.start()
    try:
        yield backend
    finally:
        await asyncio.wait_for(backend.close(), 30)
