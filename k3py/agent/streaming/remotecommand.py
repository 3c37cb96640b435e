"""The remotecommand protocols (exec and attach) over SPDY and over WebSocket.

Both carry the same five logical streams: stdin, stdout, stderr, error (the final Status) and
resize (terminal sizes as a sequence of JSON objects `{"Width":w,"Height":h}`).

SPDY (`X-Stream-Protocol-Version` v5/v4/v3/v2.channel.k8s.io): the client opens one SPDY stream
per logical stream, named by its `streamtype` header; the server waits for exactly the streams
the query asked for, plus error, plus resize for a tty (v3+). stdin ends with the client's FIN.
v4 and v5 report the result on the error stream as a metav1.Status JSON (exit code in
details.causes[reason=ExitCode]); v2/v3 write only an error text there.

WebSocket (subprotocol v5/v4.channel.k8s.io): binary messages whose first byte is the channel:
0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize; v5 adds 255 = "close channel N" (kubectl
sends [255, 0] at stdin EOF). The server sends the Status on channel 3 and closes with 1000.
Older subprotocols are served as the kubelet does: `v4.base64.channel.k8s.io` (text messages,
channel as an ASCII digit, base64 data), and the pre-v4 `channel.k8s.io` / `base64.channel.k8s.io`
(or no subprotocol) whose error channel carries only an error text.

Who runs the command is not this module's business: the handlers take a `run(streams)` callable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import WSMessage, WSMsgType, web

from k3py.agent.streaming.backend import ExecStreams, InputStream, StreamingError, TerminalSize
from k3py.agent.streaming.bytequeue import ByteQueue
from k3py.agent.streaming.spdy_session import SpdySession, SpdyStream, StreamClosedError

log = logging.getLogger(__name__)

PROTOCOL_V5 = "v5.channel.k8s.io"
PROTOCOL_V4 = "v4.channel.k8s.io"
PROTOCOL_V3 = "v3.channel.k8s.io"
PROTOCOL_V2 = "v2.channel.k8s.io"
SPDY_PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4, PROTOCOL_V3, PROTOCOL_V2)
PROTOCOL_V4_BASE64 = "v4.base64.channel.k8s.io"
PROTOCOL_V1 = "channel.k8s.io"
PROTOCOL_V1_BASE64 = "base64.channel.k8s.io"
WEBSOCKET_PROTOCOLS = (
    PROTOCOL_V5,
    PROTOCOL_V4,
    PROTOCOL_V4_BASE64,
    PROTOCOL_V1,
    PROTOCOL_V1_BASE64,
)
STATUS_PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)
STATUS_WEBSOCKET_PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4, PROTOCOL_V4_BASE64)

CHANNEL_STDIN = 0
CHANNEL_STDOUT = 1
CHANNEL_STDERR = 2
CHANNEL_ERROR = 3
CHANNEL_RESIZE = 4
CHANNEL_CLOSE = 255

STREAM_CREATION_TIMEOUT = 30.0
# After the result is sent, how long to wait for the client to hang up before we do; closing
# with unread input pending would make the kernel reset the connection and lose our output.
CLIENT_HANGUP_GRACE = 2.0

RunCommand = Callable[[ExecStreams], Awaitable[int | None]]


class BadRequestError(ValueError):
    """The client's request is malformed; reported as a 400 Status before any upgrade."""


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool spellings of true


def query_flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "") in _TRUE


@dataclass(frozen=True)
class ExecOptions:
    """The query of an exec/attach request (`command` empty for attach)."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    command: list[str]
    container: str | None

    @classmethod
    def from_query(
        cls, query: Mapping[str, str], commands: list[str], require_command: bool
    ) -> ExecOptions:
        stdin, stdout, stderr, tty = (
            query_flag(query, name) for name in ("stdin", "stdout", "stderr", "tty")
        )
        if tty and stderr:
            stderr = False  # a terminal merges stderr into stdout, as the kubelet does
        if not (stdin or stdout or stderr):
            raise BadRequestError("you must specify at least 1 of stdin, stdout, stderr")
        if require_command and not commands:
            raise BadRequestError("you must specify at least one command for the container")
        return cls(stdin, stdout, stderr, tty, list(commands), query.get("container") or None)

    def stream_types(self, protocol: str) -> set[str]:
        wanted = {"error"}
        for name, enabled in (
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
        ):
            if enabled:
                wanted.add(name)
        if self.tty and protocol != PROTOCOL_V2:
            wanted.add("resize")
        return wanted


def status_for(exit_code: int | None, command: list[str]) -> dict[str, object]:
    """The metav1.Status the v4/v5 error channel carries for a finished command."""
    if not exit_code:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {command}, "
        f"exit code {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def status_for_error(error: BaseException) -> dict[str, object]:
    message = str(error) or type(error).__name__
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


class ResizeDecoder:
    """Splits a byte stream of concatenated JSON objects into terminal sizes."""

    def __init__(self) -> None:
        self._text = ""
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        self._text += data.decode("utf-8", errors="replace")
        sizes: list[TerminalSize] = []
        while True:
            stripped = self._text.lstrip()
            if not stripped:
                self._text = ""
                return sizes
            try:
                value, end = self._json.raw_decode(stripped)
            except json.JSONDecodeError:
                self._text = stripped
                if len(stripped) > 4096:  # never a size; drop the garbage
                    self._text = ""
                return sizes
            self._text = stripped[end:]
            if isinstance(value, dict):
                width, height = value.get("Width", 0), value.get("Height", 0)
                if isinstance(width, int) and isinstance(height, int):
                    sizes.append(TerminalSize(width, height))


async def _run_reporting(
    run: RunCommand, streams: ExecStreams
) -> tuple[int | None, BaseException | None]:
    try:
        return await run(streams), None
    except (StreamingError, OSError) as exc:
        return None, exc


# --- SPDY -----------------------------------------------------------------------------------


async def collect_spdy_streams(
    session: SpdySession, wanted: set[str], timeout: float = STREAM_CREATION_TIMEOUT
) -> dict[str, SpdyStream]:
    """Wait for the client to open one stream of each wanted type (others are reset)."""
    streams: dict[str, SpdyStream] = {}

    async def gather() -> None:
        while set(streams) != wanted:
            stream = await session.accept()
            if stream is None:
                raise StreamClosedError("connection closed before all streams were created")
            kind = stream.header("streamtype")
            if kind not in wanted or kind in streams:
                log.info("resetting unexpected %r stream %d", kind, stream.stream_id)
                await stream.reset()
                continue
            streams[kind] = stream

    try:
        await asyncio.wait_for(gather(), timeout)
    except TimeoutError as exc:
        raise StreamClosedError(
            f"timed out waiting for streams {sorted(wanted - set(streams))}"
        ) from exc
    return streams


async def serve_spdy(
    session: SpdySession, protocol: str, options: ExecOptions, run: RunCommand
) -> None:
    """Run one exec/attach over an upgraded SPDY connection; closes the session when done."""
    try:
        streams = await collect_spdy_streams(session, options.stream_types(protocol))
    except StreamClosedError as exc:
        log.info("exec over SPDY abandoned: %s", exc)
        await session.close()
        return
    exec_streams = ExecStreams(
        stdin=streams.get("stdin"),
        stdout=streams.get("stdout"),
        stderr=streams.get("stderr"),
        tty=options.tty,
    )
    resize_task = None
    if "resize" in streams:
        resize_task = asyncio.create_task(_pump_spdy_resize(streams["resize"], exec_streams.resize))
    runner = asyncio.create_task(_run_reporting(run, exec_streams))
    hangup = asyncio.create_task(session.wait_closed())
    try:
        await asyncio.wait({runner, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            # The client is gone: stop the command (the backend cleans up on cancellation).
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            return
        exit_code, error = runner.result()
        if "stdin" in streams:
            streams["stdin"].discard_input()  # input nobody will read must not stall the session
        await _report_spdy(streams["error"], protocol, options, exit_code, error)
        for kind in ("stdout", "stderr", "error"):
            if kind in streams:
                await streams[kind].close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(hangup), CLIENT_HANGUP_GRACE)
    finally:
        for task in (resize_task, hangup, runner):
            if task is not None and not task.done():
                task.cancel()
        exec_streams.resize.put_nowait(None)
        await session.close()


async def _report_spdy(
    error_stream: SpdyStream,
    protocol: str,
    options: ExecOptions,
    exit_code: int | None,
    error: BaseException | None,
) -> None:
    with contextlib.suppress(StreamClosedError):
        if protocol in STATUS_PROTOCOLS:
            status = status_for_error(error) if error else status_for(exit_code, options.command)
            await error_stream.write(json.dumps(status).encode())
        elif error is not None:
            await error_stream.write(str(error).encode())
        elif exit_code:
            await error_stream.write(
                str(status_for(exit_code, options.command)["message"]).encode()
            )


async def _pump_spdy_resize(stream: InputStream, queue: asyncio.Queue[TerminalSize | None]) -> None:
    decoder = ResizeDecoder()
    while data := await stream.read():
        for size in decoder.feed(data):
            queue.put_nowait(size)


# --- WebSocket ------------------------------------------------------------------------------


class ChannelCodec:
    """How one WebSocket subprotocol frames channel data.

    Binary protocols: a binary message = channel byte + raw data (text frames are read the same
    way, as the Python client sends str payloads as text). base64 protocols: a text message =
    ASCII digit of the channel + base64 of the data.
    """

    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol or ""
        self.base64 = "base64" in self.protocol

    async def send(self, ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
        try:
            if self.base64:
                await ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
            else:
                await ws.send_bytes(bytes([channel]) + data)
        except (ConnectionError, RuntimeError) as exc:
            raise StreamClosedError(f"websocket closed: {exc}") from exc

    def decode(self, message: WSMessage) -> tuple[int, bytes] | None:
        """(channel, data) of a client message; None for anything else or undecodable."""
        if message.type == WSMsgType.BINARY:
            raw: bytes = message.data
        elif message.type == WSMsgType.TEXT:
            raw = message.data.encode()
        else:
            return None
        if not raw:
            return None
        if not self.base64:
            return raw[0], raw[1:]
        try:
            return raw[0] - ord("0"), base64.b64decode(raw[1:], validate=True)
        except ValueError:
            log.info("dropping a malformed base64 WebSocket message")
            return None


class _WebSocketOutput:
    def __init__(self, ws: web.WebSocketResponse, codec: ChannelCodec, channel: int) -> None:
        self._ws = ws
        self._codec = codec
        self._channel = channel

    async def write(self, data: bytes) -> None:
        if data:
            await self._codec.send(self._ws, self._channel, data)


async def serve_websocket(ws: web.WebSocketResponse, options: ExecOptions, run: RunCommand) -> None:
    """Run one exec/attach over a prepared WebSocket (any of WEBSOCKET_PROTOCOLS, or none)."""
    codec = ChannelCodec(ws.ws_protocol)
    stdin = ByteQueue() if options.stdin else None
    exec_streams = ExecStreams(
        stdin=stdin,
        stdout=_WebSocketOutput(ws, codec, CHANNEL_STDOUT) if options.stdout else None,
        stderr=_WebSocketOutput(ws, codec, CHANNEL_STDERR) if options.stderr else None,
        tty=options.tty,
    )
    # Like the kubelet: an empty message on the lowest writable channel says "connected".
    first_channel = (
        CHANNEL_STDOUT if options.stdout else CHANNEL_STDERR if options.stderr else CHANNEL_ERROR
    )
    with contextlib.suppress(StreamClosedError):
        await codec.send(ws, first_channel, b"")
    reader = asyncio.create_task(_read_websocket(ws, codec, stdin, exec_streams.resize))
    runner = asyncio.create_task(_run_reporting(run, exec_streams))
    try:
        await asyncio.wait({runner, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            runner.cancel()  # client went away
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            return
        exit_code, error = runner.result()
        with contextlib.suppress(StreamClosedError):
            if codec.protocol in STATUS_WEBSOCKET_PROTOCOLS:
                status = (
                    status_for_error(error) if error else status_for(exit_code, options.command)
                )
                await codec.send(ws, CHANNEL_ERROR, json.dumps(status).encode())
            elif error is not None or exit_code:
                text = (
                    str(error) if error else str(status_for(exit_code, options.command)["message"])
                )
                await codec.send(ws, CHANNEL_ERROR, text.encode())
    finally:
        # Also reached when this handler is cancelled (server shutdown): stop the command too.
        for task in (runner, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        exec_streams.resize.put_nowait(None)
        await ws.close(code=1000)


async def _read_websocket(
    ws: web.WebSocketResponse,
    codec: ChannelCodec,
    stdin: ByteQueue | None,
    resize: asyncio.Queue[TerminalSize | None],
) -> None:
    """Route each client message to stdin, resize or the v5 close signal until the client leaves."""
    decoder = ResizeDecoder()
    try:
        async for message in ws:
            decoded = codec.decode(message)
            if decoded is None:
                continue
            channel, payload = decoded
            if channel == CHANNEL_STDIN and stdin is not None:
                await stdin.put(payload)  # waits while the command is behind
            elif channel == CHANNEL_RESIZE:
                for size in decoder.feed(payload):
                    resize.put_nowait(size)
            elif channel == CHANNEL_CLOSE and codec.protocol == PROTOCOL_V5:
                if payload[:1] == bytes([CHANNEL_STDIN]) and stdin is not None:
                    stdin.end()
    except TimeoutError:
        log.info("closing idle exec/attach WebSocket")
    finally:
        if stdin is not None:
            stdin.end()
