"""An asyncio SPDY/3.1 session: streams multiplexed over one `ByteTransport`.

In every Kubernetes streaming exchange the client (kubectl, client-go) opens the streams and the
server only replies, so this session is built around accepting: `accept()` hands out each stream
the peer opened, already answered with an empty SYN_REPLY as the kubelet does (`auto_reply`).
Opening streams (`open_stream`) exists too, for tests and for being the client side.

Semantics, following moby/spdystream (the implementation on the other end):
- PINGs the peer started (odd ids from a client, even from a server) are echoed.
- A stream half-closes with FIN; `SpdyStream.read()` returns b"" after the peer's FIN or RST.
- GOAWAY from the peer stops new streams; the session ends when the transport does.
- Flow control: the receive side counts each stream's window and the session window and returns
  credit with WINDOW_UPDATE as the application consumes data. spdystream neither sends nor obeys
  WINDOW_UPDATE, so enforcing our *send* window would stall after 64 KiB; it is only enforced
  with `enforce_send_window=True` (for peers that implement SPDY/3.1 flow control).
- Back-pressure towards a peer that ignores windows comes from TCP: when one stream has
  `max_buffered` unread bytes, the session stops reading the transport until the application
  catches up (the same head-of-line behaviour as spdystream's unbuffered channels).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence

from k3py.agent.streaming.spdy_frames import (
    DEFAULT_INITIAL_WINDOW,
    GOAWAY_OK,
    RST_CANCEL,
    RST_INVALID_STREAM,
    RST_PROTOCOL_ERROR,
    RST_REFUSED_STREAM,
    RST_STREAM_ALREADY_CLOSED,
    SETTINGS_INITIAL_WINDOW_SIZE,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAwayFrame,
    Headers,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    SpdyProtocolError,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
    normalize_headers,
)
from k3py.agent.streaming.transport import ByteTransport

log = logging.getLogger(__name__)

MAX_DATA_FRAME = 128 * 1024


class StreamClosedError(ConnectionError):
    """Writing to a stream we already closed, that the peer reset, or whose session ended."""


class SpdyStream:
    """One bidirectional stream; its headers are those of the SYN_STREAM that opened it."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers) -> None:
        self.session = session
        self.stream_id = stream_id
        self.headers = headers
        self.replied = False
        self.reply_headers: Headers | None = None
        self.remote_closed = False
        self.local_closed = False
        self.reset_status: int | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._reply_received = asyncio.Event()
        self._unacked = 0  # bytes consumed but not yet returned to the peer as window
        self._discarding = False
        self.send_window = session.initial_send_window
        self._window_open = asyncio.Event()
        self._window_open.set()

    def header(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default

    def __repr__(self) -> str:
        return f"<SpdyStream {self.stream_id} {self.headers}>"

    # receiving ---------------------------------------------------------------------------
    def discard_input(self) -> None:
        """Drop unread and future data (nobody will read it), so the session keeps reading."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        self._drained.set()

    def _deliver(self, data: bytes) -> None:
        if self._discarding:
            return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered >= self.session.max_buffered:
                self._drained.clear()
        self._readable.set()

    def _finish_remote(self) -> None:
        self.remote_closed = True
        self._readable.set()
        self._drained.set()

    async def read(self) -> bytes:
        """The next chunk the peer sent; b"" after its FIN, a reset or the end of the session."""
        while not self._chunks:
            if self.remote_closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered < self.session.max_buffered:
            self._drained.set()
        await self._credit(len(data))
        return data

    async def _credit(self, consumed: int) -> None:
        # Return window once half of it is consumed, like SPDY/3.1 implementations do.
        self._unacked += consumed
        if self._unacked >= self.session.receive_window // 2 and not self.remote_closed:
            delta, self._unacked = self._unacked, 0
            with contextlib.suppress(ConnectionError):
                await self.session._send(WindowUpdateFrame(self.stream_id, delta))
        await self.session._credit_session(consumed)

    async def wait_reply(self) -> Headers:
        await self._reply_received.wait()
        if self.reset_status is not None:
            raise StreamClosedError(
                f"stream {self.stream_id} reset with status {self.reset_status}"
            )
        return self.reply_headers or {}

    # sending -----------------------------------------------------------------------------
    async def reply(
        self, headers: Mapping[str, str | Sequence[str]] | None = None, fin: bool = False
    ) -> None:
        if self.replied:
            return
        self.replied = True
        await self.session._send(
            SynReplyFrame(self.stream_id, normalize_headers(headers or {}), fin)
        )
        if fin:
            self._finish_local()

    async def write(self, data: bytes) -> None:
        if self.local_closed or self.reset_status is not None:
            raise StreamClosedError(f"stream {self.stream_id} is closed for writing")
        view = memoryview(data)
        while view:
            size = min(len(view), MAX_DATA_FRAME)
            if self.session.enforce_send_window:
                size = await self._reserve(size)
            await self.session._send(DataFrame(self.stream_id, bytes(view[:size])))
            view = view[size:]

    async def _reserve(self, wanted: int) -> int:
        while self.send_window <= 0:
            self._window_open.clear()
            await self._window_open.wait()
            if self.reset_status is not None or self.session.closed:
                raise StreamClosedError(f"stream {self.stream_id} closed while waiting for window")
        granted = min(wanted, self.send_window)
        self.send_window -= granted
        return granted

    async def close(self) -> None:
        """Half-close: send FIN. The peer may go on sending."""
        if self.local_closed or self.reset_status is not None:
            return
        if not self.replied and self.stream_id % 2 != self.session._own_parity:
            await self.reply(fin=True)
            return
        self._finish_local()
        with contextlib.suppress(ConnectionError):
            await self.session._send(DataFrame(self.stream_id, b"", fin=True))

    async def reset(self, status: int = RST_CANCEL) -> None:
        if self.reset_status is not None:
            return
        self.reset_status = status
        self.local_closed = True
        self._finish_remote()
        self.session._forget(self)
        with contextlib.suppress(ConnectionError):
            await self.session._send(RstStreamFrame(self.stream_id, status))

    def _finish_local(self) -> None:
        self.local_closed = True
        if self.remote_closed:
            self.session._forget(self)

    def _peer_reset(self, status: int) -> None:
        self.reset_status = status
        self.local_closed = True
        self._reply_received.set()
        self._window_open.set()
        self._finish_remote()


class SpdySession:
    """Runs the frame loop of one connection. Use as `async with SpdySession(t) as s:`."""

    def __init__(
        self,
        transport: ByteTransport,
        *,
        is_server: bool = True,
        auto_reply: bool = True,
        receive_window: int = DEFAULT_INITIAL_WINDOW,
        max_buffered: int = 256 * 1024,
        enforce_send_window: bool = False,
        idle_timeout: float | None = None,
    ) -> None:
        self.transport = transport
        self.is_server = is_server
        self.auto_reply = auto_reply
        self.receive_window = receive_window
        self.max_buffered = max_buffered
        self.enforce_send_window = enforce_send_window
        self.initial_send_window = DEFAULT_INITIAL_WINDOW
        self.closed = False
        self.goaway_received = False
        self._own_parity = 0 if is_server else 1
        self._next_stream_id = 2 if is_server else 1
        self._next_ping_id = 2 if is_server else 1
        self._last_peer_stream = 0
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder()
        self._write_lock = asyncio.Lock()
        self._session_unacked = 0
        self._reader_task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        # Like the kubelet's streaming-connection-idle-timeout: no frame either way for this
        # long closes the session.
        self.idle_timeout = idle_timeout
        self._last_activity = 0.0
        self._idle_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SpdySession:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._reader_task is None:
            self._last_activity = asyncio.get_running_loop().time()
            self._reader_task = asyncio.create_task(self._read_loop(), name="spdy-session-reader")
            if self.idle_timeout is not None:
                self._idle_task = asyncio.create_task(self._close_when_idle(self.idle_timeout))

    async def _close_when_idle(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            remaining = self._last_activity + timeout - loop.time()
            if remaining <= 0:
                log.info("closing SPDY session idle for %.0f s", timeout)
                await self.close()
                return
            await asyncio.sleep(remaining)

    # public API ----------------------------------------------------------------------------
    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened, or None once the session is over."""
        if self.done.is_set() and self._incoming.empty():
            return None
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # keep later callers from blocking too
        return stream

    async def open_stream(
        self, headers: Mapping[str, str | Sequence[str]], fin: bool = False
    ) -> SpdyStream:
        async with self._write_lock:
            if self.closed:
                raise StreamClosedError("session is closed")
            stream_id = self._next_stream_id
            self._next_stream_id += 2
            stream = SpdyStream(self, stream_id, normalize_headers(headers))
            stream.replied = True  # only the other side replies to this stream
            self._streams[stream_id] = stream
            await self._write_unlocked(SynStreamFrame(stream_id, stream.headers, fin=fin))
        if fin:
            stream.local_closed = True
        return stream

    async def ping(self, timeout: float = 10.0) -> None:
        ping_id = self._next_ping_id
        self._next_ping_id += 2
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = answered
        try:
            await self._send(PingFrame(ping_id))
            await asyncio.wait_for(answered, timeout)
        finally:
            self._pings.pop(ping_id, None)

    async def close(self, status: int = GOAWAY_OK) -> None:
        """Send GOAWAY, close the transport and stop the reader. Idempotent."""
        if not self.closed:
            with contextlib.suppress(ConnectionError, OSError):
                await self._send(GoAwayFrame(self._last_peer_stream, status))
            self.closed = True
            await self.transport.close()
        for task in (self._reader_task, self._idle_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._shutdown()

    async def wait_closed(self) -> None:
        await self.done.wait()

    # internals -----------------------------------------------------------------------------
    async def _send(self, frame: Frame) -> None:
        async with self._write_lock:
            await self._write_unlocked(frame)

    async def _write_unlocked(self, frame: Frame) -> None:
        if self.closed and not isinstance(frame, GoAwayFrame):
            raise StreamClosedError("session is closed")
        # Encoding happens under the lock: header compression state must follow wire order.
        data = self._encoder.encode(frame)
        self._last_activity = asyncio.get_running_loop().time()
        try:
            await self.transport.write(data)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise StreamClosedError(f"transport failed: {exc}") from exc

    async def _credit_session(self, consumed: int) -> None:
        self._session_unacked += consumed
        if self._session_unacked >= self.receive_window // 2 and not self.closed:
            delta, self._session_unacked = self._session_unacked, 0
            with contextlib.suppress(ConnectionError):
                await self._send(WindowUpdateFrame(0, delta))

    def _forget(self, stream: SpdyStream) -> None:
        self._streams.pop(stream.stream_id, None)

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self.transport.read()
                if not chunk:
                    break
                self._last_activity = asyncio.get_running_loop().time()
                for frame in self._decoder.feed(chunk):
                    await self._handle(frame)
        except SpdyProtocolError as exc:
            log.info("closing SPDY session after a protocol error: %s", exc)
            with contextlib.suppress(ConnectionError, OSError):
                await self._send(GoAwayFrame(self._last_peer_stream, 1))
        except StreamClosedError:
            pass
        finally:
            self.closed = True
            with contextlib.suppress(ConnectionError, OSError):
                await self.transport.close()
            self._shutdown()

    def _shutdown(self) -> None:
        self.closed = True
        for stream in list(self._streams.values()):
            stream._reply_received.set()
            stream._window_open.set()
            stream._finish_remote()
        self._streams.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(
                    StreamClosedError("session closed before the ping was answered")
                )
        if not self.done.is_set():
            self.done.set()
            self._incoming.put_nowait(None)

    async def _handle(self, frame: Frame) -> None:
        match frame:
            case DataFrame(stream_id, data, fin):
                stream = self._streams.get(stream_id)
                if stream is None:
                    await self._send(RstStreamFrame(stream_id, RST_INVALID_STREAM))
                    return
                if stream.remote_closed:
                    await stream.reset(RST_STREAM_ALREADY_CLOSED)
                    return
                stream._deliver(data)
                if fin:
                    self._remote_fin(stream)
                # Stop reading the transport while this stream's reader is behind.
                await stream._drained.wait()
            case SynStreamFrame():
                await self._on_syn_stream(frame)
            case SynReplyFrame(stream_id, headers, fin):
                stream = self._streams.get(stream_id)
                if stream is None:
                    return
                stream.reply_headers = headers
                stream._reply_received.set()
                if fin:
                    self._remote_fin(stream)
            case HeadersFrame(stream_id, _headers, fin):
                stream = self._streams.get(stream_id)
                if stream is not None and fin:
                    self._remote_fin(stream)
            case RstStreamFrame(stream_id, status):
                stream = self._streams.pop(stream_id, None)
                if stream is not None:
                    stream._peer_reset(status)
            case SettingsFrame(settings):
                if SETTINGS_INITIAL_WINDOW_SIZE in settings:
                    new_window = settings[SETTINGS_INITIAL_WINDOW_SIZE][1]
                    change = new_window - self.initial_send_window
                    self.initial_send_window = new_window
                    for stream in self._streams.values():
                        stream.send_window += change
                        if stream.send_window > 0:
                            stream._window_open.set()
            case PingFrame(ping_id):
                if ping_id % 2 == self._own_parity:
                    waiter = self._pings.get(ping_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                else:
                    await self._send(frame)
            case GoAwayFrame():
                self.goaway_received = True
            case WindowUpdateFrame(stream_id, delta):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream.send_window += delta
                    if stream.send_window > 0:
                        stream._window_open.set()

    async def _on_syn_stream(self, frame: SynStreamFrame) -> None:
        stream_id = frame.stream_id
        if stream_id % 2 == self._own_parity or stream_id <= self._last_peer_stream:
            # Ids the peer may not use, or that do not increase: refuse that stream.
            await self._send(RstStreamFrame(stream_id, RST_PROTOCOL_ERROR))
            return
        self._last_peer_stream = stream_id
        if self.goaway_received or self.closed:
            with contextlib.suppress(StreamClosedError):
                await self._send(RstStreamFrame(stream_id, RST_REFUSED_STREAM))
            return
        stream = SpdyStream(self, stream_id, frame.headers)
        self._streams[stream_id] = stream
        if frame.unidirectional:
            stream.local_closed = True
        if frame.fin:
            stream._finish_remote()
        if self.auto_reply and not frame.unidirectional:
            await stream.reply()
        self._incoming.put_nowait(stream)

    def _remote_fin(self, stream: SpdyStream) -> None:
        stream._finish_remote()
        if stream.local_closed:
            self._forget(stream)
