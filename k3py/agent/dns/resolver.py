"""Answering one question: the Kubernetes DNS specification over ``ClusterRecords``, and the
upstream for everything else.

Names under the cluster zone (``cluster.local.``) are answered here, authoritatively, with TTL
5 s, and never forwarded:

    <zone>                          SOA, NS (ns.dns.<zone>); anything else NODATA
    dns-version.<zone>              TXT "1.1.0" (the specification's schema version)
    ns.dns.<zone>                   A: the cluster DNS address
    svc.<zone>, pod.<zone>          exist (NODATA)
    <ns>.svc.<zone>, <ns>.pod.<zone>  exist when the namespace does (NODATA), else NXDOMAIN
    <a>-<b>-<c>-<d>.<ns>.pod.<zone>  A <a>.<b>.<c>.<d> for any address, in an existing
                                    namespace (the specification's section 2.6; IPv6 with
                                    dashes for colons gives AAAA)
    anything else                   the records table (see ``records``): the RRset of the
                                    asked type; a CNAME (ExternalName) followed for any other
                                    type; NODATA for a name that exists without that type;
                                    NXDOMAIN for a name that does not exist

Negative answers carry the zone's SOA (TTL 5 s) in the authority section, so resolvers cache
them for 5 s (RFC 2308). Until the informers have listed once, a name the table does not know
is SERVFAIL rather than a false NXDOMAIN (as CoreDNS does before its caches sync).

PTR questions for addresses the table knows (Service cluster IPs, endpoint addresses) are
answered here; other reverse names go upstream, like every name outside the zone (CoreDNS's
``fallthrough in-addr.arpa ip6.arpa`` in k3s).

A CNAME whose target lies in the zone is followed here (at most 8 steps, loops end the chain);
one whose target lies outside is completed by the forwarder: the answer then holds the CNAME
and the upstream's records for the target, with the upstream's rcode (RFC 6604).

``local(query)`` does all that needs no network and returns the finished ``Answer``, or a
``Forward`` saying what to ask upstream; ``complete(query, forward)`` asks and finishes it.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from k3py.agent.dns.forwarder import Forwarder
from k3py.agent.dns.records import AAAA, CNAME, PTR, SRV, TXT, A, ClusterRecords

TTL = 5
SCHEMA_VERSION = "1.1.0"
MAX_CNAME_CHAIN = 8
OUR_PAYLOAD = 1232  # the EDNS UDP size we announce (DNS flag day 2020)
SOA, NS, ANY = 6, 2, 255
IN = dns.rdataclass.IN


@dataclass
class Answer:
    """A finished response. ``cacheable``: made of cluster data only, so the same query gets
    the same bytes until the records' generation changes."""

    message: dns.message.Message
    cacheable: bool = True


@dataclass
class Forward:
    """What is left to ask upstream: ``name``/``rdtype``, after the ``chain`` of CNAMEs."""

    name: dns.name.Name
    key: str
    rdtype: int
    chain: list[dns.rrset.RRset] = field(default_factory=list)


def name_key(name: dns.name.Name) -> str | None:
    """The lowercase text of an absolute name as the table keys it ("a.b.c."), or None when a
    label holds a dot (it would alias another name) — such a name matches nothing of ours."""
    labels = name.labels
    for label in labels:
        if 46 in label:  # b"."
            return None
    return b".".join(labels).lower().decode("latin-1") if len(labels) > 1 else "."


@functools.lru_cache(maxsize=65536)
def _rdata(rtype: int, value: Any) -> dns.rdata.Rdata:
    if rtype == A:
        return dns.rdtypes.IN.A.A(IN, A, value)
    if rtype == AAAA:
        return dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, value)
    if rtype == PTR:
        return dns.rdtypes.ANY.PTR.PTR(IN, PTR, dns.name.from_text(value))
    if rtype == CNAME:
        return dns.rdtypes.ANY.CNAME.CNAME(IN, CNAME, dns.name.from_text(value))
    if rtype == TXT:
        return dns.rdtypes.ANY.TXT.TXT(IN, TXT, [value.encode()])
    if rtype == NS:
        return dns.rdtypes.ANY.NS.NS(IN, NS, dns.name.from_text(value))
    raise ValueError(f"no rdata for type {rtype}")


def _srv(port: int, target: str, weight: int) -> dns.rdata.Rdata:
    return dns.rdtypes.IN.SRV.SRV(IN, SRV, 0, weight, port, _target_name(target))


@functools.lru_cache(maxsize=65536)
def _target_name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def pod_address(label: str) -> tuple[str, int] | None:
    """The address a pod name label stands for: 10-42-0-5 → 10.42.0.5 (A); an IPv6 address
    with dashes for colons → AAAA. None when the label is no address."""
    text = label.replace("-", ".") if label.count("-") == 3 and "--" not in label else label.replace("-", ":")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address), (A if address.version == 4 else AAAA)


class Resolver:
    def __init__(self, records: ClusterRecords, forwarder: Forwarder | None, dns_addresses: Sequence[str]) -> None:
        self.records = records
        self.forwarder = forwarder
        self.zone = records.zone
        self.zone_name = dns.name.from_text(self.zone)
        self.dns_addresses = [a for a in dns_addresses if a]
        self._ns_name = f"ns.dns.{self.zone}"
        self._soa = dns.rdtypes.ANY.SOA.SOA(IN, SOA, dns.name.from_text(self._ns_name),
                                            dns.name.from_text(f"hostmaster.{self.zone}"), 0, 7200, 1800, 86400, TTL)
        self._soa_cache: tuple[int, dns.rrset.RRset] | None = None

    # -- what a name holds ----------------------------------------------------------------

    def _in_zone(self, key: str) -> bool:
        return key == self.zone or key.endswith("." + self.zone)

    def _lookup(self, key: str) -> tuple[bool, dict[int, list[Any]]]:
        """(whether the in-zone name exists, its RRsets as type → values)."""
        zone = self.zone
        if key == zone:
            return True, {SOA: [None], NS: [self._ns_name]}
        relative = key[: -len(zone) - 1]
        labels = relative.split(".")
        if len(labels) == 1:
            if labels[0] in ("svc", "pod"):
                return True, {}
            if labels[0] == "dns-version":
                return True, {TXT: [SCHEMA_VERSION]}
            if labels[0] == "dns":
                return True, {}
        elif len(labels) == 2 and labels[1] in ("svc", "pod"):
            return labels[0] in self.records.namespaces, {}
        elif len(labels) == 2 and relative == "ns.dns":
            found: dict[int, list[Any]] = {}
            for address in self.dns_addresses:
                found.setdefault(AAAA if ":" in address else A, []).append(address)
            return True, found
        elif len(labels) == 3 and labels[2] == "pod":
            if labels[1] not in self.records.namespaces:
                return False, {}
            parsed = pod_address(labels[0])
            return (True, {parsed[1]: [parsed[0]]}) if parsed else (False, {})
        types = self.records.types(key)
        if types:
            return True, {rtype: list(values) for rtype, values in types.items()}
        return self.records.exists(key), {}

    # -- building answers ---------------------------------------------------------------

    def _rrset(self, owner: dns.name.Name, rtype: int, values: list[Any]) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(owner, IN, rtype)
        rrset.ttl = TTL
        if rtype == SRV:
            weight = max(1, 100 // len(values))
            for port, target in values:
                rrset.add(_srv(port, target, weight))
        elif rtype == SOA:
            rrset.add(self._soa.replace(serial=self.records.serial & 0xFFFFFFFF))
        else:
            for value in values:
                rrset.add(_rdata(rtype, value))
        return rrset

    def _soa_rrset(self) -> dns.rrset.RRset:
        """The zone's SOA, built once per serial (responses only read it; building it — the
        rdata's hash included — was most of the cost of a negative answer)."""
        serial = self.records.serial & 0xFFFFFFFF
        if self._soa_cache is None or self._soa_cache[0] != serial:
            self._soa_cache = (serial, self._rrset(self.zone_name, SOA, [None]))
        return self._soa_cache[1]

    def _additional(self, rtype: int, values: list[Any]) -> list[dns.rrset.RRset]:
        """Addresses of SRV and NS targets we hold (the specification's "may include")."""
        targets: list[str] = []
        if rtype == SRV:
            targets = list(dict.fromkeys(target for _port, target in values))
        elif rtype == NS:
            targets = list(values)
        out = []
        for target in targets[:32]:
            _exists, held = self._lookup(target) if self._in_zone(target) else (False, {})
            for address_type in (A, AAAA):
                if held.get(address_type):
                    out.append(self._rrset(_target_name(target), address_type, held[address_type]))
        return out

    @staticmethod
    def response(query: dns.message.Message) -> dns.message.Message:
        return dns.message.make_response(query, recursion_available=True, our_payload=OUR_PAYLOAD)

    def local(self, query: dns.message.Message) -> Answer | Forward:
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        key = name_key(qname)
        response = self.response(query)
        if key is None:
            if qname.is_subdomain(self.zone_name):
                response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(self._soa_rrset())
                response.flags |= dns.flags.AA
                return Answer(response)
            return Forward(qname, qname.to_text().lower(), qtype)
        if not self._in_zone(key):
            if qtype in (PTR, ANY) and self.records.types(key).get(PTR):
                response.flags |= dns.flags.AA
                response.answer.append(self._rrset(qname, PTR, self.records.values(key, PTR)))
                return Answer(response)
            if self.records.types(key):  # an address we know, asked for another type: NODATA
                response.flags |= dns.flags.AA
                return Answer(response)
            return Forward(qname, key, qtype)
        response.flags |= dns.flags.AA
        owner, owner_key = qname, key
        seen: set[str] = set()
        for _ in range(MAX_CNAME_CHAIN):
            exists, held = self._lookup(owner_key)
            if qtype == ANY and held:
                for rtype, values in held.items():
                    response.answer.append(self._rrset(owner, rtype, values))
                return Answer(response)
            if qtype in held:
                response.answer.append(self._rrset(owner, qtype, held[qtype]))
                response.additional.extend(self._additional(qtype, held[qtype]))
                return Answer(response)
            if CNAME in held:
                target = held[CNAME][0]
                response.answer.append(self._rrset(owner, CNAME, [target]))
                seen.add(owner_key)
                if target in seen:
                    return Answer(response)
                if not self._in_zone(target):
                    return Forward(_target_name(target), target, qtype, list(response.answer))
                owner, owner_key = _target_name(target), target
                continue
            if not exists and not self.records.synced:
                response.set_rcode(dns.rcode.SERVFAIL)
                return Answer(response, cacheable=False)
            if not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa_rrset())
            return Answer(response)
        return Answer(response)

    async def complete(self, query: dns.message.Message, forward: Forward) -> Answer:
        """Finish a ``Forward``: ask upstream (or the cache) and build the answer."""
        response = self.response(query)
        want_dnssec = bool(query.ednsflags & dns.flags.DO)
        if self.forwarder is None:
            result = None
        else:
            result = await self.forwarder.ask(forward.name, forward.rdtype, want_dnssec, forward.key)
        if result is None:
            response.set_rcode(dns.rcode.SERVFAIL)
            return Answer(response, cacheable=False)
        answer, authority, additional = result.aged(time.monotonic())
        response.answer.extend(forward.chain)
        response.set_rcode(result.rcode)
        response.answer.extend(answer)
        response.authority.extend(authority)
        response.additional.extend(additional)
        if forward.chain:
            response.flags |= dns.flags.AA
        if result.ede is not None and query.edns >= 0:
            response.use_edns(0, payload=OUR_PAYLOAD, options=[dns.edns.EDEOption(result.ede[0], result.ede[1])])
        return Answer(response, cacheable=False)
