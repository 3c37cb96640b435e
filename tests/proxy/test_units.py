"""The proxy's pure parts: reading Services and EndpointSlices, choosing endpoints as upstream
does, rendering, the syncer's decisions (against a recording nft and netlink), UDP flow
clean-up filters and the health check's answer."""

from __future__ import annotations

import struct
from typing import Any

from k3py.agent.proxy import ruleset
from k3py.agent.proxy.conntrack import FlowFilter, stale_flows
from k3py.agent.proxy.healthcheck import health_body
from k3py.agent.proxy.model import (
    Categorized,
    Endpoint,
    EndpointsCache,
    ServicePort,
    ServicePortName,
    categorize,
    read_slice,
    service_ports,
)
from k3py.agent.proxy.netlink import Element, ElementOp, Verdict, encode_element
from k3py.agent.proxy.syncer import RulesetSyncer
from tests.proxy.harness import endpoint, endpoint_slice, service

CONTEXT = ruleset.NodeContext(table="k3py-proxy-test", node_name="node-a", pod_cidr="10.42.0.0/24",
                              reserved_tcp_ports=(6443, 10250))


def _port(**overrides: Any) -> ServicePort:
    fields: dict[str, Any] = {"name": ServicePortName("default", "web", "http", "TCP"), "cluster_ip": "10.43.0.7", "port": 80}
    fields.update(overrides)
    return ServicePort(**fields)


# -- reading Services -------------------------------------------------------------------------


def test_services_that_get_no_rules() -> None:
    assert service_ports(service("dns", "10.43.0.10", annotations={"k3py.io/node-local": "true"})) == []
    assert service_ports(service("headless", "None")) == []
    assert service_ports(service("v6", "fd00::1")) == []
    assert service_ports(service("pending", "")) == []
    external = service("ext", "", type="ExternalName", externalName="example.com")
    assert service_ports(external) == []


def test_a_service_port_carries_what_its_rules_need() -> None:
    lb = service("lb", "10.43.0.8", type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000,
                 externalIPs=["198.51.100.7", "not-an-ip", "fd00::2"], sessionAffinity="ClientIP",
                 ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                        {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                        {"name": "bad", "port": 0, "protocol": "TCP"}],
                 status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example"}]}})
    http, dns = service_ports(lb)
    assert http.name == ServicePortName("default", "lb", "http", "TCP") and dns.protocol == "UDP"
    assert (http.node_port, dns.node_port) == (30080, 30053)
    assert http.external_ips == ("198.51.100.7",) and http.load_balancer_ips == ("192.0.2.1",)
    assert http.affinity_seconds == 10800  # the default timeout
    assert http.external_policy_local and http.health_check_node_port == 32000
    # A NodePort Service's stale ingress status is not a frontend; nor is healthCheckNodePort.
    np = service("np", "10.43.0.9", type="NodePort", externalTrafficPolicy="Local", healthCheckNodePort=32001,
                 ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30081}],
                 status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
    (port,) = service_ports(np)
    assert port.load_balancer_ips == () and port.health_check_node_port == 0
    # ClusterIP Services have no node ports even if a stale one is left in the spec.
    (plain,) = service_ports(service("c", "10.43.0.11", ports=[{"port": 80, "nodePort": 30099}]))
    assert plain.node_port == 0 and plain.name.port == "" and not plain.externally_accessible


def test_traffic_policies_decide_which_endpoint_lists_are_used() -> None:
    assert _port().uses_cluster_endpoints and not _port().uses_local_endpoints
    internal_local = _port(internal_policy_local=True)
    assert not internal_local.uses_cluster_endpoints and internal_local.uses_local_endpoints
    # External Local still uses cluster endpoints: pods and the node short-circuit to them.
    external_local = _port(node_port=30080, external_policy_local=True, internal_policy_local=True)
    assert external_local.uses_cluster_endpoints and external_local.uses_local_endpoints


# -- EndpointSlices and the choice of endpoints -------------------------------------------------


def test_slices_merge_per_service_port_and_keep_the_best_conditions() -> None:
    cache = EndpointsCache()
    first = endpoint_slice("web", [endpoint("10.42.0.2"), endpoint("10.42.0.3", ready=False)],
                           ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                  {"name": "dns", "port": 53, "protocol": "UDP"}], name="web-1")
    second = endpoint_slice("web", [endpoint("10.42.0.3"), endpoint("10.42.0.4", node="node-b")],
                            ports=[{"name": "http", "port": 8080, "protocol": "TCP"}], name="web-2")
    assert cache.update(("default", "web-1"), read_slice(first)) == {("default", "web")}
    cache.update(("default", "web-2"), read_slice(second))
    http = cache.endpoints(ServicePortName("default", "web", "http", "TCP"))
    assert [(e.ip, e.port, e.ready) for e in http] == [("10.42.0.2", 8080, True), ("10.42.0.3", 8080, True),
                                                       ("10.42.0.4", 8080, True)]
    assert [e.ip for e in cache.endpoints(ServicePortName("default", "web", "dns", "UDP"))] == ["10.42.0.2", "10.42.0.3"]
    assert cache.endpoints(ServicePortName("default", "web", "http", "UDP")) == ()
    assert cache.update(("default", "web-1"), None) == {("default", "web")}
    assert [e.ip for e in cache.endpoints(ServicePortName("default", "web", "http", "TCP"))] == ["10.42.0.3", "10.42.0.4"]


def test_slices_the_proxy_ignores() -> None:
    unlabelled = endpoint_slice("web", [endpoint("10.42.0.2")])
    unlabelled["metadata"]["labels"] = {}
    assert read_slice(unlabelled) is None
    v6 = endpoint_slice("web", [endpoint("fd00::2")])
    v6["addressType"] = "IPv6"
    assert read_slice(v6) is None
    # Conditions left out mean ready and serving, not terminating (the API's defaults).
    bare = endpoint_slice("web", [{"addresses": ["10.42.0.9"]}])
    info = read_slice(bare)
    assert info is not None
    (only,) = info.ports[("http", "TCP")]
    assert (only.ready, only.serving, only.terminating, only.node_name) == (True, True, False, "")


def test_categorize_as_upstream() -> None:
    ready_here = Endpoint("10.42.0.2", 80, node_name="node-a")
    ready_there = Endpoint("10.42.1.2", 80, node_name="node-b")
    leaving_here = Endpoint("10.42.0.3", 80, ready=False, serving=True, terminating=True, node_name="node-a")
    dead = Endpoint("10.42.0.4", 80, ready=False, serving=False, terminating=True, node_name="node-a")
    cluster = _port()
    assert categorize(cluster, [], "node-a") == Categorized()
    got = categorize(cluster, [ready_here, ready_there, leaving_here, dead], "node-a")
    assert got.cluster == (ready_here, ready_there) and got.local == () and got.has_any
    # Terminating endpoints only when no ready one is left; never the non-serving ones.
    got = categorize(cluster, [leaving_here, dead], "node-a")
    assert got.cluster == (leaving_here,) and got.has_any
    assert categorize(cluster, [dead], "node-a") == Categorized(has_any=False)
    local = _port(internal_policy_local=True)
    got = categorize(local, [ready_here, ready_there], "node-a")
    assert got.local == (ready_here,) and got.cluster == () and got.has_any
    got = categorize(local, [ready_there], "node-a")
    assert got.local == () and got.has_any  # endpoints elsewhere: dropped here, not refused
    got = categorize(local, [leaving_here, ready_there], "node-a")
    assert got.local == (leaving_here,)


# -- rendering ----------------------------------------------------------------------------------


def test_element_encodings_match_the_nft_types() -> None:
    key = ruleset.frontend_key("10.43.0.5", "TCP", 80)
    assert key == bytes([10, 43, 0, 5, 6, 0, 0, 0, 0, 80, 0, 0])
    assert ruleset.nodeport_key("UDP", 30053) == bytes([17, 0, 0, 0]) + struct.pack(">H", 30053) + b"\0\0"
    assert ruleset.endpoint_data(Endpoint("10.42.0.5", 8080)) == bytes([10, 42, 0, 5, 0x1F, 0x90, 0, 0])
    # One element of a verdict map as netlink carries it: key, then goto <chain>.
    wire = encode_element(Element(key, Verdict("service-X")))
    assert key in wire and b"service-X\0" in wire and struct.pack(">i", -4) in wire


def test_endpoints_split_the_random_range_evenly() -> None:
    elements = ruleset.interval_elements([b"a", b"b", b"c"])
    starts = sorted((struct.unpack(">I", e.key)[0], e.data) for e in elements if not e.interval_end)
    ends = sorted(struct.unpack(">I", e.key)[0] for e in elements if e.interval_end)
    assert starts == [(0, b"a"), (21845, b"b"), (43690, b"c")]
    assert ends == [21845, 43690, 65536]
    for count in (1, 2, 7, 10, 100):
        bounds = [0, *sorted(struct.unpack(">I", e.key)[0] for e in ruleset.interval_elements([b"x"] * count)
                             if e.interval_end)]
        widths = [bounds[i + 1] - bounds[i] for i in range(count)]
        assert bounds[-1] == 65536 and max(widths) - min(widths) <= 1


def test_an_endpoint_change_renders_the_same_chains_and_maps() -> None:
    port = _port(node_port=30080)
    one = ruleset.render_service_port(CONTEXT, port, Categorized(cluster=(Endpoint("10.42.0.2", 8080),), has_any=True))
    two = ruleset.render_service_port(CONTEXT, port, Categorized(
        cluster=(Endpoint("10.42.0.2", 8080), Endpoint("10.42.0.3", 8080)), has_any=True))
    none = ruleset.render_service_port(CONTEXT, port, Categorized())
    assert one.chains == two.chains == none.chains
    assert one.sets == two.sets == none.sets
    assert one.owned != two.owned and none.owned == {name: frozenset() for name in one.owned}
    # Frontends point at the same chains whatever the endpoints; without any, the filter's
    # sets refuse the ClusterIP and the NodePort.
    assert one.shared[ruleset.SERVICE_IPS.name] == none.shared[ruleset.SERVICE_IPS.name]
    assert ruleset.NO_ENDPOINT_SERVICES.name in none.shared and ruleset.NO_ENDPOINT_NODEPORTS.name in none.shared
    assert ruleset.NO_ENDPOINT_SERVICES.name not in one.shared
    # A spec change is new content: new chain names.
    moved = ruleset.render_service_port(CONTEXT, _port(node_port=30080, port=81), Categorized())
    assert set(moved.chains).isdisjoint(none.chains)


def test_session_affinity_renders_a_chain_and_a_timed_set_per_endpoint() -> None:
    port = _port(affinity_seconds=600)
    endpoints = (Endpoint("10.42.0.2", 8080), Endpoint("10.42.0.3", 8080))
    group = ruleset.render_service_port(CONTEXT, port, Categorized(cluster=endpoints, has_any=True))
    affinity = [s for s in group.sets.values() if s.dynamic]
    assert len(affinity) == 2 and all("timeout 600s" in s.declaration for s in affinity)
    rules = [rule for chain in group.chains.values() for rule in chain.rules]
    names = {s.name for s in affinity}
    assert {rule.split()[1][1:] for rule in rules if rule.startswith("update @")} == names
    assert sum("goto endpoint-" in rule and rule.startswith("ip saddr @") for rule in rules) == 2


def test_the_nodes_chains_protect_its_reserved_ports() -> None:
    node = ruleset.render_node(CONTEXT)
    services = next(c for name, c in node.chains.items() if name.startswith("services-"))
    assert services.rules[0] == "fib daddr type local meta l4proto tcp th dport { 6443, 10250 } return"
    script = ruleset.render_script(CONTEXT.table, node.chains.values(), node.sets.values())
    assert script.index("add chain") < script.index("add rule")  # every chain before any rule


# -- the syncer's decisions -------------------------------------------------------------------


class RecordingNetlink:
    def __init__(self, chains: set[str] | None = None, sets: set[str] | None = None) -> None:
        self.exists = chains is not None
        self.chains = chains or set()
        self.sets = sets or set()
        self.commits: list[list[ElementOp]] = []

    def table_exists(self, table: str) -> bool:
        return self.exists

    def chain_names(self, table: str) -> set[str]:
        return set(self.chains)

    def set_names(self, table: str) -> set[str]:
        return set(self.sets)

    def encode(self, table: str, ops: Any) -> list[ElementOp] | None:
        return list(ops) or None

    def send_batch(self, batch: list[ElementOp] | None) -> None:
        if batch:
            self.commits.append(batch)

    def close(self) -> None:
        pass


def _syncer(netlink: RecordingNetlink) -> tuple[RulesetSyncer, list[str]]:
    scripts: list[str] = []
    syncer = RulesetSyncer(CONTEXT.table, run_nft=lambda s: scripts.append(s) if s else None,
                           netlink=lambda: netlink)  # type: ignore[arg-type,return-value]
    return syncer, scripts


def _group(port: ServicePort, *ips: str) -> ruleset.Group:
    endpoints = tuple(Endpoint(ip, 8080) for ip in ips)
    return ruleset.render_service_port(CONTEXT, port, Categorized(cluster=endpoints, has_any=bool(endpoints)))


def test_the_syncer_writes_only_elements_for_an_endpoint_change() -> None:
    netlink = RecordingNetlink()
    syncer, scripts = _syncer(netlink)
    port = _port()
    rank = (1, ("2024", "default/web"))
    stats = syncer.sync({"": (ruleset.render_node(CONTEXT), (0, ("", ""))), port.name: (_group(port, "10.42.0.2"), rank)})
    assert stats.full and len(scripts) == 1 and scripts[0].startswith("add table ip k3py-proxy-test")
    one_port = _group(port, "10.42.0.2", "10.42.0.3")
    stats = syncer.sync({port.name: (one_port, rank)})
    assert len(scripts) == 1 and stats.chains_added == stats.sets_added == 0
    (flush, add) = netlink.commits[-1]
    assert flush.flush and flush.set_name in one_port.owned
    assert add.add and len(add.elements) == 4  # two ranges: start and end each
    # Nothing changed: nothing sent.
    commits = len(netlink.commits)
    syncer.sync({port.name: (_group(port, "10.42.0.2", "10.42.0.3"), rank)})
    assert len(netlink.commits) == commits and len(scripts) == 1


def test_the_oldest_service_keeps_a_clashing_address() -> None:
    netlink = RecordingNetlink()
    syncer, _scripts = _syncer(netlink)
    syncer.sync({"": (ruleset.render_node(CONTEXT), (0, ("", "")))})
    older = _port(name=ServicePortName("default", "old", "http", "TCP"), cluster_ip="10.43.0.20",
                  load_balancer_ips=("192.0.2.1",))
    newer = _port(name=ServicePortName("default", "new", "http", "TCP"), cluster_ip="10.43.0.21",
                  load_balancer_ips=("192.0.2.1",))
    key = ruleset.frontend_key("192.0.2.1", "TCP", 80)

    def owner() -> str:
        element = syncer._applied_shared[ruleset.SERVICE_IPS.name][key]  # what the kernel holds
        assert isinstance(element.data, Verdict)
        return element.data.chain

    syncer.sync({newer.name: (_group(newer, "10.42.0.3"), (1, ("2024-02", "default/new"))),
                 older.name: (_group(older, "10.42.0.2"), (1, ("2024-01", "default/old")))})
    assert "default/old/" in owner()
    syncer.sync({older.name: (None, (1, ("2024-01", "default/old")))})
    assert "default/new/" in owner()


def test_after_a_restart_existing_chains_are_kept_and_every_set_rewritten() -> None:
    node = ruleset.render_node(CONTEXT)
    port = _port()
    group = _group(port, "10.42.0.2")
    stale = "service-AAAAAAAA-default/gone/tcp/http"
    netlink = RecordingNetlink(chains=set(node.chains) | set(group.chains) | {stale},
                               sets=set(node.sets) | set(group.sets))
    syncer, scripts = _syncer(netlink)
    stats = syncer.sync({"": (node, (0, ("", ""))), port.name: (group, (1, ("", "")))})
    assert stats.full and stats.chains_added == 0 and stats.chains_removed == 1
    assert scripts == [f"flush chain ip {CONTEXT.table} {stale}\ndelete chain ip {CONTEXT.table} {stale}\n"]
    flushed = {op.set_name for op in netlink.commits[0] if op.flush}
    assert flushed == {s.name for s in ruleset.SHARED_SETS} | set(group.owned)


# -- UDP flows and health checks ------------------------------------------------------------------


def test_stale_udp_flows() -> None:
    port = _port(name=ServicePortName("default", "dns", "dns", "UDP"), port=53, node_port=30053,
                 external_ips=("198.51.100.7",))
    a, b = Endpoint("10.42.0.2", 5353), Endpoint("10.42.0.3", 5353)
    assert stale_flows(port, Categorized(cluster=(a, b), has_any=True), Categorized(cluster=(b,), has_any=True)) == [
        FlowFilter("10.43.0.7", 53, "10.42.0.2"), FlowFilter("198.51.100.7", 53, "10.42.0.2"),
        FlowFilter("", 30053, "10.42.0.2"),
    ]
    # From nothing to something: whatever was remembered for the Service's addresses goes.
    assert stale_flows(port, Categorized(), Categorized(cluster=(a,), has_any=True)) == [
        FlowFilter("10.43.0.7", 53), FlowFilter("198.51.100.7", 53), FlowFilter("", 30053),
    ]
    assert stale_flows(_port(), Categorized(cluster=(a,)), Categorized()) == []  # TCP: never
    assert FlowFilter("10.43.0.7", 53, "10.42.0.2").argv() == [
        "conntrack", "-D", "-p", "udp", "--orig-dst", "10.43.0.7", "--orig-port-dst", "53", "--reply-src", "10.42.0.2"]


def test_the_health_check_answer_is_upstreams() -> None:
    assert health_body(("default", "web"), 2).decode() == (
        '{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "web"\n\t},\n'
        '\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}'
    )
