"""Bounded growth: automatic compaction and WAL checkpoints keep the file small."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from k3py.store.sqlite import SqliteStore

MB = 1024 * 1024


def file_size_with_wal(path: Path) -> int:
    return sum(
        os.path.getsize(p) for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


async def test_200k_updates_to_100_keys_stay_under_50_mb(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    # Short retention so the test runs in seconds; the defaults are 5 minutes / 30 s.
    store = SqliteStore(
        path, "NORMAL", retention=0.5, compact_interval=0.25, maintenance_interval=0.05
    )
    await store.start()
    value = os.urandom(512)  # 200k x 512 B = ~100 MB of values written in total
    updates_per_key = 2000

    async def churn(key: str) -> None:
        kv = await store.create(key, value)
        for _ in range(updates_per_key - 1):
            result = await store.update(key, value, kv.mod_revision)
            assert result.succeeded
            kv = result.kv

    try:
        await asyncio.gather(*(churn(f"/registry/leases/kube-node-lease/n{i}") for i in range(100)))
        current = await store.current_revision()
        assert current == 1 + 100 * updates_per_key
        compacted = await store.compact_revision()
        assert compacted > current // 2, "automatic compaction did not keep up"
        assert len((await store.list("/registry/leases/")).items) == 100
        size = file_size_with_wal(path)
        assert size < 50 * MB, f"database grew to {size / MB:.1f} MB"
    finally:
        await store.close()
    assert file_size_with_wal(path) < 50 * MB
