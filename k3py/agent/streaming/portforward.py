"""The port-forward protocol (`portforward.k8s.io`) over a SPDY session.

For every local connection kubectl opens two SPDY streams carrying the same `port` and
`requestid` headers: `streamtype: error` (kubectl half-closes it at once and only reads it) and
`streamtype: data` (the bytes of the forwarded TCP connection, FIN = that direction is done).
When both streams of a request are here the server connects to the port and pipes bytes; a
failure is written as text to the error stream, which is then closed, as the kubelet does.

The same session runs either over a plain `Upgrade: SPDY/3.1` connection or inside the binary
messages of a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io` (see `transport.py`).

Older WebSocket clients (the official Python client) use the channel protocol instead
(`v4.channel.k8s.io` or no subprotocol): the ports come from the `port`/`ports` query, port i
has data channel 2i and error channel 2i+1, the server first sends each channel its port as two
little-endian bytes, and there is exactly one connection per port per WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from k3py.agent.streaming.backend import InputStream, OutputStream, StreamingError
from k3py.agent.streaming.bytequeue import ByteQueue
from k3py.agent.streaming.spdy_session import SpdySession, SpdyStream, StreamClosedError

log = logging.getLogger(__name__)

PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
WEBSOCKET_TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
WEBSOCKET_CHANNEL_PROTOCOL = "v4.channel.k8s.io"
PAIR_CREATION_TIMEOUT = 30.0
CLIENT_GONE_LINGER = 1.0  # seconds forwarded connections get to finish once the client left

Forward = Callable[[int, InputStream, OutputStream], Awaitable[None]]


def parse_port(value: str) -> int:
    """A port header or query value; raises ValueError with a user-facing message."""
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"invalid port {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} must be between 1 and 65535")
    return port


def parse_ports(values: list[str]) -> list[int]:
    """The ports of a WebSocket port-forward query (`port=80&port=443` or `ports=80,443`)."""
    ports: list[int] = []
    for value in values:
        for item in value.split(","):
            ports.append(parse_port(item.strip()))
    if not ports:
        raise ValueError('query parameter "port" is required')
    return ports


@dataclass
class _Pair:
    request_id: str
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


async def serve_port_forward(session: SpdySession, pod_description: str, forward: Forward) -> None:
    """Serve every stream pair the client opens until it hangs up; closes the session."""
    pairs: dict[str, _Pair] = {}
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def expire(pair: _Pair) -> None:
        # Only one stream of the pair arrived: tell the client on whichever stream we have.
        if pairs.pop(pair.request_id, None) is not None:
            spawn(_fail_incomplete(pair))

    try:
        while (stream := await session.accept()) is not None:
            request_id = stream.header("requestid") or str(stream.stream_id)
            kind = stream.header("streamtype")
            if kind not in ("error", "data"):
                log.info(
                    "port-forward: resetting stream %d of unknown type %r", stream.stream_id, kind
                )
                await stream.reset()
                continue
            pair = pairs.get(request_id)
            if pair is None:
                pair = pairs[request_id] = _Pair(request_id)
                pair.timer = loop.call_later(PAIR_CREATION_TIMEOUT, expire, pair)
            if getattr(pair, kind) is not None:
                await stream.reset()
                continue
            setattr(pair, kind, stream)
            if pair.error is not None and pair.data is not None:
                del pairs[request_id]
                if pair.timer is not None:
                    pair.timer.cancel()
                spawn(_forward_pair(pair.error, pair.data, pod_description, forward))
    finally:
        for pair in pairs.values():
            if pair.timer is not None:
                pair.timer.cancel()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()


async def _fail_incomplete(pair: _Pair) -> None:
    message = f"timeout waiting for both streams of port-forward request {pair.request_id}"
    for stream in (pair.error, pair.data):
        if stream is not None:
            with contextlib.suppress(StreamClosedError):
                if stream is pair.error:
                    await stream.write(message.encode())
                await stream.close()


async def _forward_pair(
    error: SpdyStream, data: SpdyStream, pod_description: str, forward: Forward
) -> None:
    port_text = data.header("port")
    try:
        port = parse_port(port_text)
        await forward(port, data, data)
    except (ValueError, StreamingError, OSError) as exc:
        message = f"error forwarding port {port_text} to pod {pod_description}: {exc}"
        log.info("%s", message)
        with contextlib.suppress(StreamClosedError):
            await error.write(message.encode())
    except StreamClosedError:
        pass  # the client went away mid-transfer
    finally:
        await data.close()
        await error.close()


class _ChannelOutput:
    def __init__(self, ws: web.WebSocketResponse, channel: int) -> None:
        self._ws = ws
        self._prefix = bytes([channel])

    async def write(self, data: bytes) -> None:
        try:
            await self._ws.send_bytes(self._prefix + data)
        except (ConnectionError, RuntimeError) as exc:
            raise StreamClosedError(f"websocket closed: {exc}") from exc


async def serve_port_forward_channels(
    ws: web.WebSocketResponse, ports: list[int], pod_description: str, forward: Forward
) -> None:
    """The channel flavour of WebSocket port-forward; closes the WebSocket when all ports are done."""
    inputs = [ByteQueue() for _ in ports]
    try:
        # Each channel first carries its port (little-endian u16): the client checks it.
        for index, port in enumerate(ports):
            for channel in (2 * index, 2 * index + 1):
                await _ChannelOutput(ws, channel).write(port.to_bytes(2, "little"))
    except StreamClosedError:
        await ws.close()
        return

    async def run_port(index: int, port: int) -> None:
        data_out = _ChannelOutput(ws, 2 * index)
        error_out = _ChannelOutput(ws, 2 * index + 1)
        try:
            await forward(port, inputs[index], data_out)
        except (ValueError, StreamingError, OSError) as exc:
            message = f"error forwarding port {port} to pod {pod_description}: {exc}"
            log.info("%s", message)
            with contextlib.suppress(StreamClosedError):
                await error_out.write(message.encode())

    async def read_client() -> None:
        try:
            await dispatch()
        except TimeoutError:
            log.info("closing idle port-forward WebSocket")
        finally:
            for channel_input in inputs:
                channel_input.end()

    async def dispatch() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                data: bytes = message.data
            elif message.type == WSMsgType.TEXT:
                data = message.data.encode()
            else:
                continue
            if not data:
                continue
            channel = data[0]
            if channel % 2 == 0 and channel // 2 < len(inputs) and len(data) > 1:
                await inputs[channel // 2].put(data[1:])

    reader = asyncio.create_task(read_client())
    forwarding = asyncio.ensure_future(
        asyncio.gather(*(run_port(index, port) for index, port in enumerate(ports)))
    )
    try:
        await asyncio.wait({reader, forwarding}, return_when=asyncio.FIRST_COMPLETED)
        if not forwarding.done():
            # The WebSocket is gone (this protocol has no half-close): nobody can read what the
            # pod would still send, so its connections end now rather than when it hangs up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(forwarding), CLIENT_GONE_LINGER)
    finally:
        for task in (forwarding, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamClosedError):
                await task
        await ws.close(code=1000)
