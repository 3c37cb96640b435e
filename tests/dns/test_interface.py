"""The node-local DNS address on its interface, in a network namespace of the test's own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from k3py.agent.dns.interface import ensure_dns_interface, remove_dns_interface
from tests.cluster import TestHost


@pytest.fixture
def host() -> Iterator[TestHost]:
    made = TestHost("k3py-dnsif")
    yield made
    made.close()


def addresses(host: TestHost) -> list[str]:
    out = subprocess.run(["ip", "-n", host.name, "-4", "-o", "addr", "show", "dev", "k3py-dns"],
                         capture_output=True, text=True, check=False).stdout
    return sorted(line.split()[3] for line in out.splitlines())


def test_the_address_is_held_alone_repaired_and_removed(host: TestHost) -> None:
    host.in_netns(ensure_dns_interface, "k3py-dns", "10.43.0.10")
    assert addresses(host) == ["10.43.0.10/32"]
    link = subprocess.run(["ip", "-n", host.name, "link", "show", "k3py-dns"], capture_output=True, text=True).stdout
    assert "UP" in link
    route = subprocess.run(["ip", "-n", host.name, "route", "get", "10.43.0.10"], capture_output=True, text=True).stdout
    assert route.startswith("local 10.43.0.10")  # delivered to the node itself
    # a changed --cluster-dns: the old address goes, the new one stays alone; twice is harmless
    host.in_netns(ensure_dns_interface, "k3py-dns", "10.43.0.53")
    host.in_netns(ensure_dns_interface, "k3py-dns", "10.43.0.53")
    assert addresses(host) == ["10.43.0.53/32"]
    host.in_netns(remove_dns_interface, "k3py-dns")
    assert addresses(host) == []
    host.in_netns(remove_dns_interface, "k3py-dns")  # already gone: fine


def test_cluster_dns_listens_on_its_interface_and_takes_it_away_on_stop(host: TestHost) -> None:
    """ClusterDNS as the node agent runs it (interface and port 53), on a loop whose thread
    lives in the test's namespace."""
    import asyncio

    import dns.asyncquery
    import dns.message

    from k3py.agent.dns.node import ClusterDNS, ClusterDNSConfig
    from k3py.client.interface import NAMESPACES, Client
    from k3py.client.memory import MemoryTransport

    async def run() -> tuple[list[str], list[str], list[str]]:
        client = Client(MemoryTransport())
        await client.create(NAMESPACES, {"metadata": {"name": "default"}})
        server = ClusterDNS(client, ClusterDNSConfig(upstreams=()))
        await server.start()
        try:
            during = addresses(host)
            reply = await dns.asyncquery.udp(dns.message.make_query("ns.dns.cluster.local", "A"), "10.43.0.10", timeout=3)
            tcp = await dns.asyncquery.tcp(dns.message.make_query("ns.dns.cluster.local", "A"), "10.43.0.10", timeout=3)
        finally:
            await server.stop()
        return during, [str(r) for r in reply.answer[0]], [str(r) for r in tcp.answer[0]]

    during, over_udp, over_tcp = host.in_netns(lambda: asyncio.run(run()))
    assert during == ["10.43.0.10/32"] and over_udp == over_tcp == ["10.43.0.10"]
    assert addresses(host) == []  # removed by the clean stop
