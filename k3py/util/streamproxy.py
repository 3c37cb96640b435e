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

It depends on nothing but aiohttp and `httpupgrade.RawUpgradeTransport`, which is why it lives
in k3py/util: the API server (which may not import k3py.agent) proxies pods/exec, attach and
portforward with it, and the agent's tests drive it against the real streaming server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable

import aiohttp
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


class UpstreamError(Exception):
    """The kubelet could not be reached or answered with something that is not HTTP."""


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
) -> web.StreamResponse:
    """Forward one upgrade request to the streaming server at host:port and pipe the result."""
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=server_hostname if ssl_context else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamError(f"cannot reach the streaming server at {host}:{port}: {exc}") from exc
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


async def proxy_streaming_get(
    request: web.Request,
    host: str,
    port: int,
    path_qs: str,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
) -> web.StreamResponse:
    """Forward a plain GET (container logs, possibly followed) and stream the body back as it
    arrives, with the streaming server's status and content type."""
    scheme = "https" if ssl_context else "http"
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context else False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            upstream = await session.get(
                f"{scheme}://{host}:{port}{path_qs}",
                server_hostname=server_hostname,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(
                f"cannot reach the streaming server at {host}:{port}: {exc}"
            ) from exc
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "text/plain")},
            )
            response.enable_chunked_encoding()
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response
