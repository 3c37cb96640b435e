"""The Kubernetes DNS specification (kubernetes/dns docs/specification.md, schema 1.1.0),
record for record, asked with dnspython queries in wire form through the query processor.

The cluster is ``cluster_data.specification_cluster()``; each row is one question of the
specification (or of the DNS rules it relies on: NXDOMAIN for names that do not exist,
NOERROR/NODATA for names that exist without the asked type) and the exact answer.
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from k3py.agent.dns.forwarder import Forwarder
from k3py.agent.dns.resolver import Resolver
from k3py.agent.dns.wire import QueryProcessor
from tests.dns.cluster_data import endpoint_slice, ready, service, specification_cluster
from tests.dns.upstream import dnsmasq, free_port

NOERROR, NXDOMAIN = "NOERROR", "NXDOMAIN"
Z = "cluster.local."


def processor(upstream: tuple[str, int] | None = None) -> QueryProcessor:
    records = specification_cluster()
    return QueryProcessor(Resolver(records, Forwarder([upstream] if upstream else []), ["10.43.0.10"]), records)


def ask(proc: QueryProcessor, name: str, rdtype: str, **query: object) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, **query)  # type: ignore[arg-type]
    out = proc.process(message.to_wire(), False)
    if not isinstance(out, bytes):
        out = asyncio.run(out)  # type: ignore[arg-type]
    assert out is not None
    response = dns.message.from_wire(out)
    assert response.id == message.id and response.question == message.question
    return response


def answer_texts(response: dns.message.Message) -> set[str]:
    return {f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
            for rrset in response.answer for rdata in rrset}


SPEC_ROWS = [
    # 2.2 schema version
    ("dns-version." + Z, "TXT", NOERROR, {f"dns-version.{Z} 5 TXT \"1.1.0\""}),
    # 2.3.1 A/AAAA of a ClusterIP Service (dual-stack: one of each family)
    ("kubernetes.default.svc." + Z, "A", NOERROR, {f"kubernetes.default.svc.{Z} 5 A 10.43.0.1"}),
    ("dual.shop.svc." + Z, "A", NOERROR, {f"dual.shop.svc.{Z} 5 A 10.43.0.20"}),
    ("dual.shop.svc." + Z, "AAAA", NOERROR, {f"dual.shop.svc.{Z} 5 AAAA fd00:43::20"}),
    ("kubernetes.default.svc." + Z, "AAAA", NOERROR, set()),  # exists, no IPv6: NODATA
    # 2.3.2 SRV per named port; unnamed ports have none
    ("_https._tcp.kubernetes.default.svc." + Z, "SRV", NOERROR,
     {f"_https._tcp.kubernetes.default.svc.{Z} 5 SRV 0 100 443 kubernetes.default.svc.{Z}"}),
    ("_dns._udp.dual.shop.svc." + Z, "SRV", NOERROR, {f"_dns._udp.dual.shop.svc.{Z} 5 SRV 0 100 53 dual.shop.svc.{Z}"}),
    ("_dns._tcp.dual.shop.svc." + Z, "SRV", NXDOMAIN, set()),  # the port is UDP
    ("_https._tcp.dual.shop.svc." + Z, "SRV", NXDOMAIN, set()),
    # 2.3.3 PTR of cluster IPs (IPv4 and the IPv6 nibble form)
    ("1.0.43.10.in-addr.arpa.", "PTR", NOERROR, {f"1.0.43.10.in-addr.arpa. 5 PTR kubernetes.default.svc.{Z}"}),
    ("0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.", "PTR", NOERROR,
     {f"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa. 5 PTR dual.shop.svc.{Z}"}),
    # 2.4.1 headless: one A per ready endpoint (not-ready web-3 left out; unset ready counts)
    ("web.shop.svc." + Z, "A", NOERROR, {f"web.shop.svc.{Z} 5 A 10.42.0.{i}" for i in (10, 11, 12, 14)}),
    ("web-0.web.shop.svc." + Z, "A", NOERROR, {f"web-0.web.shop.svc.{Z} 5 A 10.42.0.10"}),
    ("10-42-0-12.web.shop.svc." + Z, "A", NOERROR, {f"10-42-0-12.web.shop.svc.{Z} 5 A 10.42.0.12"}),
    ("web-3.web.shop.svc." + Z, "A", NXDOMAIN, set()),
    ("web6.shop.svc." + Z, "AAAA", NOERROR, {f"web6.shop.svc.{Z} 5 AAAA fd00:42::5"}),
    ("pet.web6.shop.svc." + Z, "AAAA", NOERROR, {f"pet.web6.shop.svc.{Z} 5 AAAA fd00:42::5"}),
    ("web6.shop.svc." + Z, "A", NOERROR, set()),
    ("empty.shop.svc." + Z, "A", NXDOMAIN, set()),  # "no ready endpoints: NXDOMAIN"
    ("tolerant.shop.svc." + Z, "A", NOERROR, {f"tolerant.shop.svc.{Z} 5 A 10.42.0.30"}),
    # 2.4.2 SRV: ready endpoints × named ports, targets the endpoints' names
    ("_http._tcp.web.shop.svc." + Z, "SRV", NOERROR, {
        f"_http._tcp.web.shop.svc.{Z} 5 SRV 0 25 8080 {h}.web.shop.svc.{Z}"
        for h in ("web-0", "web-1", "10-42-0-12", "web-4")}),
    # 2.4.3 PTR of endpoint addresses
    ("10.0.42.10.in-addr.arpa.", "PTR", NOERROR, {f"10.0.42.10.in-addr.arpa. 5 PTR web-0.web.shop.svc.{Z}"}),
    ("5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.0.0.d.f.ip6.arpa.", "PTR", NOERROR,
     {f"5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.0.0.d.f.ip6.arpa. 5 PTR pet.web6.shop.svc.{Z}"}),
    # 2.5 ExternalName: a CNAME (asked as CNAME here; followed upstream in the next test)
    ("ext.shop.svc." + Z, "CNAME", NOERROR, {f"ext.shop.svc.{Z} 5 CNAME www.external.test."}),
    ("alias.shop.svc." + Z, "A", NOERROR, {f"alias.shop.svc.{Z} 5 CNAME kubernetes.default.svc.{Z}",
                                           f"kubernetes.default.svc.{Z} 5 A 10.43.0.1"}),
    ("ext-ip.shop.svc." + Z, "A", NXDOMAIN, set()),  # an IP is no name to alias (as CoreDNS)
    # 2.6 pod names: any address, in an existing namespace
    ("10-42-0-99.shop.pod." + Z, "A", NOERROR, {f"10-42-0-99.shop.pod.{Z} 5 A 10.42.0.99"}),
    ("fd00-42--7.shop.pod." + Z, "AAAA", NOERROR, {f"fd00-42--7.shop.pod.{Z} 5 AAAA fd00:42::7"}),
    ("10-42-0-99.shop.pod." + Z, "AAAA", NOERROR, set()),
    ("10-42-0-99.nosuch.pod." + Z, "A", NXDOMAIN, set()),
    ("10-42-0-299.shop.pod." + Z, "A", NXDOMAIN, set()),
    # names that exist without records (NODATA) and names that do not (NXDOMAIN)
    (Z, "A", NOERROR, set()),
    ("svc." + Z, "A", NOERROR, set()),
    ("pod." + Z, "A", NOERROR, set()),
    ("shop.svc." + Z, "A", NOERROR, set()),
    ("empty-ns.svc." + Z, "A", NOERROR, set()),  # a namespace without Services still exists
    ("nosuch.svc." + Z, "A", NXDOMAIN, set()),
    ("_tcp.web.shop.svc." + Z, "A", NOERROR, set()),  # empty non-terminal above _http._tcp
    ("nosuch.shop.svc." + Z, "A", NXDOMAIN, set()),
    ("web.shop.svc." + Z, "TXT", NOERROR, set()),
    ("a.b.c.d.e.f.g.web-0.web.shop.svc." + Z, "A", NXDOMAIN, set()),
    ("nosuch." + Z, "A", NXDOMAIN, set()),
]


@pytest.mark.parametrize(("name", "rdtype", "rcode", "answers"), SPEC_ROWS, ids=[f"{r[1]} {r[0]}" for r in SPEC_ROWS])
def test_specification_records(name: str, rdtype: str, rcode: str, answers: set[str]) -> None:
    response = ask(processor(), name, rdtype)
    assert dns.rcode.to_text(response.rcode()) == rcode
    assert answer_texts(response) == answers
    assert response.flags & dns.flags.AA and response.flags & dns.flags.RA
    if not answers:  # negative answers carry the zone's SOA, for 5 s of negative caching
        assert [(r.name.to_text(), r.rdtype, r.ttl, r[0].minimum) for r in response.authority] == [
            (Z, dns.rdatatype.SOA, 5, 5)]


def test_questions_are_case_insensitive_and_answers_keep_the_question_case() -> None:
    response = ask(processor(), "KuberNetes.DEFAULT.svc.Cluster.Local.", "A")
    assert answer_texts(response) == {"KuberNetes.DEFAULT.svc.Cluster.Local. 5 A 10.43.0.1"}


def test_srv_answers_carry_the_targets_addresses() -> None:
    response = ask(processor(), "_http._tcp.web.shop.svc." + Z, "SRV")
    additional = {f"{r.name} {rd}" for r in response.additional for rd in r}
    assert f"web-0.web.shop.svc.{Z} 10.42.0.10" in additional and len(additional) == 4


def test_cname_loops_end_without_hanging() -> None:
    response = ask(processor(), "loop-a.shop.svc." + Z, "A")
    assert answer_texts(response) == {f"loop-a.shop.svc.{Z} 5 CNAME loop-b.shop.svc.{Z}",
                                      f"loop-b.shop.svc.{Z} 5 CNAME loop-a.shop.svc.{Z}"}


def test_records_follow_changes_incrementally() -> None:
    proc = processor()
    records = proc.records
    first = ask(proc, "web.shop.svc." + Z, "A")
    assert len(answer_texts(first)) == 4
    records.set_slice("shop/web-a", endpoint_slice("web-a", "shop", "web", [ready("10.42.0.10", "web-0")]))
    assert answer_texts(ask(proc, "web.shop.svc." + Z, "A")) == {f"web.shop.svc.{Z} 5 A 10.42.0.10"}
    assert ask(proc, "web-1.web.shop.svc." + Z, "A").rcode() == dns.rcode.NXDOMAIN
    gone = ask(proc, "11.0.42.10.in-addr.arpa.", "PTR")  # no longer ours: asked upstream (none here)
    assert not gone.answer and gone.rcode() == dns.rcode.SERVFAIL
    records.remove_service("shop/web")
    assert ask(proc, "web.shop.svc." + Z, "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(proc, "web-0.web.shop.svc." + Z, "A").rcode() == dns.rcode.NXDOMAIN
    # the slice is kept: the Service coming back brings its endpoints back
    records.set_service(service("web", "shop", "None", [("http", 80, "TCP")]))
    assert answer_texts(ask(proc, "web-0.web.shop.svc." + Z, "A")) == {f"web-0.web.shop.svc.{Z} 5 A 10.42.0.10"}
    # a headless Service turned ClusterIP: the service name has the cluster IP alone
    records.set_service(service("web", "shop", "10.43.0.77", [("http", 80, "TCP")]))
    assert answer_texts(ask(proc, "web.shop.svc." + Z, "A")) == {f"web.shop.svc.{Z} 5 A 10.43.0.77"}
    records.remove_namespace("empty-ns")
    assert ask(proc, "empty-ns.svc." + Z, "A").rcode() == dns.rcode.NXDOMAIN


def test_before_the_first_list_unknown_names_are_servfail_not_nxdomain() -> None:
    proc = processor()
    proc.records.synced = False
    assert ask(proc, "nosuch.shop.svc." + Z, "A").rcode() == dns.rcode.SERVFAIL
    assert ask(proc, "kubernetes.default.svc." + Z, "A").rcode() == dns.rcode.NOERROR


def test_external_name_is_followed_upstream_and_other_names_forwarded() -> None:
    port = free_port()
    with dnsmasq("127.0.0.1", port):
        proc = processor(("127.0.0.1", port))
        response = ask(proc, "ext.shop.svc." + Z, "A")
        assert answer_texts(response) == {f"ext.shop.svc.{Z} 5 CNAME www.external.test.",
                                          "www.external.test. 60 A 192.0.2.81"}
        assert response.rcode() == dns.rcode.NOERROR
        aaaa = ask(proc, "api.external.test.", "AAAA")
        assert answer_texts(aaaa) == {"api.external.test. 60 AAAA 2001:db8::82"}
        assert not aaaa.flags & dns.flags.AA  # relayed, not ours
        assert ask(proc, "nothing.external.test.", "A").rcode() == dns.rcode.NXDOMAIN
        # PTR for an address the cluster does not know goes upstream too (dnsmasq: NXDOMAIN)
        assert ask(proc, "99.0.42.10.in-addr.arpa.", "PTR").rcode() in (dns.rcode.NXDOMAIN, dns.rcode.REFUSED)
