"""The proxy's table carrying real packets: pods, the node itself and another host as clients.

One node (see conftest.py) for the module, with pods ``pod-a``, ``pod-b``, ``pod-c`` serving and
``client`` asking; each test programs its own Services (its own ClusterIPs) through the proxy's
worker-thread state, exactly what the agent's informers would hand it, and asserts what a
client sees: which pod answered and which address that pod saw, or how a connection failed.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.agent.proxy.proxy import SERVICE_ROUTE_PROTOCOL, remove_service_proxy
from tests.cluster import TestHost
from tests.proxy.harness import (
    NODE_IP,
    OUTSIDE_IP,
    POD_TCP_PORT,
    POD_UDP_PORT,
    ProxyNode,
    Server,
    connect_error,
    connect_outside,
    endpoint,
    endpoint_slice,
    make_proxy_node,
    run_in,
    service,
    tcp_request,
    udp_ask,
    udp_client,
)

REFUSED_WITHIN = 0.5  # seconds: "at once" — a timeout would take IO_TIMEOUT


@pytest.fixture(scope="module")
def pods(proxy_node: ProxyNode) -> dict[str, object]:
    found = {name: proxy_node.add_pod(name) for name in ("pod-a", "pod-b", "pod-c")}
    found["client"] = proxy_node.add_pod("client")
    return found


@pytest.fixture(scope="module")
def outside(proxy_node: ProxyNode) -> TestHost:
    return connect_outside(proxy_node)


def _ip(pods: dict[str, object], name: str) -> str:
    return pods[name].ip  # type: ignore[attr-defined,no-any-return]


def _host(pods: dict[str, object], name: str) -> TestHost:
    return pods[name].host  # type: ignore[attr-defined,no-any-return]


def _who(answer: str) -> str:
    return answer.split()[0]


def _peer(answer: str) -> str:
    return answer.split()[1]


def _answers(client: TestHost, address: str, port: int, count: int) -> Counter[str]:
    return Counter(_who(tcp_request(client, address, port)) for _ in range(count))


def test_cluster_ip_balances_over_every_ready_endpoint_from_pods_and_the_node(
    proxy_node: ProxyNode, pods: dict[str, object]
) -> None:
    svc = service("web", "10.43.1.10", [{"name": "http", "port": 80, "protocol": "TCP"}])
    backends = [endpoint(_ip(pods, n)) for n in ("pod-a", "pod-b", "pod-c")]
    proxy_node.apply(svc, endpoint_slice("web", backends))
    seen = _answers(_host(pods, "client"), "10.43.1.10", 80, 30)
    assert set(seen) == {"pod-a", "pod-b", "pod-c"}, seen
    # A pod reached through a Service by a pod of its own node sees the bridge address: such
    # flows are masqueraded, or (without br_netfilter) the answer would cross the bridge
    # straight back, past the node's conntrack and its reverse NAT.
    assert _peer(tcp_request(_host(pods, "client"), "10.43.1.10", 80)) == "10.42.0.1"
    # From the node itself (output hook): answered, from the bridge address.
    answer = tcp_request(proxy_node.host, "10.43.1.10", 80)
    assert _who(answer) in {"pod-a", "pod-b", "pod-c"} and _peer(answer) == "10.42.0.1"
    # A port the Service does not have, and an address no Service has, are refused at once.
    for address, port in (("10.43.1.10", 81), ("10.43.1.11", 80)):
        for client in (_host(pods, "client"), proxy_node.host):
            code, took = connect_error(client, address, port)
            assert code == errno.ECONNREFUSED and took < REFUSED_WITHIN, (address, port, code, took)


def test_a_service_without_endpoints_refuses_at_once_and_comes_back(
    proxy_node: ProxyNode, pods: dict[str, object]
) -> None:
    svc = service("scaled", "10.43.1.20", type="NodePort",
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30020}])
    full = endpoint_slice("scaled", [endpoint(_ip(pods, "pod-a"))])
    proxy_node.apply(svc, full)
    assert _who(tcp_request(_host(pods, "client"), "10.43.1.20", 80)) == "pod-a"
    proxy_node.apply(endpoint_slice("scaled", []))
    for client, address, port in ((_host(pods, "client"), "10.43.1.20", 80), (proxy_node.host, "10.43.1.20", 80),
                                  (_host(pods, "client"), "10.42.0.1", 30020)):
        code, took = connect_error(client, address, port)
        assert code == errno.ECONNREFUSED and took < REFUSED_WITHIN, (client.name, address, code, took)
    # Not ready is the same as gone.
    proxy_node.apply(endpoint_slice("scaled", [endpoint(_ip(pods, "pod-a"), ready=False)]))
    assert connect_error(_host(pods, "client"), "10.43.1.20", 80)[0] == errno.ECONNREFUSED
    proxy_node.apply(full)
    assert _who(tcp_request(_host(pods, "client"), "10.43.1.20", 80)) == "pod-a"
    assert _who(tcp_request(_host(pods, "client"), "10.42.0.1", 30020)) == "pod-a"


def test_an_endpoint_change_is_set_elements_only(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    svc = service("churn", "10.43.1.30")
    proxy_node.apply(svc, endpoint_slice("churn", [endpoint(_ip(pods, "pod-a"))]))
    chains_before = proxy_node.sh("nft", "list", "chains", "ip").stdout
    scripts_before = len(proxy_node.nft_scripts)
    for backends in (("pod-a", "pod-b"), ("pod-b",), ("pod-b", "pod-c"), ("pod-a", "pod-b", "pod-c")):
        report = proxy_node.apply(endpoint_slice("churn", [endpoint(_ip(pods, n)) for n in backends]))
        assert report.stats.chains_added == report.stats.chains_removed == report.stats.sets_added == 0
        assert set(_answers(_host(pods, "client"), "10.43.1.30", 80, 24)) == set(backends)
    # No nft process ran, no chain changed: only the Service's endpoints map, over netlink.
    assert len(proxy_node.nft_scripts) == scripts_before
    assert proxy_node.sh("nft", "list", "chains", "ip").stdout == chains_before


def test_node_port_from_the_node_and_from_another_host(
    proxy_node: ProxyNode, pods: dict[str, object], outside: TestHost
) -> None:
    svc = service("np", "10.43.1.40", type="NodePort", externalTrafficPolicy="Cluster",
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30040}])
    proxy_node.apply(svc, endpoint_slice("np", [endpoint(_ip(pods, "pod-a")), endpoint(_ip(pods, "pod-b"))]))
    for address in (NODE_IP, "10.42.0.1"):  # every address of the node
        assert _who(tcp_request(proxy_node.host, address, 30040)) in {"pod-a", "pod-b"}
    seen = Counter()
    for _ in range(16):
        answer = tcp_request(outside, NODE_IP, 30040)
        seen[_who(answer)] += 1
        # Cluster policy: masqueraded (the endpoint could be on another node).
        assert _peer(answer) != OUTSIDE_IP
    assert set(seen) == {"pod-a", "pod-b"}
    # Pods reach NodePorts on the node's address too.
    assert _who(tcp_request(_host(pods, "client"), NODE_IP, 30040)) in {"pod-a", "pod-b"}
    # Not on 127.0.0.1 (as kube-proxy's nftables mode).
    assert connect_error(proxy_node.host, "127.0.0.1", 30040)[0] == errno.ECONNREFUSED


def test_external_traffic_policy_local_keeps_the_client_address_and_stays_on_the_node(
    proxy_node: ProxyNode, pods: dict[str, object], outside: TestHost
) -> None:
    svc = service("local", "10.43.1.50", type="NodePort", externalTrafficPolicy="Local",
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30050}])
    # pod-b's endpoint is listed as another node's: Local traffic must not go there.
    slice_ = endpoint_slice("local", [endpoint(_ip(pods, "pod-a")), endpoint(_ip(pods, "pod-b"), node="node-b")])
    proxy_node.apply(svc, slice_)
    for _ in range(12):
        answer = tcp_request(outside, NODE_IP, 30050)
        assert answer == f"pod-a {OUTSIDE_IP}"  # only the local endpoint, the real client address
    # Pods short-circuit to every endpoint of the cluster, the node too.
    assert set(_answers(_host(pods, "client"), NODE_IP, 30050, 24)) == {"pod-a", "pod-b"}
    assert set(_answers(proxy_node.host, NODE_IP, 30050, 24)) == {"pod-a", "pod-b"}
    # No local endpoint left: traffic from outside is dropped (upstream), pods still get through.
    proxy_node.apply(endpoint_slice("local", [endpoint(_ip(pods, "pod-b"), node="node-b")]))
    with pytest.raises(TimeoutError):
        tcp_request(outside, NODE_IP, 30050, timeout=1.0)
    assert _who(tcp_request(_host(pods, "client"), NODE_IP, 30050)) == "pod-b"


def test_load_balancer_ingress_and_external_ips(
    proxy_node: ProxyNode, pods: dict[str, object], outside: TestHost
) -> None:
    lb = service("lb", "10.43.1.60", type="LoadBalancer",
                 ports=[{"name": "http", "port": 8060, "protocol": "TCP", "nodePort": 30060}],
                 status={"loadBalancer": {"ingress": [{"ip": NODE_IP, "ipMode": "VIP"}]}})
    ext = service("ext", "10.43.1.61", externalIPs=["198.51.100.7"])
    proxy_node.apply(lb, ext, endpoint_slice("lb", [endpoint(_ip(pods, "pod-c"))]),
                     endpoint_slice("ext", [endpoint(_ip(pods, "pod-b"))]))
    assert _who(tcp_request(outside, NODE_IP, 8060)) == "pod-c"
    assert _who(tcp_request(proxy_node.host, NODE_IP, 8060)) == "pod-c"
    assert _who(tcp_request(outside, "198.51.100.7", 80)) == "pod-b"
    assert _who(tcp_request(_host(pods, "client"), "198.51.100.7", 80)) == "pod-b"


def test_clashing_load_balancer_addresses_go_to_the_oldest_service(
    proxy_node: ProxyNode, pods: dict[str, object], outside: TestHost
) -> None:
    ingress = {"loadBalancer": {"ingress": [{"ip": NODE_IP}]}}
    ports = [{"name": "http", "port": 8070, "protocol": "TCP", "nodePort": 30070}]
    older = service("lb-old", "10.43.1.70", type="LoadBalancer", ports=ports, status=ingress,
                    created="2024-01-01T00:00:00Z")
    newer = service("lb-new", "10.43.1.71", type="LoadBalancer", status=ingress, created="2024-02-01T00:00:00Z",
                    ports=[{"name": "http", "port": 8070, "protocol": "TCP", "nodePort": 30071}])
    proxy_node.apply(newer, older, endpoint_slice("lb-old", [endpoint(_ip(pods, "pod-a"))]),
                     endpoint_slice("lb-new", [endpoint(_ip(pods, "pod-b"))]))
    assert _who(tcp_request(outside, NODE_IP, 8070)) == "pod-a"
    proxy_node.delete(older)
    assert _who(tcp_request(outside, NODE_IP, 8070)) == "pod-b"


def test_internal_traffic_policy_local(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    svc = service("itp", "10.43.1.80", internalTrafficPolicy="Local")
    proxy_node.apply(svc, endpoint_slice("itp", [endpoint(_ip(pods, "pod-a")),
                                                 endpoint(_ip(pods, "pod-b"), node="node-b")]))
    assert set(_answers(_host(pods, "client"), "10.43.1.80", 80, 16)) == {"pod-a"}
    proxy_node.apply(endpoint_slice("itp", [endpoint(_ip(pods, "pod-b"), node="node-b")]))
    with pytest.raises(TimeoutError):  # dropped, as upstream: the Service has endpoints elsewhere
        tcp_request(_host(pods, "client"), "10.43.1.80", 80, timeout=1.0)


def test_session_affinity_client_ip_sticks(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    svc = service("sticky", "10.43.1.90", sessionAffinity="ClientIP",
                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})
    backends = [endpoint(_ip(pods, n)) for n in ("pod-a", "pod-b", "pod-c")]
    proxy_node.apply(svc, endpoint_slice("sticky", backends))
    first = _answers(_host(pods, "client"), "10.43.1.90", 80, 12)
    assert len(first) == 1, first
    from_node = _answers(proxy_node.host, "10.43.1.90", 80, 12)
    assert len(from_node) == 1, from_node
    assert "timeout 10m" in proxy_node.nft_table()
    # The client's endpoint goes: it moves to another one and sticks there; the others stay.
    chosen = next(iter(first))
    rest = [endpoint(_ip(pods, n)) for n in ("pod-a", "pod-b", "pod-c") if n != chosen]
    proxy_node.apply(endpoint_slice("sticky", rest))
    second = _answers(_host(pods, "client"), "10.43.1.90", 80, 12)
    assert len(second) == 1 and chosen not in second, second


def test_hairpin_a_pod_reaches_itself_through_its_service(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    svc = service("self", "10.43.2.10")
    proxy_node.apply(svc, endpoint_slice("self", [endpoint(_ip(pods, "pod-a"))]))
    answer = tcp_request(_host(pods, "pod-a"), "10.43.2.10", 80)
    assert _who(answer) == "pod-a"
    assert _peer(answer) == "10.42.0.1"  # masqueraded, or the answer would skip conntrack


def test_terminating_endpoints_only_when_no_ready_one_is_left(
    proxy_node: ProxyNode, pods: dict[str, object]
) -> None:
    svc = service("term", "10.43.2.20")
    terminating = endpoint(_ip(pods, "pod-b"), ready=False, serving=True, terminating=True)
    proxy_node.apply(svc, endpoint_slice("term", [endpoint(_ip(pods, "pod-a")), terminating]))
    assert set(_answers(_host(pods, "client"), "10.43.2.20", 80, 16)) == {"pod-a"}
    proxy_node.apply(endpoint_slice("term", [terminating]))
    assert set(_answers(_host(pods, "client"), "10.43.2.20", 80, 8)) == {"pod-b"}
    gone = endpoint(_ip(pods, "pod-b"), ready=False, serving=False, terminating=True)
    proxy_node.apply(endpoint_slice("term", [gone]))
    assert connect_error(_host(pods, "client"), "10.43.2.20", 80)[0] == errno.ECONNREFUSED


def test_a_service_without_selector_reaches_a_server_outside_the_cluster(
    proxy_node: ProxyNode, pods: dict[str, object], outside: TestHost
) -> None:
    server = Server(outside, "outside-server", tcp_port=9090, udp_port=9091)
    try:
        svc = service("external-db", "10.43.2.30", [{"name": "db", "port": 5432, "protocol": "TCP"}])
        manual = endpoint_slice("external-db", [{"addresses": [OUTSIDE_IP]}], name="external-db-manual",
                                ports=[{"name": "db", "port": 9090, "protocol": "TCP"}])
        proxy_node.apply(svc, manual)
        answer = tcp_request(_host(pods, "client"), "10.43.2.30", 5432)
        assert _who(answer) == "outside-server" and _peer(answer) == NODE_IP  # pod egress masqueraded
        assert _who(tcp_request(proxy_node.host, "10.43.2.30", 5432)) == "outside-server"
    finally:
        server.close()


def test_a_udp_flow_follows_its_endpoint_when_it_is_replaced(
    proxy_node: ProxyNode, pods: dict[str, object]
) -> None:
    ports = [{"name": "echo", "port": 53, "protocol": "UDP"}]
    target = [{"name": "echo", "port": POD_UDP_PORT, "protocol": "UDP"}]
    proxy_node.apply(service("echo", "10.43.2.40", ports),
                     endpoint_slice("echo", [endpoint(_ip(pods, "pod-a"))], ports=target))
    sock = udp_client(_host(pods, "client"))  # one socket: one conntrack flow, refreshed by use
    try:
        assert udp_ask(sock, "10.43.2.40", 53) == "pod-a"
        # The endpoint is replaced (pod-a still answers on its address, as a pod that is being
        # deleted would for a moment): the flow must move to pod-b, not stay with pod-a.
        proxy_node.apply(endpoint_slice("echo", [endpoint(_ip(pods, "pod-b"))], ports=target))
        assert [udp_ask(sock, "10.43.2.40", 53) for _ in range(3)] == ["pod-b"] * 3
    finally:
        sock.close()


def test_a_node_local_service_gets_no_rules(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    # The cluster DNS contract: the Service's address is on the node itself, answered there.
    proxy_node.sh("ip", "addr", "add", "10.43.0.10/32", "dev", "lo")
    listener = Server(proxy_node.host, "node-dns", tcp_port=53, udp_port=53)
    try:
        dns = service("kube-dns", "10.43.0.10", namespace="kube-system",
                      annotations={"k3py.io/node-local": "true"},
                      ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
        proxy_node.apply(dns)
        assert "kube-dns" not in proxy_node.nft_table()
        sock = udp_client(_host(pods, "client"))
        try:
            assert udp_ask(sock, "10.43.0.10", 53) == "node-dns"
        finally:
            sock.close()
        assert _who(tcp_request(_host(pods, "client"), "10.43.0.10", 53)) == "node-dns"
        assert _who(tcp_request(proxy_node.host, "10.43.0.10", 53)) == "node-dns"
    finally:
        listener.close()
        proxy_node.sh("ip", "addr", "del", "10.43.0.10/32", "dev", "lo")


def test_a_service_cannot_capture_the_nodes_own_ports(
    proxy_node: ProxyNode, pods: dict[str, object], outside: TestHost
) -> None:
    """Attack: a LoadBalancer on port 6443 (ServiceLB hands out the node's address) or an
    externalIP naming the node on 10250 would take over the API server's or the kubelet's
    connections. The node's reserved ports stay its own."""
    listener = Server(proxy_node.host, "the-api-server", tcp_port=6443, udp_port=6443)
    kubelet = Server(proxy_node.host, "the-kubelet", tcp_port=10250, udp_port=10250)
    try:
        hijack = service("hijack", "10.43.2.50", type="LoadBalancer",
                         ports=[{"name": "https", "port": 6443, "protocol": "TCP", "nodePort": 30050 + 1}],
                         status={"loadBalancer": {"ingress": [{"ip": NODE_IP}]}})
        hijack2 = service("hijack2", "10.43.2.51", externalIPs=[NODE_IP, "10.42.0.1"],
                          ports=[{"name": "https", "port": 10250, "protocol": "TCP"}])
        proxy_node.apply(hijack, hijack2, endpoint_slice("hijack", [endpoint(_ip(pods, "pod-a"))],
                                                         ports=[{"name": "https", "port": POD_TCP_PORT, "protocol": "TCP"}]),
                         endpoint_slice("hijack2", [endpoint(_ip(pods, "pod-a"))],
                                        ports=[{"name": "https", "port": POD_TCP_PORT, "protocol": "TCP"}]))
        for client in (outside, _host(pods, "client"), proxy_node.host):
            assert _who(tcp_request(client, NODE_IP, 6443)) == "the-api-server"
            assert _who(tcp_request(client, NODE_IP, 10250)) == "the-kubelet"
        assert _who(tcp_request(_host(pods, "client"), "10.42.0.1", 10250)) == "the-kubelet"
        # The Services themselves still work on their ClusterIPs.
        assert _who(tcp_request(_host(pods, "client"), "10.43.2.50", 6443)) == "pod-a"
    finally:
        listener.close()
        kubelet.close()


def test_host_ports_keep_working_next_to_the_proxy(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    from k3py.agent.network import HostPort

    host = proxy_node.namespace("k3py-pxh")
    pod_ip = proxy_node.host.in_netns(proxy_node.pods.setup, "hostport-pod", f"/run/netns/{host.name}",
                                      [HostPort(host_port=9443, container_port=POD_TCP_PORT)])
    server = Server(host, "hostport-pod")
    try:
        proxy_node.apply(service("hp", "10.43.2.60"), endpoint_slice("hp", [endpoint(pod_ip.ip)]))
        assert _who(tcp_request(_host(pods, "client"), "10.42.0.1", 9443)) == "hostport-pod"
        assert _who(tcp_request(_host(pods, "client"), "10.43.2.60", 80)) == "hostport-pod"
        tables = proxy_node.sh("nft", "list", "tables").stdout
        assert "table ip k3py-nat" in tables and f"table ip {proxy_node.state.config.table}" in tables
    finally:
        server.close()
        proxy_node.host.in_netns(proxy_node.pods.teardown, "hostport-pod")


def test_sctp_services_are_programmed(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    svc = service("sctp", "10.43.2.70", [{"name": "s", "port": 3868, "protocol": "SCTP"}])
    proxy_node.apply(svc, endpoint_slice("sctp", [endpoint(_ip(pods, "pod-a"))],
                                         ports=[{"name": "s", "port": 3868, "protocol": "SCTP"}]))
    table = proxy_node.nft_table()
    assert "meta l4proto sctp dnat ip to numgen random mod 65536 map" in table
    assert "10.43.2.70 . sctp . 3868" in table


class _HeldConnection:
    """A TCP connection through a Service kept open across the test, echoing lines."""

    def __init__(self, server_host: TestHost, client_host: TestHost, address: str, port: int) -> None:
        self.listener = server_host.in_netns(socket.create_server, ("0.0.0.0", 7070))
        self.listener.settimeout(5)
        self.client = client_host.in_netns(socket.create_connection, (address, port), 5)
        self.client.settimeout(5)
        self.conn, _peer = self.listener.accept()
        self.conn.settimeout(5)

    def round_trip(self, text: bytes) -> bytes:
        self.client.sendall(text)
        got = self.conn.recv(64)
        self.conn.sendall(got.upper())
        return self.client.recv(64)

    def reconnect(self, client_host: TestHost, address: str, port: int) -> bytes:
        with client_host.in_netns(socket.create_connection, (address, port), 5) as client:
            client.settimeout(5)
            conn, _peer = self.listener.accept()
            with conn:
                client.sendall(b"new\n")
                conn.sendall(conn.recv(64).upper())
                return client.recv(64)

    def close(self) -> None:
        for sock in (self.client, self.conn, self.listener):
            sock.close()


def test_a_restart_reconciles_the_table_in_place(proxy_node: ProxyNode, pods: dict[str, object]) -> None:
    svc = service("held", "10.43.2.80", [{"name": "x", "port": 7070, "protocol": "TCP"}])
    gone = service("gone-while-down", "10.43.2.81")
    slice_ = endpoint_slice("held", [endpoint(_ip(pods, "pod-c"))], ports=[{"name": "x", "port": 7070, "protocol": "TCP"}])
    proxy_node.apply(svc, gone, slice_)
    held = _HeldConnection(_host(pods, "pod-c"), _host(pods, "client"), "10.43.2.80", 7070)
    try:
        assert held.round_trip(b"before\n") == b"BEFORE\n"
        chains_before = set(proxy_node.sh("nft", "list", "chains", "ip").stdout.split())
        report = proxy_node.restart(forget=(("default", "gone-while-down"),))
        assert report.stats.full and report.stats.chains_added == 0
        assert report.stats.chains_removed > 0  # the deleted Service's chains
        assert held.round_trip(b"after\n") == b"AFTER\n"  # the established connection lived on
        again = _HeldConnection.reconnect(held, _host(pods, "client"), "10.43.2.80", 7070)
        assert again == b"NEW\n"  # and new connections are made as before
        assert connect_error(_host(pods, "client"), "10.43.2.81", 80)[0] == errno.ECONNREFUSED
        chains_after = set(proxy_node.sh("nft", "list", "chains", "ip").stdout.split())
        assert chains_after < chains_before
    finally:
        held.close()


@pytest.fixture
def lone_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyNode]:
    node = make_proxy_node(tmp_path_factory.mktemp("lone"))
    try:
        yield node
    finally:
        node.close()


def test_removing_the_proxy_leaves_no_table_and_no_route(lone_node: ProxyNode) -> None:
    pod = lone_node.add_pod("solo")
    lone_node.apply(service("solo", "10.43.3.1"), endpoint_slice("solo", [endpoint(pod.ip)]))
    assert _who(tcp_request(lone_node.host, "10.43.3.1", 80)) == "solo"
    table = lone_node.state.config.table
    assert table in lone_node.sh("nft", "list", "tables").stdout
    assert lone_node.host.in_netns(remove_service_proxy, lone_node.state.config) is True
    assert table not in lone_node.sh("nft", "list", "tables").stdout
    assert "k3py-nat" in lone_node.sh("nft", "list", "tables").stdout  # the pod network's stays
    assert lone_node.sh("ip", "route", "show", "proto", str(SERVICE_ROUTE_PROTOCOL)).stdout == ""
    # Twice is fine (nothing left to remove).
    assert lone_node.host.in_netns(remove_service_proxy, lone_node.state.config) is False


def test_a_flood_of_changes_is_taken_in_one_sync(lone_node: ProxyNode) -> None:
    pod = lone_node.add_pod("flood")
    services = {("default", f"s{i}"): service(f"s{i}", f"10.43.4.{i + 1}") for i in range(200)}
    slices = {("default", f"s{i}-abcde"): endpoint_slice(f"s{i}", [endpoint(pod.ip)]) for i in range(200)}
    started = time.monotonic()
    report = lone_node.sync(services, slices)
    took = time.monotonic() - started
    assert report.ports == 200 and report.stats.element_messages > 0
    assert _who(tcp_request(lone_node.host, "10.43.4.200", 80)) == "flood"
    assert took < 10, took


def test_an_adopted_pod_keeps_its_veth_when_its_namespace_is_named_another_way(
    proxy_node: ProxyNode, pods: dict[str, object], tmp_path: Path
) -> None:
    """After a restart in a fresh mount namespace the agent reaches a pod's namespace file by
    another path (through the supervisor's root), and the path it recorded does not open the
    namespace there any more (the bind mount lived in the old mount namespace). Setting the pod
    up again must keep its veth, or every connection of the pod — through Services too —
    breaks."""
    import subprocess

    from tests.proxy.harness import Pod, Server

    host = proxy_node.namespace("k3py-pxa")
    recorded = tmp_path / "netns-as-first-seen"
    recorded.touch()
    subprocess.run(["mount", "--bind", f"/run/netns/{host.name}", str(recorded)], check=True)
    try:
        pod_ip = proxy_node.host.in_netns(proxy_node.pods.setup, "adopted-pod", str(recorded))
    finally:
        subprocess.run(["umount", str(recorded)], check=True)  # gone with the old mount namespace
    pod = Pod("adopted", "adopted-pod", host, pod_ip.ip, Server(host, "adopted"))
    proxy_node.servers.append(pod.server)  # type: ignore[arg-type]
    proxy_node.apply(service("adopted", "10.43.2.90", [{"name": "x", "port": 7070, "protocol": "TCP"}]),
                     endpoint_slice("adopted", [endpoint(pod.ip)], ports=[{"name": "x", "port": 7070, "protocol": "TCP"}]))
    held = _HeldConnection(pod.host, _host(pods, "client"), "10.43.2.90", 7070)
    try:
        assert held.round_trip(b"before\n") == b"BEFORE\n"
        links = proxy_node.sh("ip", "-o", "link", "show", "master", "k3py0").stdout
        again = proxy_node.host.in_netns(proxy_node.pods.setup, pod.uid, f"/run/netns/{host.name}")
        assert again.ip == pod.ip
        assert proxy_node.sh("ip", "-o", "link", "show", "master", "k3py0").stdout == links  # same veth
        assert held.round_trip(b"after\n") == b"AFTER\n"
        # A namespace that really is another one still gets a fresh veth (the pod was recreated).
        other = proxy_node.namespace("k3py-pxa")
        moved = proxy_node.host.in_netns(proxy_node.pods.setup, pod.uid, f"/run/netns/{other.name}")
        assert moved.ip == pod.ip
        assert run_in(other, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout.count(pod.ip) == 1
    finally:
        held.close()
