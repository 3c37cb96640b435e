"""Pure parts of the pod network: address plan checks, IPAM on disk, hostPorts, NAT rules.

No namespaces here — these run in milliseconds (IPAM works on a temporary directory).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
from pathlib import Path

import pytest

from k3py.agent.network import (
    AddressesExhausted,
    HostLocalIPAM,
    HostPort,
    HostPortConflict,
    HostPortReserved,
    NetworkConfigError,
    NetworkError,
    NodeNetwork,
    NodeNetworkConfig,
    host_ports_of_pod,
    host_veth_name,
    uses_pod_network,
)
from k3py.agent.network.hostports import check_reserved
from k3py.agent.network.nftables import render_host_ports, render_ruleset

A = ipaddress.IPv4Address


# -- the address plan -----------------------------------------------------------------------


def test_config_derives_gateway_range_and_mac(tmp_path: Path) -> None:
    config = NodeNetworkConfig(pod_cidr="10.42.3.0/24", data_dir=tmp_path)
    assert config.gateway == A("10.42.3.1")
    assert (config.first_pod_address, config.last_pod_address) == (A("10.42.3.2"), A("10.42.3.254"))
    assert config.bridge_mac == "0a:58:0a:2a:03:01"
    assert config.pod_ip(A("10.42.3.9")).cidr == "10.42.3.9/24"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pod_cidr": "10.42.0.0/33"}, "not a valid CIDR"),
        ({"pod_cidr": "10.42.0.1/24"}, "has host bits set"),
        ({"pod_cidr": "fd00::/64"}, "only IPv4"),
        ({"pod_cidr": "10.99.0.0/24"}, "not inside the cluster CIDR"),
        ({"pod_cidr": "10.42.0.0/30"}, "too small"),
        ({"pod_cidr": "10.42.0.0/24", "service_cidr": "10.42.128.0/17"}, "overlaps"),
        ({"pod_cidr": "10.42.0.0/24", "bridge": "a-very-long-bridge-name"}, "1 to 15 bytes"),
        ({"pod_cidr": "10.42.0.0/24", "bridge": "br/0"}, "may not contain"),
        ({"pod_cidr": "10.42.0.0/24", "nft_table": "x; flush ruleset"}, "table name"),
    ],
)
def test_config_rejects_bad_input_with_a_clear_message(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(NetworkConfigError, match=message):
        NodeNetworkConfig(data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


# -- host-local IPAM ------------------------------------------------------------------------


def _ipam(tmp_path: Path, cidr: str = "10.42.0.0/24") -> HostLocalIPAM:
    return HostLocalIPAM.for_subnet(tmp_path, ipaddress.IPv4Network(cidr))


def test_ipam_hands_out_distinct_addresses_skipping_network_gateway_broadcast(
    tmp_path: Path,
) -> None:
    ipam = _ipam(tmp_path, "10.42.0.0/29")
    got = [ipam.allocate(f"pod-{i}") for i in range(5)]
    assert got == [A(f"10.42.0.{i}") for i in range(2, 7)]
    with pytest.raises(AddressesExhausted, match="no free pod address"):
        ipam.allocate("one-too-many")


def test_ipam_is_idempotent_per_owner_and_files_hold_the_owner(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path)
    first = ipam.allocate("uid-1")
    assert ipam.allocate("uid-1") == first
    assert (ipam.directory / str(first)).read_text() == "uid-1\n"
    assert ipam.lookup("uid-1") == first
    assert ipam.lookup("uid-2") is None


def test_ipam_survives_a_restart_without_handing_out_an_address_twice(tmp_path: Path) -> None:
    before = _ipam(tmp_path)
    held = {before.allocate(f"uid-{i}") for i in range(3)}
    after = _ipam(tmp_path)  # a new process on the same data dir
    assert after.allocations() == {before.lookup(f"uid-{i}"): f"uid-{i}" for i in range(3)}
    fresh = after.allocate("uid-new")
    assert fresh not in held
    assert after.allocate("uid-1") == before.lookup("uid-1")


def test_ipam_release_frees_the_file_and_reuses_the_address_last(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path, "10.42.0.0/29")  # .2 - .6
    a, b = ipam.allocate("a"), ipam.allocate("b")
    assert ipam.release("a") == [a]
    assert not (ipam.directory / str(a)).exists()
    assert ipam.release("a") == []
    # Round robin: the released .2 comes back only after the rest of the range.
    assert [ipam.allocate(x) for x in "cde"] == [A("10.42.0.4"), A("10.42.0.5"), A("10.42.0.6")]
    assert ipam.allocate("f") == a
    assert b == A("10.42.0.3")


def test_ipam_never_duplicates_under_concurrent_allocators(tmp_path: Path) -> None:
    # Two IPAM objects on one directory stand for two processes: only the exclusive create
    # keeps them apart.
    ipams = [_ipam(tmp_path), _ipam(tmp_path)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda i: ipams[i % 2].allocate(f"uid-{i}"), range(48)))
    assert len(set(got)) == 48
    assert len(ipams[0].allocations()) == 48
    assert not [p for p in ipams[0].directory.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("owner", ["", "a/b", "x\ny", "u" * 254, ".hidden"])
def test_ipam_rejects_bad_owner_ids(tmp_path: Path, owner: str) -> None:
    with pytest.raises(NetworkConfigError, match="owner id"):
        _ipam(tmp_path).allocate(owner)


# -- hostPorts --------------------------------------------------------------------------------


def test_host_ports_of_pod_reads_container_ports() -> None:
    spec = {
        "containers": [
            {
                "name": "web",
                "ports": [
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "0.0.0.0"},
                    {"containerPort": 9090},
                ],
            },
            {
                "name": "side",
                "ports": [{"containerPort": 81, "hostPort": 8081, "hostIP": "192.0.2.7"}],
            },
        ]
    }
    assert host_ports_of_pod(spec) == [
        HostPort(8080, 80),
        HostPort(5353, 53, "UDP"),
        HostPort(8081, 81, "TCP", "192.0.2.7"),
    ]
    assert host_ports_of_pod({**spec, "hostNetwork": True}) == []
    assert uses_pod_network(spec)
    assert not uses_pod_network({**spec, "hostNetwork": True})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"containerPort": 80, "hostPort": 70000}, "hostPort 70000"),
        ({"containerPort": 0, "hostPort": 80}, "containerPort 0"),
        ({"containerPort": "80", "hostPort": 80}, "containerPort '80'"),
        ({"containerPort": 80, "hostPort": 80, "protocol": "ICMP"}, "protocol 'ICMP'"),
        ({"containerPort": 80, "hostPort": 80, "hostIP": "nope"}, "not an IP"),
        ({"containerPort": 80, "hostPort": 80, "hostIP": "::1"}, "only IPv4"),
    ],
)
def test_bad_host_ports_get_clear_errors(entry: dict[str, object], message: str) -> None:
    with pytest.raises(NetworkConfigError, match=message):
        host_ports_of_pod({"containers": [{"name": "c", "ports": [entry]}]})


def test_host_port_conflicts_within_a_pod_are_refused() -> None:
    spec = {
        "containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]},
            {
                "name": "b",
                "ports": [{"containerPort": 81, "hostPort": 8080, "hostIP": "192.0.2.1"}],
            },
        ]
    }
    with pytest.raises(HostPortConflict, match=r"8080/TCP is already used by another port"):
        host_ports_of_pod(spec)
    # Same port, other protocol: fine.
    spec["containers"][1]["ports"][0]["protocol"] = "UDP"
    assert len(host_ports_of_pod(spec)) == 2


def test_veth_names_are_stable_and_fit_ifnamsiz() -> None:
    name = host_veth_name("6d1f6f9e-3b0e-4a55-9d3c-0a1c1d1e1f10")
    assert name == host_veth_name("6d1f6f9e-3b0e-4a55-9d3c-0a1c1d1e1f10")
    assert name.startswith("veth") and len(name) == 15
    assert name != host_veth_name("another-pod")


# -- NAT rules ---------------------------------------------------------------------------------


def test_ruleset_masquerades_pod_egress_and_dnats_host_ports(tmp_path: Path) -> None:
    config = NodeNetworkConfig(pod_cidr="10.42.5.0/24", data_dir=tmp_path)
    script = render_ruleset(
        config,
        {
            "uid-b": ("10.42.5.3", [HostPort(5353, 53, "UDP", "192.0.2.1")]),
            "uid-a": ("10.42.5.2", [HostPort(8080, 80)]),
        },
    )
    lines = [line.strip() for line in script.splitlines()]
    # Whole-table replacement in one transaction.
    assert lines[:3] == ["table ip k3py-nat", "delete table ip k3py-nat", "table ip k3py-nat {"]
    assert (
        "ip saddr 10.42.5.0/24 ip daddr != { 10.42.0.0/16, 224.0.0.0/4 } masquerade "
        'comment "pod egress"' in lines
    )
    hostport_rules = [line for line in lines if " dnat to " in line]
    assert hostport_rules == [
        'tcp dport 8080 dnat to 10.42.5.2:80 comment "pod uid-a"',
        'ip daddr 192.0.2.1 udp dport 5353 dnat to 10.42.5.3:53 comment "pod uid-b"',
    ]


def test_ruleset_drops_outside_traffic_to_localnet(tmp_path: Path) -> None:
    """Upstream's CVE-2020-8558 rule, in a filter chain on the input hook of the same table."""
    script = render_ruleset(NodeNetworkConfig(pod_cidr="10.42.5.0/24", data_dir=tmp_path), {})
    chain = script[script.index("\tchain input {"):]
    chain = chain[: chain.index("\t}")]
    assert "type filter hook input priority filter; policy accept;" in chain
    assert (
        "ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state != { established, related }"
        ' ct status & dnat == 0 drop comment "block incoming localnet connections"'
    ) in chain


def test_reserved_host_ports_are_refused(tmp_path: Path) -> None:
    reserved = {10250: "the kubelet", 6443: "the API server"}
    with pytest.raises(HostPortReserved, match="hostPort 10250/TCP is reserved on this node: the kubelet listens on it"):
        check_reserved([HostPort(10250, 8080, host_ip="192.0.2.1")], reserved)
    with pytest.raises(HostPortReserved, match="the API server listens on it"):
        check_reserved([HostPort(8080, 80), HostPort(6443, 443)], reserved)
    # Other protocols never reach the TCP listeners; other ports are free.
    check_reserved([HostPort(10250, 53, "UDP"), HostPort(10251, 80)], reserved)
    # A record written before the port was reserved gets no DNAT rule.
    config = NodeNetworkConfig(pod_cidr="10.42.0.0/24", data_dir=tmp_path, reserved_ports=((10250, "the kubelet"),))
    network = NodeNetwork(config)
    from k3py.agent.network.node import PodRecord

    network.save_record(PodRecord("old-pod", "10.42.0.2", "vethx", "/run/netns/x", (HostPort(10250, 1), HostPort(8080, 80))))
    assert network._host_ports() == {"old-pod": ("10.42.0.2", (HostPort(8080, 80),))}


def test_host_port_updates_replace_only_the_hostport_chain(tmp_path: Path) -> None:
    config = NodeNetworkConfig(pod_cidr="10.42.5.0/24", data_dir=tmp_path)
    assert render_host_ports(config, {"uid-a": ("10.42.5.2", [HostPort(8080, 80)])}) == (
        "flush chain ip k3py-nat hostports\n"
        'add rule ip k3py-nat hostports tcp dport 8080 dnat to 10.42.5.2:80 comment "pod uid-a"\n'
    )
    assert render_host_ports(config, {}) == "flush chain ip k3py-nat hostports\n"


def test_a_corrupt_pod_record_is_a_clear_error(tmp_path: Path) -> None:
    network = NodeNetwork(NodeNetworkConfig(pod_cidr="10.42.0.0/24", data_dir=tmp_path))
    (network.records_dir / "uid-a.json").write_text('{"uid": "uid-a", "ip": ')
    with pytest.raises(NetworkError, match=r"record .*uid-a.json is corrupt"):
        network.records()
    with pytest.raises(NetworkError, match="is corrupt"):
        network.record("uid-a")
    assert network.record("uid-b") is None
