"""The proxy's nftables table, rendered from the model: the node's part and one part per
Service port. Pure: values in, values out; ``syncer`` writes them.

Layout (kube-proxy's nftables mode, ``pkg/proxy/nftables/proxier.go``, with one change — the
endpoints of a Service port are set elements, not rules):

    nat-prerouting, nat-output  (nat, dstnat)   jump services
    services                    reserved TCP ports of the node's own addresses (the API server's,
                                the kubelet's) return first — no Service may capture them; then
                                ``ip daddr . meta l4proto . th dport vmap @service-ips``
                                (ClusterIPs, externalIPs, LoadBalancer ingress) and, for the
                                node's addresses but 127/8, ``meta l4proto . th dport vmap
                                @service-nodeports``: one hash lookup whatever the number of
                                Services — the first packet's cost does not grow with them
    service-<port>              cluster-policy chain: ``dnat ip to numgen random mod 65536 map
                                @endpoints-<port>`` — the endpoints map is an interval map
                                splitting 0..65535 evenly between the usable endpoints, so an
                                endpoint change rewrites only that map's elements (one netlink
                                transaction, no rule touched); ClusterIP traffic from outside
                                the cluster CIDR is marked for masquerade first
    local-<port>                the same over this node's endpoints (traffic policy Local)
    external-<port>             NodePort / LoadBalancer / externalIP traffic: masquerade and the
                                cluster chain; with externalTrafficPolicy Local, pods and the node
                                itself short-circuit to the cluster chain (the node masqueraded),
                                anyone else goes to the local chain and keeps its source address
    filter-{prerouting,output}  (filter, dstnat-10) new connections to a Service without
                                usable endpoints: rejected (TCP reset, else ICMP port
                                unreachable: connection refused at once) from
                                @no-endpoint-services / @no-endpoint-nodeports; dropped for
                                traffic policy Local without a local endpoint, as upstream
    filter-*-post               (after DNAT) anything still addressed to the service CIDR, and
                                not a local address of the node (the node-local DNS server),
                                is an unknown Service address: rejected, so it never leaves
    nat-postrouting (srcnat)    masquerade what was marked (bit 0x4000 of the packet mark) and
                                pod-to-pod traffic of this node that went through a DNAT
                                (hairpin: without it the answer would cross the bridge past
                                conntrack)

sessionAffinity ClientIP keeps upstream's shape for that Service port: a chain per endpoint
(``update @affinity-<endpoint> { ip saddr }`` then its DNAT), a dynamic set per endpoint with the
affinity timeout, ``ip saddr @affinity-<endpoint> goto <endpoint chain>`` first in the policy
chain, and the random choice a verdict interval map over the endpoint chains.

Names. Every chain's name carries a digest of its identity *and its rules*, so a chain is never
changed in place: new rules are a new chain the maps then point to, and the old one goes (see
``syncer``). Which chains exist therefore says what they contain, even after a restart. Chain
names are ``<kind>-<digest>-<namespace>/<service>/<protocol>/<port name>`` (upstream's style:
only ``[a-z0-9-]`` and ``/`` from the API, so they can never clash with an nft keyword). A
Service port's sets and maps are ``s<digest of identity and declaration>``, their readable name
in their comment: the kernel looks sets up by name along a list, and long names made that
the bulk of an element update with thousands of Services. Their elements are diffed.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from k3py.agent.proxy.model import Categorized, Endpoint, ServicePort
from k3py.agent.proxy.netlink import Element, Verdict

MASQUERADE_MARK = 0x4000
SLOTS = 65536  # numgen's range, split between endpoints
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
FRONTEND_TYPE = "ipv4_addr . inet_proto . inet_service"
NODEPORT_TYPE = "inet_proto . inet_service"


@dataclass(frozen=True)
class NodeContext:
    """Facts about this node the rules depend on."""

    table: str
    node_name: str
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    pod_cidr: str = ""  # this node's slice of the cluster CIDR (hairpin); "" leaves it out
    reserved_tcp_ports: tuple[int, ...] = ()  # the node's own listeners no Service may capture


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...]
    base: str = ""  # "type nat hook prerouting priority dstnat; policy accept;" for base chains


@dataclass(frozen=True)
class NftSet:
    name: str
    kind: str  # "set" or "map"
    declaration: str  # what goes between the braces
    dynamic: bool = False  # elements written by packets (affinity): never flushed or diffed


@dataclass
class Group:
    """What one Service port — or the node's fixed part — puts into the table.

    ``owned``: the whole contents of sets only this group writes (rewritten together when they
    change); ``shared``: this group's entries in the node's shared maps and sets, by key.
    """

    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    owned: dict[str, frozenset[Element]] = field(default_factory=dict)
    shared: dict[str, dict[bytes, Element]] = field(default_factory=dict)
    health: tuple[tuple[str, str], int, int] | None = None  # (service, health port, local endpoints)

    def add_chain(self, chain: Chain) -> str:
        self.chains[chain.name] = chain
        return chain.name

    def add_set(self, nft_set: NftSet) -> str:
        self.sets[nft_set.name] = nft_set
        return nft_set.name

    def share(self, set_name: str, element: Element) -> None:
        self.shared.setdefault(set_name, {})[element.key] = element


def digest(*parts: object, length: int = 8) -> str:
    """``length`` characters of base32 SHA-256 (8: upstream's chain name hashes)."""
    raw = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return base64.b32encode(raw).decode()[:length]


def _declared(kind: str, base_name: str, declaration: str, dynamic: bool = False) -> NftSet:
    return NftSet(f"{base_name}-{digest(kind, base_name, declaration)}", kind, declaration, dynamic)


# -- the node's shared sets (named after their declaration) ------------------------------------

SERVICE_IPS = _declared("map", "service-ips", f"type {FRONTEND_TYPE} : verdict;")
SERVICE_NODEPORTS = _declared("map", "service-nodeports", f"type {NODEPORT_TYPE} : verdict;")
NO_ENDPOINT_SERVICES = _declared("set", "no-endpoint-services", f"type {FRONTEND_TYPE};")
NO_ENDPOINT_NODEPORTS = _declared("set", "no-endpoint-nodeports", f"type {NODEPORT_TYPE};")
NO_LOCAL_INTERNAL = _declared("set", "no-local-endpoint-internal", f"type {FRONTEND_TYPE};")
NO_LOCAL_EXTERNAL = _declared("set", "no-local-endpoint-external", f"type {FRONTEND_TYPE};")
NO_LOCAL_NODEPORTS = _declared("set", "no-local-endpoint-nodeports", f"type {NODEPORT_TYPE};")
SHARED_SETS = (SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS,
               NO_LOCAL_INTERNAL, NO_LOCAL_EXTERNAL, NO_LOCAL_NODEPORTS)


def _content_chain(prefix: str, readable: str, rules: Sequence[str], base: str = "") -> Chain:
    suffix = f"-{readable}" if readable else ""
    return Chain(f"{prefix}-{digest(prefix, readable, base, *rules)}{suffix}", tuple(rules), base)


_MARK = f"0x{MASQUERADE_MARK:x}"
MARK_FOR_MASQUERADE = _content_chain("mark-for-masquerade", "", [f"meta mark set meta mark or {_MARK}"])
MASQUERADING = _content_chain("masquerading", "", [
    f"meta mark & {_MARK} == 0 return",
    f"meta mark set meta mark xor {_MARK}",
    "masquerade fully-random",
])  # fmt: skip


# TCP gets a reset, anything else ICMP port unreachable: either way the client's connect fails
# at once with "connection refused". A reset is also never subject to ICMP rate limiting.
REJECT = _content_chain("reject", "", ["meta l4proto tcp reject with tcp reset", "reject"])


def render_node(context: NodeContext) -> Group:
    """The fixed part of the table (see the module docstring)."""
    group = Group()
    for nft_set in SHARED_SETS:
        group.add_set(nft_set)
    not_loopback = "ip daddr != 127.0.0.0/8"
    group.add_chain(MARK_FOR_MASQUERADE)
    masquerading = group.add_chain(MASQUERADING)
    frontend = "ip daddr . meta l4proto . th dport"
    nodeport = f"fib daddr type local {not_loopback} meta l4proto . th dport"
    services_rules = []
    if context.reserved_tcp_ports:
        ports = ", ".join(str(p) for p in sorted(set(context.reserved_tcp_ports)))
        services_rules.append(f"fib daddr type local meta l4proto tcp th dport {{ {ports} }} return")
    services_rules += [f"{frontend} vmap @{SERVICE_IPS.name}", f"{nodeport} vmap @{SERVICE_NODEPORTS.name}"]
    services = group.add_chain(_content_chain("services", "", services_rules))
    reject = group.add_chain(REJECT)
    outside = f"ip saddr != {context.cluster_cidr} fib saddr type != local"  # not a pod, not the node
    check = group.add_chain(_content_chain("endpoints-check", "", [
        f"{frontend} @{NO_ENDPOINT_SERVICES.name} goto {reject}",
        f"{frontend} @{NO_LOCAL_INTERNAL.name} drop",
        f"{outside} {frontend} @{NO_LOCAL_EXTERNAL.name} drop",
        f"{nodeport} @{NO_ENDPOINT_NODEPORTS.name} goto {reject}",
        f"{outside} {nodeport} @{NO_LOCAL_NODEPORTS.name} drop",
    ]))  # fmt: skip
    # Before DNAT: what arrives (pods, other hosts) in prerouting — rejecting there means a
    # pod's packet for a Service address is never routed, so it never bounces off the bridge
    # it came from (which would earn the pod an ICMP redirect, and with it a second of ICMP
    # rate limiting) — and the node's own in output.
    for hook in ("prerouting", "output"):
        group.add_chain(_content_chain(f"filter-{hook}", "", [f"ct state new jump {check}"],
                                       base=f"type filter hook {hook} priority -110; policy accept;"))
    # After DNAT: what is still addressed to the service CIDR names no Service (and is not the
    # node's own address there, the cluster DNS server's).
    unknown = f"ip daddr {context.service_cidr} fib daddr type != local goto {reject}"
    group.add_chain(_content_chain("filter-prerouting-post", "", [unknown],
                                   base="type filter hook prerouting priority -90; policy accept;"))
    group.add_chain(_content_chain("filter-output-post", "", [unknown],
                                   base="type filter hook output priority filter; policy accept;"))
    # nft accepts the priority name "dstnat" only on prerouting; -100 is the same value.
    group.add_chain(_content_chain("nat-prerouting", "", [f"jump {services}"],
                                   base="type nat hook prerouting priority dstnat; policy accept;"))
    group.add_chain(_content_chain("nat-output", "", [f"jump {services}"],
                                   base="type nat hook output priority -100; policy accept;"))
    postrouting = [f"jump {masquerading}"]
    if context.pod_cidr:
        postrouting.append(f"ct status dnat ip saddr {context.pod_cidr} ip daddr {context.pod_cidr} masquerade")
    group.add_chain(_content_chain("nat-postrouting", "", postrouting,
                                   base="type nat hook postrouting priority srcnat; policy accept;"))
    return group


# -- element encodings ---------------------------------------------------------------------------


def frontend_key(ip: str, protocol: str, port: int) -> bytes:
    """``ipv4_addr . inet_proto . inet_service``: each field padded to 4 bytes, network order."""
    return socket.inet_aton(ip) + struct.pack(">B3xH2x", PROTOCOL_NUMBERS[protocol], port)


def nodeport_key(protocol: str, port: int) -> bytes:
    return struct.pack(">B3xH2x", PROTOCOL_NUMBERS[protocol], port)


def endpoint_data(endpoint: Endpoint) -> bytes:
    """``ipv4_addr . inet_service`` (the DNAT target)."""
    return socket.inet_aton(endpoint.ip) + struct.pack(">H2x", endpoint.port)


def interval_elements(targets: Sequence[bytes | Verdict]) -> frozenset[Element]:
    """0..65535 split evenly between ``targets`` (the numgen slots of each endpoint): a start
    element per range carrying the target, an end element at the first slot past it."""
    elements: list[Element] = []
    count = len(targets)
    for index, target in enumerate(targets):
        start = index * SLOTS // count
        end = (index + 1) * SLOTS // count
        elements.append(Element(struct.pack(">I", start), target))
        elements.append(Element(struct.pack(">I", end), interval_end=True))
    return frozenset(elements)


# -- one Service port ------------------------------------------------------------------------------


def _per_port_set(kind: str, readable: str, nft_kind: str, declaration: str, identity: tuple[str, ...],
                  *extra: object, dynamic: bool = False) -> NftSet:
    """A Service port's set or map. Short name — the kernel finds a set by comparing its name
    with every set's before it (a linear list), so with thousands of Services the names' length
    is most of an element update's cost — and the readable name as its comment."""
    safe = "".join(c if c.isalnum() or c in "._:/-" else "_" for c in f"{kind} {readable}")[:120]
    name = "s" + digest(*identity, kind, declaration, *extra, length=12).lower()
    return NftSet(name, nft_kind, f'{declaration} comment "{safe}";', dynamic)


def readable_name(port: ServicePort) -> str:
    name = port.name
    return f"{name.namespace}/{name.name}/{name.protocol.lower()}/{name.port}"


def render_service_port(context: NodeContext, port: ServicePort, endpoints: Categorized) -> Group:
    """The chains, maps and shared entries of one Service port (see the module docstring)."""
    group = Group()
    readable = readable_name(port)
    identity = (context.table, str(port.name), port.protocol)
    proto = port.protocol.lower()
    mark_chain = MARK_FOR_MASQUERADE.name

    endpoint_chains: dict[Endpoint, tuple[str, str]] = {}  # affinity: endpoint → (chain, set)
    if port.affinity_seconds:
        for endpoint in endpoints.reachable:
            suffix = f"{readable}__{endpoint.ip}/{endpoint.port}"
            declaration = f"type ipv4_addr; flags dynamic,timeout; timeout {port.affinity_seconds}s;"
            affinity = group.add_set(_per_port_set("affinity", suffix, "set", declaration, identity, endpoint,
                                                   dynamic=True))
            chain = group.add_chain(_content_chain("endpoint", suffix, [
                f"update @{affinity} {{ ip saddr }}",
                f"meta l4proto {proto} dnat ip to {endpoint.ip}:{endpoint.port}",
            ]))  # fmt: skip
            endpoint_chains[endpoint] = (chain, affinity)

    masquerade_outside = (
        f"ip daddr {port.cluster_ip} {proto} dport {port.port} ip saddr != {context.cluster_cidr} jump {mark_chain}"
    )

    def policy_chain(kind: str, chosen: tuple[Endpoint, ...], internal: bool) -> str:
        rules = [masquerade_outside] if internal else []
        if port.affinity_seconds:
            declaration = "typeof numgen random mod 65536 : verdict; flags interval;"
            endpoints_map = group.add_set(_per_port_set(f"{kind}-endpoints", readable, "map", declaration, identity))
            rules += [f"ip saddr @{endpoint_chains[e][1]} goto {endpoint_chains[e][0]}" for e in chosen]
            rules.append(f"numgen random mod {SLOTS} vmap @{endpoints_map}")
            targets: list[bytes | Verdict] = [Verdict(endpoint_chains[e][0]) for e in chosen]
        else:
            declaration = f"typeof numgen random mod 65536 : ip daddr . {proto} dport; flags interval;"
            endpoints_map = group.add_set(_per_port_set(f"{kind}-endpoints", readable, "map", declaration, identity))
            rules.append(f"meta l4proto {proto} dnat ip to numgen random mod {SLOTS} map @{endpoints_map}")
            targets = [endpoint_data(e) for e in chosen]
        group.owned[endpoints_map] = interval_elements(targets) if targets else frozenset()
        return group.add_chain(_content_chain(kind, readable, rules))

    internal_local = port.internal_policy_local
    cluster_chain = policy_chain("service", endpoints.cluster, not internal_local) if port.uses_cluster_endpoints else ""
    local_chain = policy_chain("local", endpoints.local, internal_local) if port.uses_local_endpoints else ""
    internal_chain = local_chain if internal_local else cluster_chain

    # Frontends. The verdict map entries do not depend on the endpoints (the endpoints maps do),
    # so an endpoint change never re-validates the table; what has no usable endpoint is
    # rejected or dropped by the filter chains' sets instead.
    group.share(SERVICE_IPS.name, Element(frontend_key(port.cluster_ip, port.protocol, port.port), Verdict(internal_chain)))
    if not endpoints.has_any:
        group.share(NO_ENDPOINT_SERVICES.name, Element(frontend_key(port.cluster_ip, port.protocol, port.port)))
    elif internal_local and not endpoints.local:
        group.share(NO_LOCAL_INTERNAL.name, Element(frontend_key(port.cluster_ip, port.protocol, port.port)))

    if port.externally_accessible:
        if port.external_policy_local:
            external_rules = [
                f"ip saddr {context.cluster_cidr} goto {cluster_chain}",  # pods: short-circuit
                f"fib saddr type local jump {mark_chain}",  # the node: its address is the source
                f"fib saddr type local goto {cluster_chain}",
                f"goto {local_chain}",
            ]
        else:
            external_rules = [f"jump {mark_chain}", f"goto {cluster_chain}"]
        external_chain = group.add_chain(_content_chain("external", readable, external_rules))
        no_external = not endpoints.has_any or (port.external_policy_local and not endpoints.local)
        refusal = NO_ENDPOINT_SERVICES if not endpoints.has_any else NO_LOCAL_EXTERNAL
        for ip in (*port.external_ips, *port.load_balancer_ips):
            key = frontend_key(ip, port.protocol, port.port)
            group.share(SERVICE_IPS.name, Element(key, Verdict(external_chain)))
            if no_external:
                group.share(refusal.name, Element(key))
        if port.node_port:
            key = nodeport_key(port.protocol, port.node_port)
            group.share(SERVICE_NODEPORTS.name, Element(key, Verdict(external_chain)))
            if no_external:
                group.share((NO_ENDPOINT_NODEPORTS if not endpoints.has_any else NO_LOCAL_NODEPORTS).name, Element(key))

    if port.health_check_node_port:
        local_ready = len({e.ip for e in endpoints.local if e.ready})
        group.health = (port.name.service, port.health_check_node_port, local_ready)
    return group


def render_script(table: str, chains: Iterable[Chain], sets: Iterable[NftSet]) -> str:
    """``nft -f`` input creating ``sets`` and ``chains`` (with their rules) in ``table``: every
    set and chain first, then the rules, so rules may name any of them."""
    lines: list[str] = []
    for nft_set in sets:
        lines.append(f"add {nft_set.kind} ip {table} {nft_set.name} {{ {nft_set.declaration} }}")
    chains = list(chains)
    for chain in chains:
        lines.append(f"add chain ip {table} {chain.name}" + (f" {{ {chain.base} }}" if chain.base else ""))
    for chain in chains:
        lines.extend(f"add rule ip {table} {chain.name} {rule}" for rule in chain.rules)
    return "\n".join(lines) + "\n" if lines else ""


def render_removal(table: str, chains: Iterable[str], sets: Iterable[str]) -> str:
    """``nft -f`` input deleting chains (flushed first, so none is still jumped to by another
    one being deleted) and then sets and maps (``delete set`` takes either)."""
    chains = sorted(chains)
    lines = [f"flush chain ip {table} {name}" for name in chains]
    lines += [f"delete chain ip {table} {name}" for name in chains]
    lines += [f"delete set ip {table} {name}" for name in sorted(sets)]
    return "\n".join(lines) + "\n" if lines else ""
