"""Choose a store backend from a datastore endpoint string."""

from __future__ import annotations

from pathlib import Path

from k3py.store.interface import Store


def open_store(endpoint: str, data_dir: Path, synchronous: str = "FULL") -> Store:
    raise NotImplementedError("no store backend yet")
