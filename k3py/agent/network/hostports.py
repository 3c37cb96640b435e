"""hostPort mappings: a port of the node forwarded to a port of one pod.

A container port with ``hostPort`` set (``spec.containers[].ports[]``) asks the node to
forward connections to ``[hostIP]:hostPort`` on the node to ``podIP:containerPort``, which
the CNI ``portmap`` plugin does with DNAT rules. Here a ``HostPort`` is the checked form of one
such entry; the nftables module turns the node's set of them into rules.

Two pods cannot hold the same (protocol, hostIP, hostPort) on one node; the scheduler keeps
them apart, and ``check_conflicts`` refuses such a pod here too, because a second DNAT rule
for a port would silently shadow or be shadowed by the first.

Nor may a pod take a TCP port k3py itself listens on on the node — the kubelet's streaming
port (10250) and, on a server, the API server's port: the DNAT rule would capture the API
server's own connections to the kubelet (pods/log, exec) or every client's connection to the
API. ``check_reserved`` refuses such a pod, whatever its hostIP: the kubelet listens on every
address, and a rule for one address still captures the connections made to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from k3py.agent.network.config import NetworkConfigError, NetworkError

PROTOCOLS = ("TCP", "UDP", "SCTP")


class HostPortConflict(NetworkError):
    """Another pod on this node already holds the host port."""


class HostPortReserved(NetworkError):
    """The host port is one k3py itself listens on on this node."""


@dataclass(frozen=True, order=True)
class HostPort:
    """``host_ip:host_port/protocol`` on the node forwards to ``container_port`` of the pod."""

    host_port: int
    container_port: int
    protocol: str = "TCP"
    host_ip: str = ""  # "" (or 0.0.0.0 on input): every address of the node

    def __post_init__(self) -> None:
        for what, port in (("hostPort", self.host_port), ("containerPort", self.container_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise NetworkConfigError(f"{what} {port!r} must be a number from 1 to 65535")
        protocol = self.protocol.upper() if isinstance(self.protocol, str) else self.protocol
        if protocol not in PROTOCOLS:
            raise NetworkConfigError(
                f"protocol {self.protocol!r} must be one of {', '.join(PROTOCOLS)}"
            )
        object.__setattr__(self, "protocol", protocol)
        host_ip = self.host_ip or ""
        if host_ip:
            try:
                address = ipaddress.ip_address(host_ip)
            except ValueError:
                raise NetworkConfigError(f"hostIP {host_ip!r} is not an IP address") from None
            if address.version != 4:
                raise NetworkConfigError(f"hostIP {host_ip!r}: only IPv4 is supported")
            host_ip = "" if address.is_unspecified else str(address)
        object.__setattr__(self, "host_ip", host_ip)

    @property
    def key(self) -> tuple[str, str, int]:
        """What two pods on one node may not share."""
        return (self.protocol, self.host_ip, self.host_port)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
            "hostIP": self.host_ip,
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> HostPort:
        """From a container port entry (``{"containerPort", "hostPort", "protocol", "hostIP"}``)."""
        if not isinstance(entry, Mapping):
            raise NetworkConfigError(f"a port entry must be an object, not {entry!r}")
        host_port = entry.get("hostPort")
        return cls(
            host_port=host_port if host_port is not None else 0,
            container_port=entry.get("containerPort", 0),
            protocol=entry.get("protocol") or "TCP",
            host_ip=entry.get("hostIP") or "",
        )


def host_ports_of_pod(pod_spec: Mapping[str, Any]) -> list[HostPort]:
    """The hostPort mappings a Pod spec asks for (none for hostNetwork pods, which use the
    node's ports directly)."""
    if pod_spec.get("hostNetwork"):
        return []
    found: list[HostPort] = []
    for group in ("initContainers", "containers"):
        for container in pod_spec.get(group) or ():
            for entry in container.get("ports") or ():
                if isinstance(entry, Mapping) and entry.get("hostPort"):
                    found.append(HostPort.from_dict(entry))
    check_conflicts({"": found})
    return found


def check_conflicts(by_owner: Mapping[str, Iterable[HostPort]]) -> None:
    """Raises ``HostPortConflict`` when two mappings (of one owner or two) share a host port.

    A mapping on every address (hostIP "") conflicts with one on a single address too.
    """
    seen: dict[tuple[str, str, int], str] = {}
    for owner, mappings in by_owner.items():
        for mapping in mappings:
            clashes = [key for key in seen if key[0] == mapping.protocol
                       and key[2] == mapping.host_port
                       and (mapping.host_ip == "" or key[1] in ("", mapping.host_ip))]
            if clashes:
                other = seen[clashes[0]]
                held = f"pod {other}" if other and other != owner else "another port of this pod"
                where = mapping.host_ip or "*"
                raise HostPortConflict(
                    f"host port {where}:{mapping.host_port}/{mapping.protocol} is already "
                    f"used by {held}"
                )
            seen[mapping.key] = owner


def check_reserved(mappings: Iterable[HostPort], reserved: Mapping[int, str]) -> None:
    """Raises ``HostPortReserved`` for a TCP mapping on a port of ``reserved`` (port → what
    listens there, e.g. ``{10250: "the kubelet"}``)."""
    for mapping in mappings:
        owner = reserved.get(mapping.host_port)
        if owner is not None and mapping.protocol == "TCP":
            raise HostPortReserved(
                f"hostPort {mapping.host_port}/TCP is reserved on this node: {owner} listens on it"
            )
