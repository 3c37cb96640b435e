"""The pod network for real, each test on a node made of fresh network namespaces.

Every test builds its "node" in a new network namespace (a ``NetnsHost``) and its pods in more
namespaces of their own, then drives ``NodeNetwork``/``PodNetwork`` from a thread that has
joined the node's namespace, exactly as the agent would on a host. Where a test needs "the
outside world", a further namespace plays the internet: it is joined to the node by a veth
pair with TEST-NET addresses (192.0.2.0/24 for the link, 198.51.100.1 for a far server),
assigned only inside these namespaces. No packet goes anywhere but loopback and these
namespaces; the fixtures delete every namespace, and with it every interface, route and
nftables table the code made.
"""

from __future__ import annotations

import concurrent.futures
import errno
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k3py.agent.network import (
    HostPort,
    HostPortConflict,
    NetworkConfigError,
    NetworkError,
    NodeNetwork,
    NodeNetworkConfig,
    PodIP,
    PodNetwork,
    host_veth_name,
)
from tests.cluster import TestHost as NetnsHost

NODE_UPLINK_IP = "192.0.2.1"
INTERNET_LINK_IP = "192.0.2.2"
FAR_SERVER_IP = "198.51.100.1"
IO_TIMEOUT = 5.0


class Node:
    """A test node: its namespace, its network objects, and pods."""

    def __init__(
        self,
        host: NetnsHost,
        data_dir: Path,
        make_pod_ns: Callable[[], NetnsHost],
        pod_cidr: str = "10.42.0.0/24",
    ) -> None:
        self.host = host
        self.data_dir = data_dir
        self._make_pod_ns = make_pod_ns
        self.config = NodeNetworkConfig(pod_cidr=pod_cidr, data_dir=data_dir)
        self.network = NodeNetwork(self.config)
        self.pods = PodNetwork(self.network)
        self.host.in_netns(self.network.start)

    def restart(self) -> None:
        """What a restart of the agent does: new objects over the same data dir, start again."""
        self.network = NodeNetwork(self.config)
        self.pods = PodNetwork(self.network)
        self.host.in_netns(self.network.start)

    def add_pod(
        self, uid: str, host_ports: list[HostPort] | None = None
    ) -> tuple[NetnsHost, PodIP]:
        pod_ns = self._make_pod_ns()
        pod_ip = self.host.in_netns(
            self.pods.setup, uid, f"/run/netns/{pod_ns.name}", host_ports or []
        )
        return pod_ns, pod_ip

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.host.exec_argv(argv), capture_output=True, text=True, check=check, timeout=30
        )


def _in(host: NetnsHost, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host.exec_argv(argv), capture_output=True, text=True, check=check, timeout=30
    )


@pytest.fixture
def make_ns() -> Iterator[Callable[[], NetnsHost]]:
    made: list[NetnsHost] = []

    def _make() -> NetnsHost:
        host = NetnsHost("k3py-net")
        made.append(host)
        return host

    yield _make
    for host in reversed(made):
        host.close()


@pytest.fixture
def node(tmp_path: Path, make_ns: Callable[[], NetnsHost]) -> Node:
    return Node(make_ns(), tmp_path / "agent", make_ns)


@pytest.fixture
def internet(node: Node, make_ns: Callable[[], NetnsHost]) -> NetnsHost:
    """A namespace standing for the outside world, wired to the node's "uplink" interface;
    the node's default route points there, as a host's would to its router."""
    outside = make_ns()
    node.sh(
        "ip",
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "wan",
        "netns",
        f"/run/netns/{outside.name}",
    )
    node.sh("ip", "addr", "add", f"{NODE_UPLINK_IP}/24", "dev", "uplink")
    node.sh("ip", "link", "set", "uplink", "up")
    node.sh("ip", "route", "add", "default", "via", INTERNET_LINK_IP)
    _in(outside, "ip", "addr", "add", f"{INTERNET_LINK_IP}/24", "dev", "wan")
    _in(outside, "ip", "link", "set", "wan", "up")
    _in(outside, "ip", "addr", "add", f"{FAR_SERVER_IP}/32", "dev", "lo")
    # The outside world knows no route to pods: only masqueraded traffic can get answers.
    return outside


def _listen(ns: NetnsHost, port: int, address: str = "0.0.0.0") -> socket.socket:
    server = ns.in_netns(socket.create_server, (address, port))
    server.settimeout(IO_TIMEOUT)
    return server


def _round_trip(client_ns: NetnsHost, server: socket.socket, address: str, port: int) -> str:
    """Connects from ``client_ns``, sends a line through, returns the peer the server saw."""
    client = client_ns.in_netns(socket.create_connection, (address, port), IO_TIMEOUT)
    with client:
        conn, peer = server.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT)
            client.sendall(b"hello pod\n")
            assert conn.recv(64) == b"hello pod\n"
            conn.sendall(b"hello back\n")
            assert client.recv(64) == b"hello back\n"
    return peer[0]


def _connect_error(ns: NetnsHost, address: str, port: int) -> tuple[int, float]:
    """The errno of a refused connect and how long it took."""

    def attempt() -> tuple[int, float]:
        started = time.monotonic()
        try:
            socket.create_connection((address, port), IO_TIMEOUT).close()
        except OSError as exc:
            return exc.errno or 0, time.monotonic() - started
        raise AssertionError(f"connect to {address}:{port} unexpectedly succeeded")

    return ns.in_netns(attempt)


# -- tests -------------------------------------------------------------------------------------


def test_two_pods_get_distinct_addresses_and_reach_each_other_and_the_node(node: Node) -> None:
    pod_a, ip_a = node.add_pod("uid-a")
    pod_b, ip_b = node.add_pod("uid-b")

    assert ip_a.ip != ip_b.ip
    for pod_ip in (ip_a, ip_b):
        assert pod_ip.address in node.config.pod_network
        assert pod_ip.address not in (node.config.gateway, node.config.pod_network.network_address)
        assert str(pod_ip.gateway) == "10.42.0.1"

    # Inside the pod: eth0 with its address, default route via the bridge.
    addr = _in(pod_a, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"inet {ip_a.cidr}" in addr
    assert "default via 10.42.0.1 dev eth0" in _in(pod_a, "ip", "route").stdout

    # Pod to pod over TCP (the server sees the real pod address: no NAT between pods)...
    server_b = _listen(pod_b, 8080)
    assert _round_trip(pod_a, server_b, ip_b.ip, 8080) == ip_a.ip
    # ... and ICMP both ways.
    _in(pod_b, "busybox", "ping", "-c", "1", "-W", "2", ip_a.ip)
    _in(pod_a, "busybox", "ping", "-c", "1", "-W", "2", ip_b.ip)

    # The node reaches both pods by IP, from the bridge address.
    server_a = _listen(pod_a, 9090)
    assert _round_trip(node.host, server_a, ip_a.ip, 9090) == "10.42.0.1"
    assert _round_trip(node.host, server_b, ip_b.ip, 8080) == "10.42.0.1"
    server_a.close()
    server_b.close()


def test_setup_is_idempotent_and_addresses_survive_a_restart(node: Node) -> None:
    pod_a, ip_a = node.add_pod("uid-a")
    _, ip_b = node.add_pod("uid-b")
    # The kubelet may call setup again for a pod it already set up.
    assert node.host.in_netns(node.pods.setup, "uid-a", f"/run/netns/{pod_a.name}") == ip_a

    node.restart()
    _, ip_c = node.add_pod("uid-c")
    assert ip_c.ip not in (ip_a.ip, ip_b.ip)
    assert node.host.in_netns(node.pods.setup, "uid-a", f"/run/netns/{pod_a.name}") == ip_a
    allocations = {str(ip): owner for ip, owner in node.network.ipam.allocations().items()}
    assert allocations == {ip_a.ip: "uid-a", ip_b.ip: "uid-b", ip_c.ip: "uid-c"}
    # The bridge was reused, not duplicated, and pods still talk after the restart.
    assert node.sh("ip", "-o", "link", "show", "type", "bridge").stdout.count("k3py0") == 1
    _in(pod_a, "busybox", "ping", "-c", "1", "-W", "2", ip_c.ip)


def test_teardown_removes_veth_address_file_and_host_port_rule(node: Node) -> None:
    pod_a, ip_a = node.add_pod("uid-a", [HostPort(8080, 80)])
    veth = host_veth_name("uid-a")
    ip_file = node.network.ipam.directory / ip_a.ip
    assert ip_file.read_text() == "uid-a\n"
    assert node.sh("ip", "link", "show", "dev", veth).stdout.count("master k3py0") == 1
    assert f"dnat to {ip_a.ip}:80" in node.sh("nft", "list", "ruleset").stdout

    node.host.in_netns(node.pods.teardown, "uid-a")

    assert node.sh("ip", "link", "show", "dev", veth, check=False).returncode != 0
    assert _in(pod_a, "ip", "link", "show", "dev", "eth0", check=False).returncode != 0
    assert not ip_file.exists()
    assert node.network.record("uid-a") is None
    assert ip_a.ip not in node.sh("ip", "route").stdout
    ruleset = node.sh("nft", "list", "ruleset").stdout
    assert "dnat to" not in ruleset
    assert "masquerade" in ruleset  # the node's own rules stay
    # Teardown again (kubelet retry, or after a restart) is a no-op, not an error.
    node.host.in_netns(node.pods.teardown, "uid-a")


def test_unknown_cluster_and_service_addresses_are_refused_on_the_node(
    node: Node, internet: NetnsHost
) -> None:
    routes = node.sh("ip", "route").stdout
    assert "unreachable 10.42.0.0/16 metric 4242" in routes
    assert "unreachable 10.43.0.0/16 metric 4242" in routes
    assert "10.42.0.0/24" not in routes  # no route for the whole /24: one per pod instead
    # Count what reaches the outside for the cluster ranges: it must stay zero.
    _in(
        internet,
        "nft",
        "add table ip watch; add chain ip watch in "
        "{ type filter hook prerouting priority 0; }; "
        "add rule ip watch in ip daddr { 10.42.0.0/16, 10.43.0.0/16 } counter",
    )
    pod, pod_ip = node.add_pod("uid-a")
    assert f"{pod_ip.ip} dev k3py0 proto 243 scope link src 10.42.0.1" in node.sh(
        "ip", "route"
    ).stdout

    for client, target in (
        (node.host, "10.42.7.9"),  # another node's range, no such node
        (node.host, "10.42.0.77"),  # this node's range, no such pod: no ARP wait either
        (node.host, "10.43.0.10"),  # a service address nobody serves
        (pod, "10.42.200.3"),  # from a pod, refused by the node
    ):
        code, took = _connect_error(client, target, 80)
        assert code in (errno.EHOSTUNREACH, errno.ENETUNREACH), (target, errno.errorcode.get(code))
        assert took < 1.0, f"connect to {target} took {took:.2f}s: it should be refused at once"
    assert "packets 0 bytes 0" in _in(internet, "nft", "list", "table", "ip", "watch").stdout
    # The default route itself works: the far server answers (from the node directly).
    server = _listen(internet, 80, FAR_SERVER_IP)
    assert _round_trip(node.host, server, FAR_SERVER_IP, 80) == NODE_UPLINK_IP
    server.close()


def test_pod_egress_is_masqueraded_to_the_node_address(node: Node, internet: NetnsHost) -> None:
    pod, pod_ip = node.add_pod("uid-a")
    assert (
        "ip saddr 10.42.0.0/24 ip daddr != { 10.42.0.0/16, 224.0.0.0/4 } masquerade"
        in node.sh("nft", "list", "ruleset").stdout
    )
    server = _listen(internet, 443, FAR_SERVER_IP)
    seen = _round_trip(pod, server, FAR_SERVER_IP, 443)
    server.close()
    assert seen == NODE_UPLINK_IP  # not the pod's 10.42.0.x: the outside has no route there
    assert seen != pod_ip.ip


def test_host_port_reaches_the_pod_from_the_node_localhost_outside_and_other_pods(
    node: Node, internet: NetnsHost
) -> None:
    web, web_ip = node.add_pod("uid-web", [HostPort(8080, 80), HostPort(5353, 53, "UDP")])
    other, other_ip = node.add_pod("uid-other")
    ruleset = node.sh("nft", "list", "ruleset").stdout
    assert f'tcp dport 8080 dnat to {web_ip.ip}:80 comment "pod uid-web"' in ruleset
    assert f'udp dport 5353 dnat to {web_ip.ip}:53 comment "pod uid-web"' in ruleset

    server = _listen(web, 80)
    # From the node, to the node's own address and to localhost.
    assert _round_trip(node.host, server, NODE_UPLINK_IP, 8080) == NODE_UPLINK_IP
    assert _round_trip(node.host, server, "127.0.0.1", 8080) == "10.42.0.1"
    # From the outside world, to the node's address: the pod sees the real client.
    assert _round_trip(internet, server, NODE_UPLINK_IP, 8080) == INTERNET_LINK_IP
    # From another pod of the same node (hairpin through the node's address).
    assert _round_trip(other, server, NODE_UPLINK_IP, 8080) == "10.42.0.1"
    # And from the pod itself (hairpin mode on its bridge port).
    assert _round_trip(web, server, NODE_UPLINK_IP, 8080) == "10.42.0.1"
    server.close()
    assert other_ip != web_ip

    # UDP too.
    udp = web.in_netns(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 53))
    udp.settimeout(IO_TIMEOUT)
    sender = internet.in_netns(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"query", (NODE_UPLINK_IP, 5353))
    data, peer = udp.recvfrom(64)
    assert (data, peer[0]) == (b"query", INTERNET_LINK_IP)
    udp.close()
    sender.close()


def test_a_taken_host_port_is_refused_without_leaking_anything(node: Node) -> None:
    node.add_pod("uid-a", [HostPort(8080, 80)])
    before = node.network.ipam.allocations()
    with pytest.raises(HostPortConflict, match=r"8080/TCP is already used by pod uid-a"):
        node.add_pod("uid-b", [HostPort(8080, 8081)])
    assert node.network.ipam.allocations() == before
    assert (
        node.sh("ip", "link", "show", "dev", host_veth_name("uid-b"), check=False).returncode != 0
    )
    # Another protocol on the same port number is a different mapping.
    node.add_pod("uid-c", [HostPort(8080, 80, "UDP")])


def test_bad_netns_path_is_a_clear_error(node: Node) -> None:
    with pytest.raises(NetworkConfigError, match="does not exist"):
        node.host.in_netns(node.pods.setup, "uid-x", "/run/netns/no-such-pod")
    with pytest.raises(NetworkConfigError, match="owner id"):
        node.host.in_netns(node.pods.setup, "../etc", "/proc/self/ns/net")
    assert node.network.ipam.allocations() == {}


def test_reconcile_tears_down_pods_that_are_gone(node: Node) -> None:
    _, ip_a = node.add_pod("uid-a", [HostPort(8080, 80)])
    node.add_pod("uid-b")
    node.restart()
    assert node.host.in_netns(node.pods.reconcile, {"uid-b"}) == ["uid-a"]
    assert set(node.network.ipam.allocations().values()) == {"uid-b"}
    assert (
        node.sh("ip", "link", "show", "dev", host_veth_name("uid-a"), check=False).returncode != 0
    )
    assert f"dnat to {ip_a.ip}" not in node.sh("nft", "list", "ruleset").stdout


def test_destroy_removes_bridge_routes_and_table_and_nothing_leaks_to_the_host(
    tmp_path: Path,
) -> None:
    host = NetnsHost("k3py-net")
    pod_ns = NetnsHost("k3py-net")
    try:
        network = NodeNetwork(NodeNetworkConfig(pod_cidr="10.42.0.0/24", data_dir=tmp_path))
        host.in_netns(network.start)
        host.in_netns(
            PodNetwork(network).setup, "uid-a", f"/run/netns/{pod_ns.name}", [HostPort(8080, 80)]
        )
        host.in_netns(network.destroy)
        left = _in(host, "ip", "-o", "link").stdout + _in(host, "ip", "route").stdout
        assert "k3py0" not in left and "unreachable" not in left
        assert "k3py-nat" not in _in(host, "nft", "list", "tables").stdout
    finally:
        pod_ns.close()
        host.close()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert host.name not in namespaces and pod_ns.name not in namespaces
    # The real host never saw any of it (read-only checks).
    assert (
        subprocess.run(["ip", "link", "show", "dev", "k3py0"], capture_output=True).returncode != 0
    )
    host_tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "k3py-nat" not in host_tables


def test_netns_bind_mounted_anywhere_as_the_runtime_keeps_it(node: Node, tmp_path: Path) -> None:
    # The runtime's pod sandbox holds its namespace as a bind-mounted nsfs file in its own
    # directory, not under /run/netns.
    netns_file = tmp_path / "sandbox" / "ns" / "net"
    netns_file.parent.mkdir(parents=True)
    netns_file.touch()
    subprocess.run(["unshare", f"--net={netns_file}", "true"], check=True, timeout=30)
    try:
        pod_ip = node.host.in_netns(node.pods.setup, "uid-sandbox", str(netns_file))
        inside = subprocess.run(
            ["nsenter", f"--net={netns_file}", "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        assert f"inet {pod_ip.cidr}" in inside
        node.sh("busybox", "ping", "-c", "1", "-W", "2", pod_ip.ip)
        node.host.in_netns(node.pods.teardown, "uid-sandbox")
    finally:
        subprocess.run(["umount", str(netns_file)], check=False, timeout=30)


def test_teardown_after_the_pod_namespace_is_gone_still_frees_the_address(
    node: Node, make_ns: Callable[[], NetnsHost]
) -> None:
    pod_ns = make_ns()
    pod_ip = node.host.in_netns(node.pods.setup, "uid-a", f"/run/netns/{pod_ns.name}")
    pod_ns.close()  # the sandbox went first: its end of the veth took the pair with it
    node.host.in_netns(node.pods.teardown, "uid-a")
    assert not (node.network.ipam.directory / pod_ip.ip).exists()
    assert node.network.records() == {}


def test_setup_before_the_node_network_started_is_a_clear_error(
    tmp_path: Path, make_ns: Callable[[], NetnsHost]
) -> None:
    host, pod_ns = make_ns(), make_ns()
    network = NodeNetwork(NodeNetworkConfig(pod_cidr="10.42.0.0/24", data_dir=tmp_path))
    with pytest.raises(NetworkError, match="node network is not started"):
        host.in_netns(PodNetwork(network).setup, "uid-a", f"/run/netns/{pod_ns.name}")
    assert network.ipam.allocations() == {}


def test_restart_with_another_pod_cidr_moves_the_gateway(node: Node) -> None:
    moved = Node(node.host, node.data_dir, node._make_pod_ns, pod_cidr="10.42.9.0/24")
    addresses = moved.sh("ip", "-4", "-o", "addr", "show", "dev", "k3py0").stdout
    assert "10.42.9.1/24" in addresses and "10.42.0.1/24" not in addresses
    _, pod_ip = moved.add_pod("uid-a")
    assert pod_ip.ip.startswith("10.42.9.")


def test_pods_on_two_nodes_reach_each_other_through_node_routes(
    tmp_path: Path, make_ns: Callable[[], NetnsHost]
) -> None:
    node1 = Node(make_ns(), tmp_path / "node1", make_ns, pod_cidr="10.42.0.0/24")
    node2 = Node(make_ns(), tmp_path / "node2", make_ns, pod_cidr="10.42.1.0/24")
    # A shared link between the two "hosts", TEST-NET addresses.
    node1.sh(
        "ip",
        "link",
        "add",
        "lan",
        "type",
        "veth",
        "peer",
        "name",
        "lan",
        "netns",
        f"/run/netns/{node2.host.name}",
    )
    node1.sh("ip", "addr", "add", "192.0.2.1/24", "dev", "lan")
    node2.sh("ip", "addr", "add", "192.0.2.2/24", "dev", "lan")
    node1.sh("ip", "link", "set", "lan", "up")
    node2.sh("ip", "link", "set", "lan", "up")
    node1.host.in_netns(node1.network.sync_node_routes, {"10.42.1.0/24": "192.0.2.2"})
    node2.host.in_netns(node2.network.sync_node_routes, {"10.42.0.0/24": "192.0.2.1"})
    assert "10.42.1.0/24 via 192.0.2.2 dev lan proto 242" in node1.sh("ip", "route").stdout

    pod1, ip1 = node1.add_pod("uid-1")
    pod2, ip2 = node2.add_pod("uid-2")
    server = _listen(pod2, 8080)
    # Pod addresses are kept end to end: no masquerade inside the cluster CIDR.
    assert _round_trip(pod1, server, ip2.ip, 8080) == ip1.ip
    _in(pod2, "busybox", "ping", "-c", "1", "-W", "2", ip1.ip)
    server.close()

    # Syncing again is a no-op; a peer that left loses its route and the safety net applies.
    node1.host.in_netns(node1.network.sync_node_routes, {"10.42.1.0/24": "192.0.2.2"})
    node1.host.in_netns(node1.network.sync_node_routes, {})
    assert "proto 242" not in node1.sh("ip", "route").stdout
    code, took = _connect_error(pod1, ip2.ip, 8080)
    assert code == errno.EHOSTUNREACH and took < 1.0
    with pytest.raises(NetworkConfigError, match="overlaps this node's pod CIDR"):
        node1.host.in_netns(node1.network.sync_node_routes, {"10.42.0.0/23": "192.0.2.2"})
    with pytest.raises(NetworkConfigError, match="not an IPv4 address"):
        node1.host.in_netns(node1.network.sync_node_routes, {"10.42.1.0/24": "node-2"})


def test_thirty_pods_set_up_and_torn_down_leave_nothing_behind(node: Node) -> None:
    pods = [node.add_pod(f"uid-{i}", [HostPort(20000 + i, 80)]) for i in range(30)]
    assert len({pod_ip.ip for _, pod_ip in pods}) == 30
    assert len(node.sh("ip", "-o", "link", "show", "master", "k3py0").stdout.splitlines()) == 30
    # The first pod reaches the last one, and the last one the first.
    (first_ns, first_ip), (last_ns, last_ip) = pods[0], pods[-1]
    _in(first_ns, "busybox", "ping", "-c", "1", "-W", "2", last_ip.ip)
    _in(last_ns, "busybox", "ping", "-c", "1", "-W", "2", first_ip.ip)
    for i in range(30):
        node.host.in_netns(node.pods.teardown, f"uid-{i}")
    assert node.sh("ip", "-o", "link", "show", "master", "k3py0").stdout.strip() == ""
    assert node.network.ipam.allocations() == {}
    assert "dnat to" not in node.sh("nft", "list", "ruleset").stdout


def test_reconcile_also_removes_bridge_ports_nobody_owns(node: Node) -> None:
    pod_ns, _ = node.add_pod("uid-a")
    # A crash between creating a veth and saving its record leaves such a port.
    node.sh(
        "ip",
        "link",
        "add",
        "vethorphan",
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "netns",
        f"/run/netns/{pod_ns.name}",
    )
    node.sh("ip", "link", "set", "vethorphan", "master", "k3py0")
    assert node.host.in_netns(node.pods.reconcile, {"uid-a"}) == []
    ports = node.sh("ip", "-o", "link", "show", "master", "k3py0").stdout
    assert "vethorphan" not in ports and host_veth_name("uid-a") in ports


def test_start_and_host_port_changes_repair_what_others_removed(node: Node) -> None:
    _, pod_ip = node.add_pod("uid-a", [HostPort(8080, 80)])
    node.sh("nft", "delete", "table", "ip", "k3py-nat")
    node.sh("ip", "route", "del", "unreachable", "10.42.0.0/16", "metric", "4242")
    node.sh("ip", "route", "del", f"{pod_ip.ip}/32", "dev", "k3py0")
    node.sh("ip", "route", "add", "10.42.0.99/32", "dev", "k3py0", "proto", "243")
    # A hostPort change finds its chain gone and writes the whole table back.
    node.add_pod("uid-b", [HostPort(9090, 90)])
    ruleset = node.sh("nft", "list", "ruleset").stdout
    assert f"dnat to {pod_ip.ip}:80" in ruleset and "masquerade" in ruleset
    # A restart of the agent puts the routes back as the records say, and keeps the rules.
    node.restart()
    routes = node.sh("ip", "route").stdout
    assert "unreachable 10.42.0.0/16 metric 4242" in routes
    assert f"{pod_ip.ip} dev k3py0 proto 243" in routes
    assert "10.42.0.99" not in routes
    assert f"dnat to {pod_ip.ip}:80" in node.sh("nft", "list", "ruleset").stdout


def test_host_port_bound_to_one_host_ip_only_answers_there(node: Node, internet: NetnsHost) -> None:
    # Container port dicts, as the kubelet finds them in the pod spec, are accepted too.
    web, _ = node.add_pod("uid-web")
    node.host.in_netns(
        node.pods.setup, "uid-web", f"/run/netns/{web.name}",
        [{"containerPort": 80, "hostPort": 8080, "hostIP": NODE_UPLINK_IP}],
    )
    server = _listen(web, 80)
    assert _round_trip(internet, server, NODE_UPLINK_IP, 8080) == INTERNET_LINK_IP
    # The node's other addresses do not forward that port: nothing listens there.
    code, _ = _connect_error(node.host, "127.0.0.1", 8080)
    assert code == errno.ECONNREFUSED
    server.close()
    with pytest.raises(NetworkConfigError, match="hostPort 0"):
        node.host.in_netns(
            node.pods.setup, "uid-web", f"/run/netns/{web.name}", [{"containerPort": 80}]
        )


def test_concurrent_setups_from_pod_workers_get_distinct_working_addresses(
    node: Node, make_ns: Callable[[], NetnsHost]
) -> None:
    pod_namespaces = [make_ns() for _ in range(8)]

    def set_up(index: int) -> PodIP:
        return node.host.in_netns(
            node.pods.setup, f"uid-{index}", f"/run/netns/{pod_namespaces[index].name}",
            [HostPort(30000 + index, 80)],
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        addresses = list(pool.map(set_up, range(8)))
    assert len({pod_ip.ip for pod_ip in addresses}) == 8
    assert node.sh("nft", "list", "ruleset").stdout.count(" dnat to ") == 8
    for pod_ip in addresses:
        node.sh("busybox", "ping", "-c", "1", "-W", "2", pod_ip.ip)
