"""HTTP upgrades to the streaming protocols inside an aiohttp handler.

Two kinds of upgrade reach the streaming routes:
- `Upgrade: websocket` with `Sec-WebSocket-Protocol` (remotecommand v5/v4 channels, or the
  port-forward SPDY tunnel): aiohttp's `WebSocketResponse` does the handshake; we only make sure
  a protocol we speak was offered, so that kubectl falls back to SPDY instead of misbehaving.
- `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version`: aiohttp has no SPDY support, so after a
  hand-made `101 Switching Protocols` the connection is taken over as raw bytes
  (`RawUpgradeTransport`), the same way aiohttp itself takes a connection over for WebSockets:
  a payload parser installed on the request's protocol receives every later byte.

Negotiation follows k8s.io/apimachinery httpstream.Handshake: the first client protocol the
server supports wins and is echoed in `X-Stream-Protocol-Version`; no match is a 403.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiohttp import web

from k3py.util.bytetransport import ByteTransport

STREAM_PROTOCOL_HEADER = "X-Stream-Protocol-Version"
SPDY_UPGRADE = "SPDY/3.1"
# Clients send at most 1 MiB per message (kubectl 32 KiB, the Python client's port-forward 1 MiB).
MAX_WEBSOCKET_MESSAGE = 16 * 1024 * 1024
# How long closing waits for the client's close frame (kubectl answers at once; a stuck client
# must not hold up the end of an exec or a server shutdown).
CLOSE_HANDSHAKE_TIMEOUT = 2.0


def wants_websocket(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def wants_spdy(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == SPDY_UPGRADE.lower()


def _connection_upgrade(request: web.BaseRequest) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in tokens


def client_protocols(request: web.BaseRequest, header: str) -> list[str]:
    """All values of a (possibly repeated, comma-separated) protocol header, in client order."""
    values: list[str] = []
    for raw in request.headers.getall(header, []):
        values += [v.strip() for v in raw.split(",") if v.strip()]
    return values


def negotiate(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


class UpgradeRefused(Exception):
    """The upgrade request cannot be honoured; `status`/`reason` say how to answer it."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def check_websocket(request: web.BaseRequest, supported: Sequence[str]) -> str:
    """The subprotocol to accept, or UpgradeRefused (400) so the client can fall back."""
    offered = client_protocols(request, "Sec-WebSocket-Protocol")
    chosen = negotiate(offered, supported)
    if chosen is None:
        raise UpgradeRefused(
            400,
            "BadRequest",
            f"unable to upgrade: unsupported websocket subprotocols {offered}; "
            f"server supports {list(supported)}",
        )
    return chosen


async def accept_websocket(
    request: web.Request, protocol: str | None, idle_timeout: float | None = None
) -> web.WebSocketResponse:
    """Complete the WebSocket handshake. Receiving nothing (not even a ping; kubectl pings every
    5 s and aiohttp answers) for `idle_timeout` seconds ends the connection."""
    protocols = (protocol,) if protocol else ()
    ws = web.WebSocketResponse(
        protocols=protocols,
        max_msg_size=MAX_WEBSOCKET_MESSAGE,
        autoping=True,
        receive_timeout=idle_timeout,
        timeout=CLOSE_HANDSHAKE_TIMEOUT,
    )
    await ws.prepare(request)
    return ws


class _RawFeed:
    """The payload parser aiohttp hands every byte to once the connection is upgraded."""

    def __init__(self, transport: RawUpgradeTransport) -> None:
        self._owner = transport

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._owner._received(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._owner._received(b"")

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        self._owner._received(b"")


class RawUpgradeTransport:
    """The raw bytes of an HTTP connection after `101 Switching Protocols` (a `ByteTransport`)."""

    HIGH_WATER = 1 << 20

    def __init__(self, request: web.Request) -> None:
        self._request = request
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost before the upgrade")
        self._transport = transport
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffered = 0
        self._paused = False
        self._eof = False
        request.protocol.set_parser(_RawFeed(self))  # type: ignore[arg-type]

    def _received(self, data: bytes) -> None:
        if self._eof:
            return
        if not data:
            self._eof = True
        self._buffered += len(data)
        self._chunks.put_nowait(data)
        if self._buffered > self.HIGH_WATER and not self._paused:
            self._paused = True
            with contextlib.suppress(RuntimeError, AttributeError):
                self._transport.pause_reading()

    async def read(self) -> bytes:
        if self._eof and self._chunks.empty():
            return b""
        data = await self._chunks.get()
        self._buffered -= len(data)
        if self._paused and self._buffered < self.HIGH_WATER // 2:
            self._paused = False
            with contextlib.suppress(RuntimeError, AttributeError):
                self._transport.resume_reading()
        if not data:
            self._chunks.put_nowait(b"")
        return data

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._transport.write(data)
        # aiohttp's protocol implements asyncio flow control; wait while the client is slow.
        drain = getattr(self._request.protocol, "_drain_helper", None)
        if drain is not None:
            await drain()

    async def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()
        self._received(b"")


async def accept_spdy(
    request: web.Request, supported: Sequence[str]
) -> tuple[str, ByteTransport, web.StreamResponse]:
    """Answer 101 to an `Upgrade: SPDY/3.1` request.

    Returns the negotiated protocol, the connection's raw bytes, and the response object the
    handler must return once it is done with the connection.
    """
    if not wants_spdy(request) or not _connection_upgrade(request):
        raise UpgradeRefused(
            400, "BadRequest", "unable to upgrade: missing upgrade headers in request"
        )
    offered = client_protocols(request, STREAM_PROTOCOL_HEADER)
    chosen = negotiate(offered, supported)
    if chosen is None:
        raise UpgradeRefused(
            403,
            "Forbidden",
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server supports {list(supported)}",
        )
    response = web.StreamResponse(
        status=101,
        headers={"Connection": "Upgrade", "Upgrade": SPDY_UPGRADE, STREAM_PROTOCOL_HEADER: chosen},
    )
    response.force_close()
    # Take the connection over *before* the 101 goes out: the client's first frame may arrive
    # while prepare() waits to drain, and must not reach aiohttp's HTTP parser.
    transport = RawUpgradeTransport(request)
    await response.prepare(request)
    return chosen, transport, response
