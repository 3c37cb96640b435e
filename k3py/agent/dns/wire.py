"""From query bytes to response bytes: checks, sizes, truncation, and a cache of finished
responses.

Every datagram or TCP message goes through ``QueryProcessor.process``:

1. Fewer than 12 bytes (no header), or the QR bit set (a response, not a query): dropped
   without a word — answering responses is how two servers end up bouncing packets forever.
2. The response cache: a query whose bytes after the ID equal an earlier one's gets that
   earlier response with its own ID, as long as the records have not changed since (their
   ``generation``) — a dictionary lookup instead of parsing and rendering. Only answers made
   of cluster data alone are kept; the cache holds at most ``max_cached`` entries and starts
   afresh when full.
3. Bigger than ``MAX_QUERY_BYTES`` (a real query is a few hundred bytes even with EDNS
   padding): FORMERR. An opcode other than QUERY: NOTIMP. Bytes dnspython cannot parse
   (bad label lengths, compression loops, truncated records, trailing junk): FORMERR. These
   are built from the 12 header bytes alone, so nothing of the junk is echoed.
4. Not exactly one question: FORMERR. Class not IN: REFUSED. Zone transfers (AXFR, IXFR) and
   meta types: REFUSED. An EDNS version above 0: BADVERS (RFC 6891).
5. The resolver's answer, rendered for the transport: over UDP at most 512 bytes, or the
   client's EDNS buffer size up to 1232; over TCP up to 65535. An answer that does not fit
   is cut to whole RRsets with the TC bit set, and the client asks again over TCP.

A question the resolver must ask upstream comes back as a coroutine (the caller schedules
it); everything else comes back as bytes at once.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Coroutine
from typing import Any

import dns.exception
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from k3py.agent.dns.records import ClusterRecords
from k3py.agent.dns.resolver import OUR_PAYLOAD, Answer, Forward, Resolver

log = logging.getLogger("k3py.agent.dns")

MAX_QUERY_BYTES = 1232
UDP_MIN = 512
TCP_MAX = 65535
QR = 0x8000
REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB,
                           dns.rdatatype.TKEY, dns.rdatatype.TSIG})

Pending = Coroutine[Any, Any, bytes | None]


def header_only(data: bytes, rcode: int) -> bytes:
    """A response of just the header: the query's ID, opcode and RD, QR set, ``rcode``."""
    query_id, flags = struct.unpack_from("!HH", data)
    flags = QR | (flags & 0x7900) | (rcode & 0xF)  # keep opcode (0x7800) and RD (0x0100)
    return struct.pack("!HHHHHH", query_id, flags, 0, 0, 0, 0)


class QueryProcessor:
    def __init__(self, resolver: Resolver, records: ClusterRecords, max_cached: int = 20_000) -> None:
        self.resolver = resolver
        self.records = records
        self.max_cached = max_cached
        self._cache: dict[bytes, tuple[int, bytes]] = {}
        self.malformed = 0  # queries answered FORMERR (tests and logs read it)

    def process(self, data: bytes, tcp: bool) -> bytes | Pending | None:
        if len(data) < 12 or data[2] & 0x80:
            return None
        key = (b"T" if tcp else b"U") + data[2:]
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self.records.generation:
            return data[:2] + hit[1]
        if len(data) > MAX_QUERY_BYTES:
            self.malformed += 1
            return header_only(data, dns.rcode.FORMERR)
        if (data[2] >> 3) & 0xF != dns.opcode.QUERY:
            return header_only(data, dns.rcode.NOTIMP)
        try:
            query = dns.message.from_wire(data)
        except dns.message.BadEDNS:
            self.malformed += 1
            return header_only(data, dns.rcode.FORMERR)
        except (dns.exception.DNSException, ValueError, struct.error, IndexError, UnicodeError):
            self.malformed += 1
            return header_only(data, dns.rcode.FORMERR)
        if len(query.question) != 1:
            self.malformed += 1
            return header_only(data, dns.rcode.FORMERR)
        question = query.question[0]
        if query.edns > 0:
            response = Resolver.response(query)
            response.use_edns(0, payload=OUR_PAYLOAD)
            response.set_rcode(dns.rcode.BADVERS)
            return response.to_wire()
        if question.rdclass != dns.rdataclass.IN or question.rdtype in REFUSED_TYPES:
            response = Resolver.response(query)
            response.set_rcode(dns.rcode.REFUSED)
            return self._render(response, query, tcp)
        if question.rdtype == dns.rdatatype.OPT:
            self.malformed += 1
            return header_only(data, dns.rcode.FORMERR)
        generation = self.records.generation
        result = self.resolver.local(query)
        if isinstance(result, Forward):
            return self._forward(data, query, result, tcp)
        wire = self._render(result.message, query, tcp)
        if result.cacheable:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            self._cache[key] = (generation, wire[2:])
        return wire

    async def _forward(self, data: bytes, query: dns.message.Message, forward: Forward, tcp: bool) -> bytes | None:
        try:
            answer: Answer = await self.resolver.complete(query, forward)
        except Exception:
            log.exception("forwarding %s failed", forward.name)
            return header_only(data, dns.rcode.SERVFAIL)
        return self._render(answer.message, query, tcp)

    @staticmethod
    def _limit(query: dns.message.Message, tcp: bool) -> int:
        if tcp:
            return TCP_MAX
        if query.edns >= 0:
            return max(UDP_MIN, min(query.payload, OUR_PAYLOAD))
        return UDP_MIN

    def _render(self, response: dns.message.Message, query: dns.message.Message, tcp: bool) -> bytes:
        try:
            return response.to_wire(max_size=self._limit(query, tcp), prefer_truncation=True)
        except dns.exception.DNSException:
            log.exception("cannot render the answer for %s", query.question[0].name if query.question else "?")
            return header_only(struct.pack("!HH8x", query.id, query.flags), dns.rcode.SERVFAIL)
