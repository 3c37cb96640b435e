"""A bounded queue of byte chunks with an end: client input waiting for its consumer.

WebSocket messages arrive on one reader task and are consumed by the backend (a command's
stdin, a forwarded port). When the consumer falls behind by more than `limit` bytes, `put`
waits, so the reader stops reading the socket and TCP pushes back on the client — the same
back-pressure the kubelet gets from its pipes. `read()` is the `InputStream` side.
"""

from __future__ import annotations

import asyncio
from collections import deque

DEFAULT_LIMIT = 1024 * 1024


class ByteQueue:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self.ended = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, data: bytes) -> None:
        """Queue a chunk, first waiting while more than `limit` bytes are unread."""
        if self.ended or not data:
            return
        await self._writable.wait()
        if self.ended:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit:
            self._writable.clear()
        self._readable.set()

    def end(self) -> None:
        """No more input (EOF); readers get what is queued, then b""."""
        self.ended = True
        self._readable.set()
        self._writable.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self.ended:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size <= self._limit:
            self._writable.set()
        return data
