"""Routes to pods: one /32 per local pod, one /24 per other node ("host-gw").

Local pods. The bridge holds the gateway address without its prefix route
(``noprefixroute``); instead every pod that is set up gets a host route
``10.42.0.5/32 dev k3py0 src 10.42.0.1``. An address of the node's /24 that no pod holds thus
falls through to the ``unreachable`` safety route of the cluster CIDR and is refused at once —
rather than after three seconds of unanswered ARP, and equally for the node itself, for
other nodes' pods and for the outside. Pods still see their /24 as on-link and talk to each
other straight across the bridge. These routes carry ``POD_ROUTE_PROTOCOL``, so the node can
tell them apart and rebuild them from its pod records.

Other nodes' pods. Each node owns one /24 of the cluster CIDR. When nodes share a link (the
usual single-LAN cluster, and the test hosts joined by veth pairs), a node reaches another
node's pods with one plain route per peer: ``10.42.1.0/24 via <that node's address>``. The peer forwards the packet
onto its bridge; the answer comes back the same way. Pod addresses are kept end to end (the
egress masquerade only applies to destinations outside the cluster CIDR).

These routes carry a routing protocol number of their own (``ROUTE_PROTOCOL``), so
``sync_node_routes`` can tell them from anybody else's and replaces the whole set: peers
that left lose their route, and their range falls back to the ``unreachable`` safety route.
An overlay (VXLAN) for nodes without a shared link would replace the next hop, not this shape.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping

from k3py.agent.network import commands
from k3py.agent.network.config import NetworkConfigError, NodeNetworkConfig, parse_ipv4_network

# rtnetlink protocol numbers above 4 are free for routing daemons; 242 and 243 are unused by
# the ones iproute2 knows (see /usr/share/iproute2/rt_protos, /etc/iproute2/rt_protos).
ROUTE_PROTOCOL = 242
POD_ROUTE_PROTOCOL = 243


def pod_route(config: NodeNetworkConfig, address: str) -> str:
    """The host route of one local pod, as ``ip route`` takes it after the verb."""
    return (
        f"{address}/32 dev {config.bridge} scope link src {config.gateway}"
        f" proto {POD_ROUTE_PROTOCOL}"
    )


def _pod_route_key(config: NodeNetworkConfig, address: str) -> str:
    # What identifies a pod route for deletion, whatever else it was created with.
    return f"{address}/32 dev {config.bridge} proto {POD_ROUTE_PROTOCOL}"


def current_pod_routes(config: NodeNetworkConfig) -> set[str]:
    """The addresses that have a pod route now."""
    output = commands.ip(
        "-4", "-o", "route", "show", "proto", str(POD_ROUTE_PROTOCOL), "dev", config.bridge,
        check=False,
    ).stdout
    return {line.split()[0].removesuffix("/32") for line in output.splitlines() if line.strip()}


def sync_pod_routes(config: NodeNetworkConfig, addresses: Collection[str]) -> None:
    """Makes the pod routes exactly those of ``addresses``."""
    current = current_pod_routes(config)
    lines = [f"route del {_pod_route_key(config, a)}" for a in sorted(current - set(addresses))]
    lines += [f"route replace {pod_route(config, a)}" for a in sorted(set(addresses) - current)]
    if lines:
        commands.ip_batch(lines)


def delete_pod_route(config: NodeNetworkConfig, address: str) -> None:
    """Drops one pod's route (absent is fine: teardown is idempotent)."""
    commands.run(["ip", "route", "del", *_pod_route_key(config, address).split()], check=False)


def check_peers(config: NodeNetworkConfig, peers: Mapping[str, str]) -> dict[str, str]:
    """``{pod CIDR: node address}`` checked against this node's plan, normalised."""
    checked: dict[str, str] = {}
    for cidr, node_ip in peers.items():
        network = parse_ipv4_network(cidr, "peer pod CIDR")
        if not network.subnet_of(config.cluster_network):
            raise NetworkConfigError(
                f"peer pod CIDR {network} is not inside the cluster CIDR {config.cluster_network}"
            )
        if network.overlaps(config.pod_network):
            raise NetworkConfigError(
                f"peer pod CIDR {network} overlaps this node's pod CIDR {config.pod_network}"
            )
        try:
            address = ipaddress.IPv4Address(node_ip)
        except ValueError:
            raise NetworkConfigError(
                f"address {node_ip!r} of the node owning {network} is not an IPv4 address"
            ) from None
        if address in config.cluster_network or address in config.service_network:
            raise NetworkConfigError(
                f"address {address} of the node owning {network} lies in a cluster range"
            )
        checked[str(network)] = str(address)
    return checked


def current_node_routes() -> dict[str, str]:
    """The peer routes installed now, ``{pod CIDR: next hop}``."""
    output = commands.ip("-4", "-o", "route", "show", "proto", str(ROUTE_PROTOCOL)).stdout
    found: dict[str, str] = {}
    for line in output.splitlines():
        words = line.split()
        if "via" in words and words.index("via") + 1 < len(words):
            found[words[0]] = words[words.index("via") + 1]
    return found


def sync_node_routes(config: NodeNetworkConfig, peers: Mapping[str, str]) -> None:
    """Makes the peer routes exactly ``peers`` (``{pod CIDR: node address}``)."""
    wanted = check_peers(config, peers)
    current = current_node_routes()
    lines = [
        f"route del {cidr} proto {ROUTE_PROTOCOL}"
        for cidr in sorted(current) if cidr not in wanted
    ]
    lines += [
        f"route replace {cidr} via {node_ip} proto {ROUTE_PROTOCOL}"
        for cidr, node_ip in sorted(wanted.items()) if current.get(cidr) != node_ip
    ]
    if lines:
        commands.ip_batch(lines)
