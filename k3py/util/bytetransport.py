"""Byte transports: the one interface the SPDY session and the upgrade handlers read and write.

A SPDY session runs over whatever carries its bytes: a TCP (or TLS) connection after an HTTP
`Upgrade: SPDY/3.1`, or the binary messages of a WebSocket (kubectl's port-forward tunnel,
subprotocol `SPDY/3.1+portforward.k8s.io`, puts SPDY bytes into WebSocket messages with no other
framing). `ByteTransport` hides the difference; adapters for asyncio streams and aiohttp
WebSockets live here, the aiohttp raw-upgrade adapter in `httpupgrade.py`. Shared by the
agent's streaming server and the API server's upgrade proxy, hence k3py/util.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from aiohttp import WSMsgType, web
from aiohttp.client_ws import ClientWebSocketResponse


class ByteTransport(Protocol):
    async def read(self) -> bytes:
        """The next chunk of bytes from the peer; b"" once the peer is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes (waits while the peer is slow)."""
        ...

    async def close(self) -> None:
        """Close the connection; idempotent."""
        ...


class StreamTransport:
    """asyncio (reader, writer) pair — plain or TLS TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(64 * 1024)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class WebSocketTransport:
    """A WebSocket whose binary messages carry an opaque byte stream (the port-forward tunnel).

    Works for both the server side (aiohttp `WebSocketResponse`) and the client side.
    Text messages are a protocol error and end the stream.
    """

    def __init__(self, ws: web.WebSocketResponse | ClientWebSocketResponse) -> None:
        self._ws = ws

    async def read(self) -> bytes:
        while True:
            try:
                message = await self._ws.receive()
            except TimeoutError:  # the WebSocket's idle timeout
                return b""
            if message.type == WSMsgType.BINARY:
                if message.data:
                    return bytes(message.data)
                continue
            if message.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            return b""

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.close()
