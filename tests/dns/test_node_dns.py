"""ClusterDNS as the node agent runs it, fed by informers (over the in-memory transport),
listening on loopback: objects created, changed and deleted through the client show up in
answers; a resolv.conf naming only loopback resolvers gives no upstream at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode

from k3py.agent.dns.node import ClusterDNS, ClusterDNSConfig
from k3py.client.interface import ENDPOINTSLICES, NAMESPACES, SERVICES, Client
from k3py.client.memory import MemoryTransport
from tests.dns.cluster_data import endpoint_slice, ready, service


async def ask(dns_server: ClusterDNS, name: str, rdtype: str = "A") -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=dns_server.port, timeout=3)


async def until(check, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.05)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_records_follow_the_api_and_loopback_upstreams_are_never_used(tmp_path: Path) -> None:
    client = Client(MemoryTransport())
    await client.create(NAMESPACES, {"metadata": {"name": "shop"}})
    await client.create(SERVICES, service("db", "shop", "10.43.0.30", [("pg", 5432, "TCP")]), "shop")
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver ::1\n")  # loopback only: never forwarded to
    server = ClusterDNS(client, ClusterDNSConfig(address="127.0.0.1", port=0, interface="",
                                                 resolv_conf=str(conf)))
    await server.start()
    try:
        assert server.records.synced
        first = await ask(server, "db.shop.svc.cluster.local")
        assert [str(r) for r in first.answer[0]] == ["10.43.0.30"]
        # forwarding: the file names only loopback resolvers, so nothing is asked
        refused = await ask(server, "www.external.test")
        assert refused.rcode() == dns.rcode.SERVFAIL and server.forwarder.upstream_queries == 0
        # a headless Service and its slice, created through the API
        await client.create(SERVICES, service("web", "shop", "None", [("http", 80, "TCP")]), "shop")
        await client.create(ENDPOINTSLICES, endpoint_slice("web-a", "shop", "web", [ready("10.42.0.7", "web-0")],
                                                           [("http", 8080, "TCP")]), "shop")

        async def web_answers() -> list[str]:
            reply = await ask(server, "web-0.web.shop.svc.cluster.local")
            return [str(r) for r in reply.answer[0]] if reply.answer else []

        assert await until(web_answers, "the StatefulSet-style name") == ["10.42.0.7"]
        await client.delete(SERVICES, "web", "shop")

        async def web_gone() -> bool:
            return (await ask(server, "web.shop.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN

        await until(web_gone, "NXDOMAIN after the Service is deleted")
        assert (await ask(server, "late.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN
        await client.create(NAMESPACES, {"metadata": {"name": "late"}})

        async def namespace_known() -> bool:
            reply = await ask(server, "late.svc.cluster.local")
            return reply.rcode() == dns.rcode.NOERROR and not reply.answer

        await until(namespace_known, "a new namespace's name to exist (NODATA)")
    finally:
        await server.stop()
