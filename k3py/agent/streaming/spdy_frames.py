"""SPDY/3.1 frame codec: the wire format kubectl's exec/attach/port-forward fallback speaks.

Kubernetes multiplexes streams over SPDY/3.1 (moby/spdystream on both ends). This module is the
pure, I/O-free half of that: frame types as dataclasses, an incremental decoder fed arbitrary byte
chunks (a TCP read or one WebSocket message of the port-forward tunnel), and an encoder.

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with the fixed SPDY/3 dictionary,
and the compression context is *per connection and per direction*: one long-lived zlib stream for
everything we send and one for everything we receive, each block ending on a Z_SYNC_FLUSH boundary.
So one `FrameEncoder` and one `FrameDecoder` belong to exactly one connection.

Uncompressed header block: u32 count, then per pair u32 name length, name (lowercase), u32 value
length, value (several values joined by NUL). Control frame: 1 bit control, 15 bits version (3),
16 bits type, 8 bits flags, 24 bits length. Data frame: 0 bit, 31 bits stream id, flags, length.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

SPDY_VERSION = 3
MAX_FRAME_PAYLOAD = (1 << 24) - 1
STREAM_ID_MASK = 0x7FFF_FFFF
DEFAULT_INITIAL_WINDOW = 64 * 1024

# Control frame types.
TYPE_SYN_STREAM = 1
TYPE_SYN_REPLY = 2
TYPE_RST_STREAM = 3
TYPE_SETTINGS = 4
TYPE_PING = 6
TYPE_GOAWAY = 7
TYPE_HEADERS = 8
TYPE_WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# RST_STREAM status codes.
RST_PROTOCOL_ERROR = 1
RST_INVALID_STREAM = 2
RST_REFUSED_STREAM = 3
RST_UNSUPPORTED_VERSION = 4
RST_CANCEL = 5
RST_INTERNAL_ERROR = 6
RST_FLOW_CONTROL_ERROR = 7
RST_STREAM_IN_USE = 8
RST_STREAM_ALREADY_CLOSED = 9
RST_FRAME_TOO_LARGE = 11

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

# SETTINGS ids.
SETTINGS_MAX_CONCURRENT_STREAMS = 4
SETTINGS_INITIAL_WINDOW_SIZE = 7


def _build_header_dictionary() -> bytes:
    """The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).

    The spec lists it as bytes; its structure is 65 u32-length-prefixed words followed by a run of
    common status lines, dates and media types, which is how it is spelled out here.
    """
    words = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split()
    words += [
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ]
    prefix = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefix + tail.encode()


HEADER_DICTIONARY = _build_header_dictionary()


class SpdyProtocolError(Exception):
    """The peer sent bytes that are not valid SPDY/3.1; the connection cannot continue."""


Headers = dict[str, list[str]]


@dataclass
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass
class SynStreamFrame:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass
class SynReplyFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass
class SettingsFrame:
    # id -> (flags, value)
    settings: dict[int, tuple[int, int]] = field(default_factory=dict)
    clear_previous: bool = False


@dataclass
class PingFrame:
    ping_id: int


@dataclass
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass
class WindowUpdateFrame:
    stream_id: int
    delta: int


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
)


def normalize_headers(headers: Mapping[str, str | Sequence[str]]) -> Headers:
    """Lower-case names (SPDY requires it) and make every value a list."""
    result: Headers = {}
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        result.setdefault(name.lower(), []).extend(values)
    return result


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block."""
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        raw_name = name.lower().encode()
        raw_value = "\x00".join(values).encode()
        parts += [
            struct.pack(">I", len(raw_name)),
            raw_name,
            struct.pack(">I", len(raw_value)),
            raw_value,
        ]
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block, refusing malformed or duplicate names."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        offset = 4
        headers: Headers = {}
        for _ in range(count):
            (name_len,) = struct.unpack_from(">I", block, offset)
            offset += 4
            name = block[offset : offset + name_len].decode()
            offset += name_len
            (value_len,) = struct.unpack_from(">I", block, offset)
            offset += 4
            value = block[offset : offset + value_len].decode()
            offset += value_len
            if len(name) != name_len or len(value.encode()) != value_len:
                raise SpdyProtocolError("header block truncated")
            if not name or name != name.lower():
                raise SpdyProtocolError(f"header name {name!r} is empty or not lowercase")
            if name in headers:
                raise SpdyProtocolError(f"duplicate header {name!r}")
            headers[name] = value.split("\x00")
    except (struct.error, UnicodeDecodeError) as exc:
        raise SpdyProtocolError(f"malformed header block: {exc}") from exc
    if offset != len(block):
        raise SpdyProtocolError("trailing bytes after header block")
    return headers


class HeaderCompressor:
    """One direction's zlib stream; every block ends with a sync flush so the peer can decode it."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(
            zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 8, zdict=HEADER_DICTIONARY
        )

    def compress(self, headers: Headers) -> bytes:
        return self._zlib.compress(encode_header_block(headers)) + self._zlib.flush(
            zlib.Z_SYNC_FLUSH
        )


class HeaderDecompressor:
    """The peer's zlib stream; each compressed block must decode completely on its own."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(zdict=HEADER_DICTIONARY)

    def decompress(self, compressed: bytes) -> Headers:
        try:
            block = self._zlib.decompress(compressed)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not decompress: {exc}") from exc
        if self._zlib.unconsumed_tail:
            raise SpdyProtocolError("header block larger than its frame")
        return decode_header_block(block)


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError("control frame payload too large")
    return (
        struct.pack(">HHI", 0x8000 | SPDY_VERSION, frame_type, (flags << 24) | len(payload))
        + payload
    )


class FrameEncoder:
    """Serializes frames for one connection (owns the outgoing header compression context)."""

    def __init__(self) -> None:
        self._compressor = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id, data, fin):
                if len(data) > MAX_FRAME_PAYLOAD:
                    raise ValueError("data frame payload too large")
                flags = FLAG_FIN if fin else 0
                return (
                    struct.pack(">II", stream_id & STREAM_ID_MASK, (flags << 24) | len(data)) + data
                )
            case SynStreamFrame():
                flags = (FLAG_FIN if frame.fin else 0) | (
                    FLAG_UNIDIRECTIONAL if frame.unidirectional else 0
                )
                body = struct.pack(
                    ">IIBB",
                    frame.stream_id & STREAM_ID_MASK,
                    frame.associated_to & STREAM_ID_MASK,
                    (frame.priority & 0x7) << 5,
                    0,
                )
                return _control(
                    TYPE_SYN_STREAM, flags, body + self._compressor.compress(frame.headers)
                )
            case SynReplyFrame(stream_id, headers, fin):
                body = struct.pack(">I", stream_id & STREAM_ID_MASK) + self._compressor.compress(
                    headers
                )
                return _control(TYPE_SYN_REPLY, FLAG_FIN if fin else 0, body)
            case HeadersFrame(stream_id, headers, fin):
                body = struct.pack(">I", stream_id & STREAM_ID_MASK) + self._compressor.compress(
                    headers
                )
                return _control(TYPE_HEADERS, FLAG_FIN if fin else 0, body)
            case RstStreamFrame(stream_id, status):
                return _control(
                    TYPE_RST_STREAM, 0, struct.pack(">II", stream_id & STREAM_ID_MASK, status)
                )
            case SettingsFrame(settings, clear_previous):
                body = struct.pack(">I", len(settings)) + b"".join(
                    struct.pack(">II", (flags << 24) | setting_id, value)
                    for setting_id, (flags, value) in settings.items()
                )
                return _control(TYPE_SETTINGS, FLAG_SETTINGS_CLEAR if clear_previous else 0, body)
            case PingFrame(ping_id):
                return _control(TYPE_PING, 0, struct.pack(">I", ping_id))
            case GoAwayFrame(last_good, status):
                return _control(
                    TYPE_GOAWAY, 0, struct.pack(">II", last_good & STREAM_ID_MASK, status)
                )
            case WindowUpdateFrame(stream_id, delta):
                return _control(
                    TYPE_WINDOW_UPDATE,
                    0,
                    struct.pack(">II", stream_id & STREAM_ID_MASK, delta & STREAM_ID_MASK),
                )
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Incremental parser for one connection's incoming bytes (owns the incoming zlib context).

    `feed(chunk)` accepts bytes in any split and yields every frame completed so far. Control
    frames of a version other than 3 and unknown control types are skipped, as the spec asks.
    """

    def __init__(self, max_frame_payload: int = MAX_FRAME_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._decompressor = HeaderDecompressor()
        self._max_payload = max_frame_payload

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> Iterator[Frame]:
        self._buffer += chunk
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer, 0)
            length = second & 0xFFFFFF
            flags = second >> 24
            if length > self._max_payload:
                raise SpdyProtocolError(
                    f"frame of {length} bytes exceeds the {self._max_payload} limit"
                )
            if len(self._buffer) < 8 + length:
                return
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            if first & 0x8000_0000:
                version = (first >> 16) & 0x7FFF
                frame_type = first & 0xFFFF
                if version != SPDY_VERSION:
                    raise SpdyProtocolError(f"unsupported SPDY version {version}")
                frame = self._control(frame_type, flags, payload)
                if frame is not None:
                    yield frame
            else:
                yield DataFrame(first & STREAM_ID_MASK, payload, bool(flags & FLAG_FIN))

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        try:
            if frame_type == TYPE_SYN_STREAM:
                stream_id, associated, priority = struct.unpack_from(">IIB", payload, 0)
                if stream_id & STREAM_ID_MASK == 0:
                    raise SpdyProtocolError("SYN_STREAM with stream id 0")
                return SynStreamFrame(
                    stream_id & STREAM_ID_MASK,
                    self._decompressor.decompress(payload[10:]),
                    associated & STREAM_ID_MASK,
                    priority >> 5,
                    fin,
                    bool(flags & FLAG_UNIDIRECTIONAL),
                )
            if frame_type in (TYPE_SYN_REPLY, TYPE_HEADERS):
                (stream_id,) = struct.unpack_from(">I", payload, 0)
                headers = self._decompressor.decompress(payload[4:])
                cls = SynReplyFrame if frame_type == TYPE_SYN_REPLY else HeadersFrame
                return cls(stream_id & STREAM_ID_MASK, headers, fin)
            if frame_type == TYPE_RST_STREAM:
                stream_id, status = struct.unpack(">II", payload)
                return RstStreamFrame(stream_id & STREAM_ID_MASK, status)
            if frame_type == TYPE_SETTINGS:
                (count,) = struct.unpack_from(">I", payload, 0)
                if len(payload) != 4 + 8 * count:
                    raise SpdyProtocolError("SETTINGS length does not match its entry count")
                settings: dict[int, tuple[int, int]] = {}
                for index in range(count):
                    flags_and_id, value = struct.unpack_from(">II", payload, 4 + 8 * index)
                    settings[flags_and_id & 0xFFFFFF] = (flags_and_id >> 24, value)
                return SettingsFrame(settings, bool(flags & FLAG_SETTINGS_CLEAR))
            if frame_type == TYPE_PING:
                (ping_id,) = struct.unpack(">I", payload)
                return PingFrame(ping_id)
            if frame_type == TYPE_GOAWAY:
                last_good, status = struct.unpack(">II", payload)
                return GoAwayFrame(last_good & STREAM_ID_MASK, status)
            if frame_type == TYPE_WINDOW_UPDATE:
                stream_id, delta = struct.unpack(">II", payload)
                return WindowUpdateFrame(stream_id & STREAM_ID_MASK, delta & STREAM_ID_MASK)
        except struct.error as exc:
            raise SpdyProtocolError(f"malformed control frame of type {frame_type}: {exc}") from exc
        return None  # unknown control frame types are ignored (SPDY/3 section 2.2.1)
