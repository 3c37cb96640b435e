"""Names outside the cluster domain: asked of the node's upstream resolvers, answers cached.

Asking. Each question goes to the upstream servers in turn (the last one that answered first),
over UDP from a fresh socket with a random port and ID — dnspython's ``asyncquery.udp`` checks
that the answer comes from the server asked, with our ID and our question, so a spoofed packet
must guess both — and again over TCP when the UDP answer was truncated. A server that does not
answer within ``timeout`` seconds, or cannot be reached at all (no route, ICMP refusal), is
skipped for the next one; all of it within ``deadline`` seconds (4: stub resolvers wait 5 s
before they try again, and the SERVFAIL should reach them). When none answers, the result is SERVFAIL carrying an Extended DNS
Error (RFC 8914, code 22 "No Reachable Authority") whose text names the servers tried, so
``dig`` shows why; with no upstream configured at all the text says that.

Concurrency. Identical questions in flight share one upstream exchange, and at most
``max_in_flight`` exchanges run at once: a flood of distinct names can neither open unbounded
sockets nor hammer the upstream (beyond the limit the caller drops the query, and the client
retries).

Caching (RFC 2308). Answers are kept by (name, type, DO bit) for their smallest TTL, negative
answers (NXDOMAIN, NODATA) for their SOA's negative TTL, both capped at ``max_ttl`` (30 s, as
k3s's CoreDNS ``cache 30``), SERVFAIL for ``failure_ttl`` (so a dead upstream is not asked
again for every query of a flood). Served from the cache, TTLs count down by the time the
entry has been held. The cache is bounded (``max_entries``): expired entries go first, then
the oldest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.asyncbackend
import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("k3py.agent.dns")
# dnspython loads its asyncio backend on first use: load it now, not on the loop's first query.
dns.asyncbackend.get_backend("asyncio")

Server = tuple[str, int]  # (address, port)


@dataclass
class UpstreamAnswer:
    """One upstream response, as stored: its sections and when it was received."""

    rcode: int
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    ede: tuple[int, str] | None = None  # an Extended DNS Error to pass on (our SERVFAILs)
    received: float = 0.0
    expires: float = 0.0

    def aged(self, now: float) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        """The sections with TTLs lowered by the time held."""
        age = int(now - self.received)
        if age <= 0:
            return self.answer, self.authority, self.additional
        return [_aged(r, age) for r in self.answer], [_aged(r, age) for r in self.authority], \
            [_aged(r, age) for r in self.additional]


def _aged(rrset: dns.rrset.RRset, age: int) -> dns.rrset.RRset:
    copy = rrset.copy()
    copy.ttl = max(0, rrset.ttl - age)
    return copy


def _negative_ttl(authority: list[dns.rrset.RRset]) -> int | None:
    """RFC 2308: a negative answer lives for the smaller of its SOA's TTL and minimum."""
    for rrset in authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return None


class Forwarder:
    def __init__(
        self,
        servers: Sequence[Server] | Callable[[], Sequence[Server]],
        *,
        timeout: float = 2.0,
        deadline: float = 4.0,
        max_ttl: int = 30,
        failure_ttl: float = 2.0,
        max_entries: int = 10_000,
        max_in_flight: int = 256,
    ) -> None:
        self._servers = servers
        self.timeout = timeout
        self.deadline = deadline
        self.max_ttl = max_ttl
        self.failure_ttl = failure_ttl
        self.max_entries = max_entries
        self.max_in_flight = max_in_flight
        self._cache: dict[tuple[str, int, bool], UpstreamAnswer] = {}
        self._in_flight: dict[tuple[str, int, bool], asyncio.Future[UpstreamAnswer]] = {}
        self._preferred = 0
        self.upstream_queries = 0  # exchanges started (tests and benchmarks read it)

    @property
    def servers(self) -> list[Server]:
        servers = self._servers() if callable(self._servers) else self._servers
        return list(servers)

    def busy(self) -> bool:
        return len(self._in_flight) >= self.max_in_flight

    def cached(self, key: tuple[str, int, bool], now: float | None = None) -> UpstreamAnswer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if (now if now is not None else time.monotonic()) >= entry.expires:
            del self._cache[key]
            return None
        return entry

    async def ask(self, qname: dns.name.Name, rdtype: int, want_dnssec: bool, key_name: str) -> UpstreamAnswer:
        """The upstream answer for one question (cached, shared with identical ones in flight)."""
        key = (key_name, rdtype, want_dnssec)
        hit = self.cached(key)
        if hit is not None:
            return hit
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[UpstreamAnswer] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._exchange(qname, rdtype, want_dnssec)
            self._store(key, result)
            future.set_result(result)
            return result
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # marked retrieved: nobody else may be waiting
            raise
        finally:
            del self._in_flight[key]

    async def _exchange(self, qname: dns.name.Name, rdtype: int, want_dnssec: bool) -> UpstreamAnswer:
        servers = self.servers
        if not servers:
            return UpstreamAnswer(dns.rcode.SERVFAIL, ede=(
                dns.edns.EDECode.NO_REACHABLE_AUTHORITY, "k3py: no upstream nameserver configured for names outside the cluster"))
        query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232, want_dnssec=want_dnssec)
        failures: list[str] = []
        order = servers[self._preferred % len(servers):] + servers[:self._preferred % len(servers)]
        deadline = time.monotonic() + self.deadline
        for address, port in order:
            timeout = min(self.timeout, deadline - time.monotonic())
            if timeout <= 0:
                failures.append(f"{address}:{port} not tried (out of time)")
                continue
            self.upstream_queries += 1
            try:
                response = await dns.asyncquery.udp(query, address, timeout=timeout, port=port,
                                                    ignore_unexpected=True)
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(query, address, timeout=self.timeout, port=port)
            except dns.exception.Timeout:
                failures.append(f"{address}:{port} timed out")
                continue
            except (OSError, EOFError, dns.exception.DNSException) as e:
                failures.append(f"{address}:{port} {getattr(e, 'strerror', None) or e}")
                continue
            if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED) and len(order) > 1:
                failures.append(f"{address}:{port} answered {dns.rcode.to_text(response.rcode())}")
                continue
            self._preferred = servers.index((address, port))
            return UpstreamAnswer(
                response.rcode(), list(response.answer), list(response.authority),
                [r for r in response.additional if r.rdtype not in (dns.rdatatype.OPT, dns.rdatatype.TSIG)],
            )
        log.warning("upstream DNS failed for %s: %s", qname, "; ".join(failures))
        return UpstreamAnswer(dns.rcode.SERVFAIL, ede=(
            dns.edns.EDECode.NO_REACHABLE_AUTHORITY, "k3py: upstream unreachable: " + "; ".join(failures)[:200]))

    def _store(self, key: tuple[str, int, bool], result: UpstreamAnswer) -> None:
        now = time.monotonic()
        result.received = now
        if result.rcode == dns.rcode.SERVFAIL:
            ttl: float = self.failure_ttl
        elif result.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            if result.answer and result.rcode == dns.rcode.NOERROR:
                ttl = min(r.ttl for r in result.answer)
            else:
                negative = _negative_ttl(result.authority)
                ttl = negative if negative is not None else 0
        else:
            ttl = 0
        ttl = min(ttl, self.max_ttl)
        if ttl <= 0:
            return
        result.expires = now + ttl
        if len(self._cache) >= self.max_entries:
            for stale in [k for k, v in self._cache.items() if v.expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= self.max_entries:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = result
