"""SPDY/3.1 framing and session: round trips, the zlib dictionary, split reads, ping, FIN, RST."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from k3py.agent.streaming.spdy_frames import (
    HEADER_DICTIONARY,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    SpdyProtocolError,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
    decode_header_block,
    encode_header_block,
)
from k3py.agent.streaming.spdy_session import SpdySession, StreamClosedError

# Spec-defined properties of the SPDY/3 dictionary: its length and the Adler-32 that zlib
# writes into every stream compressed with it (the peer checks that value).
DICTIONARY_LENGTH = 1423
DICTIONARY_ADLER32 = 0xE3C6A7C2


def test_header_dictionary_is_the_spdy3_one() -> None:
    assert len(HEADER_DICTIONARY) == DICTIONARY_LENGTH
    assert HEADER_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert HEADER_DICTIONARY.endswith(b"utf-,*,enq=0.")
    assert zlib.adler32(HEADER_DICTIONARY) == DICTIONARY_ADLER32


def test_header_block_round_trip_and_multi_values() -> None:
    headers = {"streamtype": ["stdout"], "x-multi": ["a", "b"]}
    block = encode_header_block(headers)
    assert block[:4] == struct.pack(">I", 2)
    assert decode_header_block(block) == headers


@pytest.mark.parametrize(
    "block",
    [
        struct.pack(">I", 1) + struct.pack(">I", 4) + b"Name" + struct.pack(">I", 0),
        struct.pack(">I", 2) + (struct.pack(">I", 1) + b"a" + struct.pack(">I", 0)) * 2,
        struct.pack(">I", 1) + struct.pack(">I", 10) + b"abc",
    ],
    ids=["uppercase", "duplicate", "truncated"],
)
def test_bad_header_blocks_are_protocol_errors(block: bytes) -> None:
    with pytest.raises(SpdyProtocolError):
        decode_header_block(block)


ALL_FRAMES: list[Frame] = [
    SynStreamFrame(
        1, {"streamtype": ["error"], "port": ["80"]}, associated_to=0, priority=3, fin=True
    ),
    SynReplyFrame(1, {}),
    DataFrame(3, b"hello", fin=False),
    DataFrame(3, b"", fin=True),
    HeadersFrame(5, {"a": ["b"]}, fin=True),
    RstStreamFrame(7, 5),
    SettingsFrame({7: (0, 1 << 20), 4: (1, 100)}),
    PingFrame(1),
    GoAwayFrame(9, 0),
    WindowUpdateFrame(0, 32768),
    SynStreamFrame(9, {"streamtype": ["stdin"]}),
]


def test_every_frame_round_trips_through_shared_zlib_contexts() -> None:
    encoder, decoder = FrameEncoder(), FrameDecoder()
    wire = b"".join(encoder.encode(frame) for frame in ALL_FRAMES)
    assert list(decoder.feed(wire)) == ALL_FRAMES


def test_decoder_accepts_one_byte_at_a_time() -> None:
    encoder, decoder = FrameEncoder(), FrameDecoder()
    wire = b"".join(encoder.encode(frame) for frame in ALL_FRAMES)
    got = [frame for index in range(len(wire)) for frame in decoder.feed(wire[index : index + 1])]
    assert got == ALL_FRAMES
    assert decoder.buffered == 0


def test_wire_layout_of_control_and_data_frames() -> None:
    encoder = FrameEncoder()
    ping = encoder.encode(PingFrame(7))
    assert ping == bytes.fromhex("80030006") + bytes.fromhex("00000004") + struct.pack(">I", 7)
    data = encoder.encode(DataFrame(5, b"ab", fin=True))
    assert data == struct.pack(">I", 5) + bytes([1, 0, 0, 2]) + b"ab"
    reply = encoder.encode(SynReplyFrame(1, {}))
    # Header block of the reply: a zlib stream that names the SPDY dictionary (FDICT, adler32).
    block = reply[12:]
    assert block[0] == 0x78 and block[1] & 0x20
    assert struct.unpack(">I", block[2:6])[0] == DICTIONARY_ADLER32


def test_decoder_refuses_other_versions_and_garbage_headers() -> None:
    with pytest.raises(SpdyProtocolError):
        list(FrameDecoder().feed(bytes.fromhex("80020006 00000004 00000001".replace(" ", ""))))
    bad_block = struct.pack(">I", 1) + b"not zlib at all"
    frame = struct.pack(">HHI", 0x8003, 2, len(bad_block)) + bad_block
    with pytest.raises(SpdyProtocolError):
        list(FrameDecoder().feed(frame))


def test_unknown_control_frames_are_skipped() -> None:
    unknown = struct.pack(">HHI", 0x8003, 0x55, 3) + b"xyz"
    assert list(FrameDecoder().feed(unknown + FrameEncoder().encode(PingFrame(3)))) == [
        PingFrame(3)
    ]


# --- sessions over an in-memory pipe ------------------------------------------------------


class PipeEnd:
    """One end of an in-memory duplex byte pipe (a real asyncio queue, no mocking of SPDY)."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox, self.outbox, self.closed = inbox, outbox, False

    async def read(self) -> bytes:
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        await self.outbox.put(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.outbox.put(b"")


def pipe() -> tuple[PipeEnd, PipeEnd]:
    a_to_b: asyncio.Queue[bytes] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes] = asyncio.Queue()
    return PipeEnd(b_to_a, a_to_b), PipeEnd(a_to_b, b_to_a)


async def test_session_accepts_replies_and_exchanges_data_with_fin() -> None:
    client_end, server_end = pipe()
    async with (
        SpdySession(client_end, is_server=False) as client,
        SpdySession(server_end) as server,
    ):
        opened = await client.open_stream({"streamType": "stdin"})
        accepted = await asyncio.wait_for(server.accept(), 2)
        assert accepted is not None
        assert accepted.header("streamtype") == "stdin" and accepted.stream_id == 1
        assert await asyncio.wait_for(opened.wait_reply(), 2) == {}
        await opened.write(b"ping")
        await opened.close()
        assert await accepted.read() == b"ping"
        assert await accepted.read() == b""
        await accepted.write(b"x" * 100_000)  # larger than one data frame
        await accepted.close()
        received = b""
        while chunk := await opened.read():
            received += chunk
        assert received == b"x" * 100_000
        with pytest.raises(StreamClosedError):
            await accepted.write(b"late")


async def test_ping_is_answered_and_reset_ends_reads() -> None:
    client_end, server_end = pipe()
    async with (
        SpdySession(client_end, is_server=False) as client,
        SpdySession(server_end) as server,
    ):
        await asyncio.wait_for(client.ping(), 2)
        opened = await client.open_stream({"streamtype": "data"})
        accepted = await asyncio.wait_for(server.accept(), 2)
        assert accepted is not None
        await opened.reset()
        assert await asyncio.wait_for(accepted.read(), 2) == b""
        with pytest.raises(StreamClosedError):
            await accepted.write(b"after reset")


async def test_receiver_returns_window_as_data_is_consumed() -> None:
    client_end, server_end = pipe()
    async with SpdySession(client_end, is_server=False, enforce_send_window=True) as client:
        async with SpdySession(server_end) as server:
            opened = await client.open_stream({"streamtype": "stdin"})
            accepted = await asyncio.wait_for(server.accept(), 2)
            assert accepted is not None
            payload = bytes(range(256)) * 1024  # 256 KiB: four initial windows

            async def consume() -> bytes:
                got = b""
                while len(got) < len(payload):
                    got += await accepted.read()
                return got

            consumer = asyncio.create_task(consume())
            await asyncio.wait_for(opened.write(payload), 5)
            assert await asyncio.wait_for(consumer, 5) == payload


async def test_session_end_wakes_readers_and_accept() -> None:
    client_end, server_end = pipe()
    server = SpdySession(server_end)
    server.start()
    async with SpdySession(client_end, is_server=False) as client:
        await client.open_stream({"streamtype": "stdout"})
        accepted = await asyncio.wait_for(server.accept(), 2)
        assert accepted is not None
    # The client closed its transport: the server's streams see EOF and accept() ends.
    assert await asyncio.wait_for(accepted.read(), 2) == b""
    assert await asyncio.wait_for(server.accept(), 2) is None
    await server.close()


class RawPeer:
    """Drives a session with hand-made frames and decodes what it answers."""

    def __init__(self, end: PipeEnd) -> None:
        self.end = end
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder()
        self.pending: list[Frame] = []

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.end.write(self.encoder.encode(frame))

    async def next_frame(self) -> Frame:
        while not self.pending:
            chunk = await asyncio.wait_for(self.end.read(), 2)
            assert chunk, "session hung up"
            self.pending += list(self.decoder.feed(chunk))
        return self.pending.pop(0)


async def test_data_for_unknown_stream_is_reset_and_goaway_refuses_new_streams() -> None:
    peer_end, server_end = pipe()
    peer = RawPeer(peer_end)
    async with SpdySession(server_end) as server:
        await peer.send(DataFrame(7, b"who?"))
        assert await peer.next_frame() == RstStreamFrame(7, 2)  # INVALID_STREAM
        await peer.send(SynStreamFrame(1, {"streamtype": ["error"]}))
        assert await peer.next_frame() == SynReplyFrame(1, {})
        await peer.send(SynStreamFrame(1, {"streamtype": ["again"]}))  # ids must increase
        assert await peer.next_frame() == RstStreamFrame(1, 1)  # PROTOCOL_ERROR
        await peer.send(GoAwayFrame(0), SynStreamFrame(3, {"streamtype": ["late"]}))
        assert await peer.next_frame() == RstStreamFrame(3, 3)  # REFUSED_STREAM
        accepted = await asyncio.wait_for(server.accept(), 2)
        assert accepted is not None and accepted.stream_id == 1


async def test_garbage_closes_the_session_with_goaway() -> None:
    peer_end, server_end = pipe()
    server = SpdySession(server_end)
    server.start()
    await peer_end.write(struct.pack(">HHI", 0x8002, 1, 0))  # SPDY/2 is not spoken
    decoder = FrameDecoder()
    frames = list(decoder.feed(await asyncio.wait_for(peer_end.read(), 2)))
    assert frames == [GoAwayFrame(0, 1)]
    assert await asyncio.wait_for(server.accept(), 2) is None
    await server.close()


async def test_server_pings_are_answered_by_a_client_session() -> None:
    client_end, server_end = pipe()
    async with SpdySession(client_end, is_server=False), SpdySession(server_end) as server:
        await asyncio.wait_for(server.ping(), 2)


async def test_idle_session_is_closed_and_traffic_keeps_it_open() -> None:
    client_end, server_end = pipe()
    async with SpdySession(client_end, is_server=False) as client:
        server = SpdySession(server_end, idle_timeout=1.0)
        server.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        while loop.time() < deadline:  # pings every 0.1 s for longer than the timeout
            await client.ping()
            await asyncio.sleep(0.1)
        assert not server.closed
        await asyncio.wait_for(server.wait_closed(), 3)  # now silent: it closes by itself
        await server.close()
