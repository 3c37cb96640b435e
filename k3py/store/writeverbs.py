"""The write verbs every backend shares: check the input, then hand the write to its writer.

A backend's writer batches writes into one transaction (group commit) and runs each submitted
function with its transaction object, which offers ``create``, ``update`` and ``delete`` with
the same arguments in every dialect. Only how the writer commits differs between backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from k3py.store.keys import check_key, check_ttl, check_value
from k3py.store.types import KeyValue, WriteResult


class WriteVerbs:
    """Mixin for a backend whose ``_w()`` returns its writer (``submit(fn) -> Future``)."""

    def _w(self) -> Any:
        raise NotImplementedError

    def _submit(self, fn: Callable[[Any], Any]) -> asyncio.Future:
        return self._w().submit(fn)

    async def create(self, key: str, value: bytes, ttl: int | None = None) -> KeyValue:
        check_key(key)
        check_value(value)
        lease = check_ttl(ttl)
        value = bytes(value)
        return await self._submit(lambda t: t.create(key, value, lease))

    async def update(
        self, key: str, value: bytes, expected_revision: int, ttl: int | None = None
    ) -> WriteResult:
        check_key(key)
        check_value(value)
        lease = check_ttl(ttl)
        value = bytes(value)
        return await self._submit(lambda t: t.update(key, value, lease, expected_revision))

    async def delete(self, key: str, expected_revision: int | None = None) -> WriteResult:
        check_key(key)
        return await self._submit(lambda t: t.delete(key, expected_revision))
