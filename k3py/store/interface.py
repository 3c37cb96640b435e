"""The one small interface every store backend implements (SQLite, PostgreSQL).

Semantics follow etcd v3 as Kubernetes uses it:

- ``create`` fails with KeyExistsError when the key is live.
- ``update`` and ``delete`` are compare-and-swap on the key's ``mod_revision``
  (``delete`` without an expected revision is unconditional); on a mismatch they return
  ``WriteResult(succeeded=False, kv=<current or None>)`` instead of raising.
- ``get``/``list`` at ``revision=None`` read the latest state; at a given revision they read
  history, raising CompactedError below the compact revision and FutureRevisionError above
  the current one.
- ``watch(prefix, start_revision)`` yields, in revision order, every event with revision
  >= ``start_revision`` (``start_revision=0`` means "from now on"), in batches. It raises
  CompactedError (before yielding anything) when ``start_revision`` is at or below the
  compact revision and history it needs is gone. Closing the async iterator (``aclose``)
  or cancelling the consuming task ends the watch.
- TTL keys (``ttl`` seconds) are deleted by the store once expired, as a normal DELETE event.
  An ``update`` without ``ttl`` makes the key permanent (as an etcd put without a lease).
- The empty store is at revision 1, so the first write is revision 2 (as etcd) and no list
  ever reports revision 0, which Kubernetes clients read as "any".
- ``list`` raises InvalidContinueTokenError for a token it did not issue (or one for another
  prefix) and CompactedError when the token's snapshot has been compacted (Kubernetes: 410).
- ``watch`` subscribes when called, not when first iterated: a watch "from now" opened before
  a write sees it. ``compact`` is a no-op when already compacted that far; backends also
  compact on their own, keeping five minutes of history by default.
- Bad input (empty or > MAX_KEY_BYTES key, > MAX_VALUE_BYTES value, negative ttl/limit)
  raises a ValueError subclass before anything is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from k3py.store.types import Event, KeyValue, ListResult, WriteResult


class Store(Protocol):
    async def start(self) -> None:
        """Open (creating if needed) the database and start background tasks."""

    async def close(self) -> None:
        """Flush pending writes, stop background tasks, close the database."""

    async def current_revision(self) -> int: ...

    async def compact_revision(self) -> int: ...

    async def create(self, key: str, value: bytes, ttl: int | None = None) -> KeyValue: ...

    async def update(
        self, key: str, value: bytes, expected_revision: int, ttl: int | None = None
    ) -> WriteResult: ...

    async def delete(self, key: str, expected_revision: int | None = None) -> WriteResult: ...

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None: ...

    async def list(
        self,
        prefix: str,
        revision: int | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> ListResult: ...

    async def count(self, prefix: str) -> tuple[int, int]:
        """Return (current revision, number of live keys under prefix)."""
        ...

    def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[list[Event]]: ...

    async def compact(self, revision: int) -> None: ...
