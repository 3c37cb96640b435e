"""The address plan of one node's pod network, checked once, up front.

Kubernetes (and k3s) carve a cluster CIDR (10.42.0.0/16) into one podCIDR per node (a /24);
every pod on a node takes an address from that node's /24 and the node's bridge holds the
first usable address (.1) as the pods' default gateway. Services live in a separate service
CIDR (10.43.0.0/16). ``NodeNetworkConfig`` holds these ranges plus the names this node uses
(bridge, nftables table) and derives the rest — gateway, the range IPAM may hand out — so the
rest of the package never does address arithmetic of its own.

Every check raises ``NetworkConfigError`` (a ``ValueError``) with a message a user can act
on, because these values come from the command line and from Node.spec.podCIDR.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
DEFAULT_BRIDGE = "k3py0"
# Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
MAX_IFNAME = 15


class NetworkConfigError(ValueError):
    """A pod network setting is malformed or inconsistent."""


class NetworkError(RuntimeError):
    """Setting up or tearing down the pod network failed on this node."""


def parse_ipv4_network(text: str, what: str) -> ipaddress.IPv4Network:
    """``text`` as an IPv4 network in strict CIDR form (no host bits set)."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise NetworkConfigError(f"{what} {text!r} is not a valid CIDR: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise NetworkConfigError(f"{what} {text!r}: only IPv4 pod networks are supported")
    return network


def check_interface_name(name: str, what: str) -> str:
    if not name or len(name.encode()) > MAX_IFNAME:
        raise NetworkConfigError(f"{what} {name!r} must be 1 to {MAX_IFNAME} bytes long")
    if any(c in name for c in "/ \t\n:") or name in (".", ".."):
        raise NetworkConfigError(f"{what} {name!r} may not contain '/', ':' or whitespace")
    return name


@dataclass(frozen=True)
class PodIP:
    """The address a pod got: its IP, the prefix of its subnet and its default gateway."""

    address: ipaddress.IPv4Address
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @property
    def ip(self) -> str:
        """The address as Pod.status.podIP shows it."""
        return str(self.address)

    @property
    def cidr(self) -> str:
        """The address with its prefix, as ``ip addr add`` takes it ("10.42.0.5/24")."""
        return f"{self.address}/{self.network.prefixlen}"


@dataclass(frozen=True)
class NodeNetworkConfig:
    """Everything a node needs to know to run its pod network."""

    pod_cidr: str                       # this node's slice, Node.spec.podCIDR ("10.42.0.0/24")
    data_dir: Path                      # IPAM and per-pod records live under here
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    bridge: str = DEFAULT_BRIDGE
    nft_table: str = "k3py-nat"         # an `ip` family table this package owns alone
    # Routes of type `unreachable` sit under the specific ones with this metric, so traffic to
    # a pod or service address nothing answers for fails at once instead of following the
    # default route off the host.
    unreachable_metric: int = 4242
    # TCP ports k3py listens on on this node (port → what listens), which no hostPort may take.
    reserved_ports: tuple[tuple[int, str], ...] = ()
    pod_network: ipaddress.IPv4Network = field(init=False, repr=False)
    cluster_network: ipaddress.IPv4Network = field(init=False, repr=False)
    service_network: ipaddress.IPv4Network = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pod = parse_ipv4_network(self.pod_cidr, "pod CIDR")
        cluster = parse_ipv4_network(self.cluster_cidr, "cluster CIDR")
        service = parse_ipv4_network(self.service_cidr, "service CIDR")
        if not pod.subnet_of(cluster):
            raise NetworkConfigError(
                f"pod CIDR {pod} of this node is not inside the cluster CIDR {cluster}"
            )
        if cluster.overlaps(service):
            raise NetworkConfigError(f"cluster CIDR {cluster} overlaps service CIDR {service}")
        if pod.prefixlen > 29:
            # .0 network, .1 gateway, last broadcast: a /30 would leave one pod, /31 none.
            raise NetworkConfigError(f"pod CIDR {pod} is too small: use /29 or larger")
        check_interface_name(self.bridge, "bridge name")
        if not self.nft_table or not self.nft_table.replace("-", "").replace("_", "").isalnum():
            raise NetworkConfigError(
                f"nftables table name {self.nft_table!r} may hold only letters, digits, '-', '_'"
            )
        for port, _owner in self.reserved_ports:
            if not 0 < port < 65536:
                raise NetworkConfigError(f"reserved port {port} must be between 1 and 65535")
        if not 0 < self.unreachable_metric < 2**32:
            raise NetworkConfigError("unreachable route metric must be between 1 and 2^32-1")
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "pod_network", pod)
        object.__setattr__(self, "cluster_network", cluster)
        object.__setattr__(self, "service_network", service)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The bridge's address: the first usable one of the pod CIDR."""
        return self.pod_network.network_address + 1

    @property
    def first_pod_address(self) -> ipaddress.IPv4Address:
        return self.pod_network.network_address + 2

    @property
    def last_pod_address(self) -> ipaddress.IPv4Address:
        return self.pod_network.broadcast_address - 1

    def pod_ip(self, address: ipaddress.IPv4Address) -> PodIP:
        return PodIP(address=address, network=self.pod_network, gateway=self.gateway)

    @property
    def bridge_mac(self) -> str:
        """A fixed, locally administered MAC derived from the gateway address.

        A Linux bridge without an explicitly set address takes the lowest MAC of its ports,
        so it would change whenever pods come and go and every pod's ARP entry for the
        gateway would go stale. 0a:58 is the locally administered prefix other CNI plugins
        use for the same purpose; the other four bytes are the gateway IP.
        """
        octets = self.gateway.packed
        return "0a:58:" + ":".join(f"{b:02x}" for b in octets)
