"""The DNS listeners on real sockets (loopback, a port of their own), asked with dnspython:
UDP and TCP, truncation with the TCP retry, hostile input, a flood, the upstream path."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest

from k3py.agent.dns.forwarder import Forwarder
from k3py.agent.dns.records import ClusterRecords
from k3py.agent.dns.resolver import Resolver
from k3py.agent.dns.server import DNSServer
from k3py.agent.dns.wire import QueryProcessor
from tests.dns.cluster_data import endpoint_slice, ready, service, specification_cluster
from tests.dns.upstream import dnsmasq, free_port

HOST = "127.0.0.1"


def big_cluster() -> ClusterRecords:
    records = specification_cluster()
    records.set_service(service("many", "shop", "None", [("http", 80, "TCP")]))
    records.set_service(service("sixty", "shop", "None", [("http", 80, "TCP")]))
    records.set_slice("shop/many-a", endpoint_slice("many-a", "shop", "many",
                                                    [ready(f"10.42.1.{i}") for i in range(1, 101)]))
    records.set_slice("shop/sixty-a", endpoint_slice("sixty-a", "shop", "sixty",
                                                     [ready(f"10.42.2.{i}") for i in range(1, 61)]))
    return records


async def start_server(upstreams: list[tuple[str, int]] | None = None, **options: float) -> DNSServer:
    records = big_cluster()
    forwarder = Forwarder(upstreams or [], timeout=float(options.pop("upstream_timeout", 2.0)))
    server = DNSServer(QueryProcessor(Resolver(records, forwarder, ["10.43.0.10"]), records), HOST, 0, **options)  # type: ignore[arg-type]
    await server.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[DNSServer]:
    running = await start_server(idle_timeout=1.0, max_connections=8)
    yield running
    await running.stop()


async def udp(server: DNSServer, name: str, rdtype: str = "A", **query: object) -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, rdtype, **query), HOST, port=server.port, timeout=3)  # type: ignore[arg-type]


async def raw_udp(server: DNSServer, payload: bytes, wait: float = 1.0, source: str = HOST) -> bytes | None:
    """Send bytes, return the reply bytes or None when none came within ``wait`` seconds."""
    loop = asyncio.get_running_loop()

    def exchange() -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.settimeout(wait)
            sock.sendto(payload, (HOST, server.port))
            try:
                return sock.recv(65535)
            except TimeoutError:
                return None

    return await loop.run_in_executor(None, exchange)


async def test_udp_and_tcp_answer_alike(server: DNSServer) -> None:
    over_udp = await udp(server, "kubernetes.default.svc.cluster.local")
    over_tcp = await dns.asyncquery.tcp(dns.message.make_query("kubernetes.default.svc.cluster.local", "A"),
                                        HOST, port=server.port, timeout=3)
    assert over_udp.answer == over_tcp.answer and [str(r) for r in over_udp.answer[0]] == ["10.43.0.1"]


async def test_big_answers_are_truncated_over_udp_and_complete_over_tcp(server: DNSServer) -> None:
    name = "many.shop.svc.cluster.local"
    plain = await udp(server, name)
    assert plain.flags & dns.flags.TC and not plain.answer  # > 512 bytes without EDNS
    edns = await udp(server, "sixty.shop.svc.cluster.local", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 60  # ~1 KB fits our 1232
    assert edns.payload == 1232
    small_edns = await udp(server, "sixty.shop.svc.cluster.local", use_edns=0, payload=512)
    assert small_edns.flags & dns.flags.TC
    full, used_tcp = await dns.asyncquery.udp_with_fallback(dns.message.make_query(name, "A"), HOST,
                                                           port=server.port, timeout=3)
    assert used_tcp and len(full.answer[0]) == 100 and not full.flags & dns.flags.TC


def header(query_id: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", query_id, flags, qd, an, ns, ar)


def question(name: bytes, rdtype: int = 1, rdclass: int = 1) -> bytes:
    return name + struct.pack("!HH", rdtype, rdclass)


KUBERNETES = b"\x0akubernetes\x07default\x03svc\x07cluster\x05local\x00"
LONG_NAME = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"b" * 61 + b"\x00"  # 255 bytes


@pytest.mark.parametrize(("payload", "rcode"), [
    (header(1) + b"\x07garbage", dns.rcode.FORMERR),  # a label running off the end
    (header(2) + b"\xc0\x0c" + struct.pack("!HH", 1, 1), dns.rcode.FORMERR),  # compression pointer to itself
    (header(3, qd=2) + question(KUBERNETES) * 2, dns.rcode.FORMERR),  # two questions
    (header(4, qd=0), dns.rcode.FORMERR),  # no question
    (header(5) + question(KUBERNETES) + b"\x00" * 1300, dns.rcode.FORMERR),  # oversized
    (header(6) + question(KUBERNETES) + b"junk", dns.rcode.FORMERR),  # trailing bytes
    (header(7, flags=0x2800) + question(KUBERNETES), dns.rcode.NOTIMP),  # opcode UPDATE
    (header(8) + question(b"\x07version\x04bind\x00", 16, 3), dns.rcode.REFUSED),  # CHAOS class
    (header(9) + question(KUBERNETES, 252), dns.rcode.REFUSED),  # AXFR over UDP
    (header(10) + question(b"\x3f" + b"x" * 63 + b"\x07cluster\x05local\x00"), dns.rcode.NXDOMAIN),
    (header(11) + question(b"\x0bweb.default\x03svc\x07cluster\x05local\x00"), dns.rcode.NXDOMAIN),  # dot in a label
    (header(12) + question(LONG_NAME[:-1] + b"\x01c\x00"), dns.rcode.FORMERR),  # 257-byte name
    (header(13, ar=1) + question(KUBERNETES) + b"\x00" + struct.pack("!HHIH", 41, 1232, 0x00010000, 0),
     dns.rcode.BADVERS & 0xF),  # EDNS version 1
], ids=["label-past-end", "pointer-loop", "two-questions", "no-question", "oversized", "trailing", "update",
        "chaos", "axfr", "absurd-name", "dotted-label", "name-too-long", "edns-v1"])
async def test_hostile_queries_get_an_error_and_the_server_keeps_answering(
    server: DNSServer, payload: bytes, rcode: int,
) -> None:
    reply = await raw_udp(server, payload)
    assert reply is not None and reply[:2] == payload[:2]
    assert reply[2] & 0x80 and reply[3] & 0x0F == rcode
    assert (await udp(server, "kubernetes.default.svc.cluster.local")).answer


@pytest.mark.parametrize("payload", [b"", b"\x00\x01\x02", header(20, flags=0x8100) + question(KUBERNETES)],
                         ids=["empty", "short", "a-response"])
async def test_datagrams_that_are_no_query_get_no_reply(server: DNSServer, payload: bytes) -> None:
    assert await raw_udp(server, payload, wait=0.5) is None
    assert (await udp(server, "kubernetes.default.svc.cluster.local")).answer


async def test_tcp_abuse_is_cut_off(server: DNSServer) -> None:
    loop_answers = await udp(server, "kubernetes.default.svc.cluster.local")
    assert loop_answers.answer
    # an oversized length: FORMERR, then the connection is closed
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(struct.pack("!H", 60000) + header(30) + question(KUBERNETES))
    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
    reply = await reader.readexactly(size)
    assert reply[:2] == b"\x00\x1e" and reply[3] & 0x0F == dns.rcode.FORMERR
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
    # a client that stops half-way is dropped after the idle timeout (1 s here)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(struct.pack("!H", 40) + b"\x00\x01")
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert time.monotonic() - started < 4
    writer.close()
    # more connections than allowed (8 here): the extra ones are closed at once
    held = [await asyncio.open_connection(HOST, server.port) for _ in range(8)]
    await asyncio.sleep(0.1)  # let the server accept them all before the extra one
    extra_reader, extra_writer = await asyncio.open_connection(HOST, server.port)
    assert await asyncio.wait_for(extra_reader.read(), 3) == b""
    extra_writer.close()
    for _r, w in held:
        w.close()
    for _ in range(250):  # until the server has noticed the closes (5 s at most)
        if not server._connections:
            break
        await asyncio.sleep(0.02)
    # pipelined queries on one connection are all answered, in order
    reader, writer = await asyncio.open_connection(HOST, server.port)
    queries = [dns.message.make_query(f"{n}.default.svc.cluster.local", "A") for n in ("kubernetes", "nope") * 5]
    writer.write(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
    for query in queries:
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
        assert dns.message.from_wire(await reader.readexactly(size)).id == query.id
    writer.close()


FLOOD = r"""
import os, socket, struct, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.2", 0))
sock.setblocking(False)
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    name = b"".join(bytes([len(l)]) + l for l in (os.urandom(6).hex().encode(), b"shop", b"svc", b"cluster", b"local")) + b"\0"
    try:
        sock.sendto(struct.pack("!HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1", ("127.0.0.1", port))
    except BlockingIOError:
        pass
    n += 1
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
print(n)
"""


async def test_a_flood_from_one_client_neither_stalls_the_loop_nor_starves_the_others() -> None:
    server = await start_server()
    try:
        flood = await asyncio.create_subprocess_exec(sys.executable, "-c", FLOOD, str(server.port), "5",
                                                     stdout=asyncio.subprocess.PIPE)
        lags: list[float] = []

        async def heartbeat() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - before - 0.01)

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.5)  # the flood is on
        answered, attempts = 0, 0
        for _ in range(20):  # as a stub resolver asks: a few tries, a short wait each
            for _try in range(3):
                attempts += 1
                query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
                try:
                    reply = await dns.asyncquery.udp(query, HOST, port=server.port, timeout=0.5, source="127.0.0.3")
                except dns.exception.Timeout:
                    continue
                answered += bool(reply.answer)
                break
        beat.cancel()
        sent = int((await asyncio.wait_for(flood.communicate(), 30))[0] or 0)
        assert sent > 20_000, "the flood was too weak to test anything"
        assert answered == 20, f"only {answered}/20 answered ({attempts} tries) during a flood of {sent} queries"
        assert server.dropped > 0  # the flood really went over the budget
        lags.sort()
        assert lags[len(lags) // 2] < 0.05 and lags[-1] < 0.5, f"loop lag: median {lags[len(lags) // 2]}, max {lags[-1]}"
    finally:
        await server.stop()


async def test_unreachable_upstream_is_a_clear_servfail_and_upstream_answers_are_cached() -> None:
    dead = free_port()  # nothing listens there: the query is refused or times out
    server = await start_server([(HOST, dead)], upstream_timeout=0.5)
    try:
        started = time.monotonic()
        reply = await udp(server, "www.external.test", use_edns=0)
        assert reply.rcode() == dns.rcode.SERVFAIL and time.monotonic() - started < 2.5
        ede = [o for o in reply.options if o.otype == dns.edns.EDE]
        assert ede and ede[0].code == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
        assert f"{HOST}:{dead}" in (ede[0].text or "") and "unreachable" in (ede[0].text or "")
        # cluster names never depend on the upstream
        assert (await udp(server, "kubernetes.default.svc.cluster.local")).answer
    finally:
        await server.stop()
    port = free_port()
    with dnsmasq(HOST, port):
        server = await start_server([(HOST, port)])
        forwarder = server.processor.resolver.forwarder
        assert forwarder is not None
        try:
            first = await udp(server, "www.external.test")
            assert [str(r) for r in first.answer[0]] == ["192.0.2.81"]
            answers = await asyncio.gather(*(udp(server, "api.external.test") for _ in range(20)))
            assert all(a.answer for a in answers)
            again = await udp(server, "www.external.test")
            assert again.answer[0].ttl <= first.answer[0].ttl
            assert forwarder.upstream_queries == 2  # www once, api once for 20 concurrent askers
            empty = await udp(server, "nothing.external.test")
            assert empty.rcode() == dns.rcode.NXDOMAIN
        finally:
            await server.stop()


async def test_no_upstream_configured_says_so() -> None:
    server = await start_server([])
    try:
        reply = await udp(server, "example.org", use_edns=0)
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert "no upstream" in (reply.options[0].text or "")
    finally:
        await server.stop()
