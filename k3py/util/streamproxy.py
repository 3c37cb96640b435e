"""Proxying a streaming upgrade to a kubelet: what the API server does for pods/exec and friends.

After the handshake every streaming protocol here is opaque bytes, so the proxy only has to
1. send the client's request line and its upgrade headers to the kubelet's streaming server
   (over TLS with the API server's kubelet-client certificate),
2. relay the kubelet's answer: a non-101 answer (404, 400, 403 Status) goes back as a normal
   response; a 101 goes back with the headers that complete the handshake (Upgrade,
   Sec-WebSocket-Accept — valid because the client's Sec-WebSocket-Key was passed on unchanged —,
   Sec-WebSocket-Protocol, X-Stream-Protocol-Version),
3. take over the client connection (`RawUpgradeTransport`) and copy bytes both ways until
   either side hangs up.

The connection to the streaming server (`connect_upstream`) is where trust is decided: the
caller's TLS context verifies the chain and the address dialled, and an optional `check_peer`
looks at the verified certificate (the API server checks that it names the pod's node) before
a single byte of the request is written — a server that fails either sees a handshake, nothing
more. Plain GETs (container logs) go over the same kind of connection (`open_streaming_get`,
a small HTTP/1.1 client) so the same checks happen first.

It depends on nothing but aiohttp and `httpupgrade.RawUpgradeTransport`, which is why it lives
in k3py/util: the API server (which may not import k3py.agent) proxies pods/exec, attach and
portforward with it, and the agent's tests drive it against the real streaming server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from k3py.util.bytetransport import ByteTransport, StreamTransport
from k3py.util.httpupgrade import RawUpgradeTransport

# Request headers the streaming server needs to negotiate; everything else stays behind.
FORWARDED_REQUEST_HEADERS = (
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "X-Stream-Protocol-Version",
)
# Response headers of a 101 that complete the client's handshake.
FORWARDED_UPGRADE_HEADERS = (
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "X-Stream-Protocol-Version",
)
MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 1024 * 1024
CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024

# Looks at the verified peer certificate (``SSLObject.getpeercert()``); returns why the peer is
# refused, or None to go on.
PeerCheck = Callable[[dict[str, Any] | None], str | None]


class UpstreamError(Exception):
    """The kubelet could not be reached, was not trusted, or answered with something that is
    not HTTP."""


async def connect_upstream(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    check_peer: PeerCheck | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to host:port, TLS-verified by ``ssl_context`` and ``check_peer``; nothing has
    been written on it yet. Every failure is an ``UpstreamError`` saying what went wrong."""
    where = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ssl_context, server_hostname=server_hostname if ssl_context else None
            ),
            timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        raise UpstreamError(f"tls: failed to verify the certificate of {where}: {reason}") from exc
    except ssl.SSLError as exc:
        raise UpstreamError(f"tls: handshake with {where} failed: {exc.reason or exc}") from exc
    except TimeoutError as exc:
        raise UpstreamError(f"cannot reach the streaming server at {where}: timed out") from exc
    except OSError as exc:
        raise UpstreamError(f"cannot reach the streaming server at {where}: {exc.strerror or exc}") from exc
    if check_peer is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        refusal = check_peer(ssl_object.getpeercert() if ssl_object is not None else None)
        if refusal is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            raise UpstreamError(f"tls: refusing the streaming server at {where}: {refusal}")
    return reader, writer


def _request_head(request: web.BaseRequest, path_qs: str, host: str) -> bytes:
    lines = [f"{request.method} {path_qs} HTTP/1.1", f"Host: {host}"]
    for name in FORWARDED_REQUEST_HEADERS:
        lines += [f"{name}: {value}" for value in request.headers.getall(name, [])]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    try:
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        _version, code, *_reason = status_line.split(" ", 2)
        status = int(code)
    except ValueError as exc:
        raise UpstreamError(f"malformed response from the streaming server: {head[:80]!r}") from exc
    headers = []
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return status, headers


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


async def proxy_streaming_upgrade(
    request: web.Request,
    host: str,
    port: int,
    path_qs: str,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    check_peer: PeerCheck | None = None,
) -> web.StreamResponse:
    """Forward one upgrade request to the streaming server at host:port and pipe the result."""
    reader, writer = await connect_upstream(host, port, ssl_context, server_hostname, check_peer)
    upstream = StreamTransport(reader, writer)
    try:
        writer.write(_request_head(request, path_qs, f"{host}:{port}"))
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise UpstreamError(f"the streaming server hung up: {exc}") from exc
        if len(head) > MAX_HEAD:
            raise UpstreamError("response head from the streaming server too large")
        status, headers = _parse_head(head[:-4])
        if status != 101:
            length = int(_header(headers, "Content-Length") or 0)
            body = await reader.readexactly(min(length, MAX_ERROR_BODY)) if length else b""
            content_type = _header(headers, "Content-Type") or "application/json"
            return web.Response(status=status, body=body, headers={"Content-Type": content_type})
        response = web.StreamResponse(status=101)
        for name in FORWARDED_UPGRADE_HEADERS:
            value = _header(headers, name)
            if value is not None:
                response.headers[name] = value
        response.force_close()
        client = RawUpgradeTransport(request)  # before the 101: see upgrade.accept_spdy
        await response.prepare(request)
        await _pipe_both_ways(client, upstream)
        return response
    finally:
        await upstream.close()


async def _pipe_both_ways(a: ByteTransport, b: ByteTransport) -> None:
    async def copy(source: ByteTransport, sink: ByteTransport) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read():
                await sink.write(data)

    tasks = [asyncio.create_task(copy(a, b)), asyncio.create_task(copy(b, a))]
    try:
        # Either side hanging up ends the exchange: half-open streaming sessions are useless.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await a.close()
        await b.close()


@dataclass
class UpstreamResponse:
    """The head of a streaming server's answer to a GET, and its body as it arrives."""

    status: int
    headers: list[tuple[str, str]]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    async def body(self) -> AsyncIterator[bytes]:
        """The body's bytes (chunked, Content-Length or until the connection closes)."""
        if (self.header("Transfer-Encoding") or "").lower().endswith("chunked"):
            async for data in _chunked(self.reader):
                yield data
            return
        length = self.header("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        while remaining is None or remaining > 0:
            data = await self.reader.read(READ_SIZE if remaining is None else min(READ_SIZE, remaining))
            if not data:
                return
            if remaining is not None:
                remaining -= len(data)
            yield data

    async def text(self, limit: int = MAX_ERROR_BODY) -> str:
        parts: list[bytes] = []
        size = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, UpstreamError):
            async for data in self.body():
                parts.append(data)
                size += len(data)
                if size >= limit:
                    break
        return b"".join(parts)[:limit].decode("utf-8", "replace")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise UpstreamError("malformed chunked body from the streaming server") from exc
        if size == 0:
            return  # trailers, if any, are not needed: the connection is not reused
        while size > 0:
            data = await reader.read(min(READ_SIZE, size))
            if not data:
                raise UpstreamError("the streaming server hung up in the middle of a chunk")
            size -= len(data)
            yield data
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readexactly(2)


async def open_streaming_get(
    host: str,
    port: int,
    path_qs: str,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    check_peer: PeerCheck | None = None,
) -> UpstreamResponse:
    """Send ``GET path_qs`` over a verified connection (``connect_upstream``) and read the
    answer's head; the caller streams ``body()`` and must ``close()``."""
    reader, writer = await connect_upstream(host, port, ssl_context, server_hostname, check_peer)
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        writer.write(
            f"GET {path_qs} HTTP/1.1\r\nHost: {host_header}\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError) as exc:
        writer.close()
        raise UpstreamError(f"the streaming server at {host}:{port} hung up: {exc}") from exc
    status, headers = _parse_head(head[:-4])
    return UpstreamResponse(status, headers, reader, writer)


async def proxy_streaming_get(
    request: web.Request,
    host: str,
    port: int,
    path_qs: str,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    check_peer: PeerCheck | None = None,
) -> web.StreamResponse:
    """Forward a plain GET (container logs, possibly followed) and stream the body back as it
    arrives, with the streaming server's status and content type."""
    upstream = await open_streaming_get(host, port, path_qs, ssl_context, server_hostname, check_peer)
    try:
        response = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": upstream.header("Content-Type") or "text/plain"},
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, UpstreamError):
            async for chunk in upstream.body():
                await response.write(chunk)
            await response.write_eof()
        return response
    finally:
        await upstream.close()
