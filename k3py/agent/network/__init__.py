"""The pod network of one node: every pod its own network namespace and address.

A node owns one /24 of the cluster CIDR (Node.spec.podCIDR, e.g. 10.42.0.0/24 of
10.42.0.0/16). Pods of the node hang off one Linux bridge (``k3py0``) by a veth pair each and
get addresses from host-local IPAM persisted under the data dir; the node routes between its
bridge and the rest of the world, masquerades pod egress and DNATs hostPorts with nftables.

    config      NodeNetworkConfig: the address plan, checked; PodIP; the error types
    ipam        HostLocalIPAM: one file per reserved address, exclusive create
    hostports   HostPort mappings from pod specs, conflict checks, the node's reserved ports
    nftables    the node's table (NAT, the localnet drop rule), written in single transactions
                (whole, or its hostports)
    commands    running ip / nft / nsenter and sysctls, in the caller's network namespace
    routes      a /32 per local pod, a /24 per other node (host-gw), each set tagged
    node        NodeNetwork: bridge, unreachable safety routes, forwarding, NAT, pod records
    pod         PodNetwork: setup(pod_uid, netns_path, host_ports) -> PodIP, teardown(pod_uid)

Safety: ``unreachable`` routes cover the whole cluster and service CIDRs; only addresses
that really exist (a pod here, another node's /24) have more specific routes, so traffic for
anything else is refused on the spot and never leaves the host.

Designed to grow: other nodes are more routes over the same safety net (a VXLAN overlay
would change only their next hop). The service proxy keeps its own nftables table; since
the node's own connections are routed before the output hook's DNAT, it will need a route for
the service CIDR (same prefix, a metric below the ``unreachable`` one) for the node itself to
reach ClusterIPs. Cluster DNS listens on the cluster DNS address held by the node itself
(``k3py/agent/dns``): pods reach it through their gateway like any local address of the node
(the localnet drop rule only concerns 127.0.0.0/8).
"""

from k3py.agent.network.config import NetworkConfigError, NetworkError, NodeNetworkConfig, PodIP
from k3py.agent.network.hostports import (
    HostPort,
    HostPortConflict,
    HostPortReserved,
    host_ports_of_pod,
)
from k3py.agent.network.ipam import AddressesExhausted, HostLocalIPAM
from k3py.agent.network.node import NodeNetwork
from k3py.agent.network.pod import PodNetwork, host_veth_name, uses_pod_network

__all__ = [
    "AddressesExhausted",
    "HostLocalIPAM",
    "HostPort",
    "HostPortConflict",
    "HostPortReserved",
    "NetworkConfigError",
    "NetworkError",
    "NodeNetwork",
    "NodeNetworkConfig",
    "PodIP",
    "PodNetwork",
    "host_ports_of_pod",
    "host_veth_name",
    "uses_pod_network",
]
