"""What the proxy knows: Services and EndpointSlices, read into small immutable values.

``service_ports(service)`` turns one Service into a ``ServicePort`` per port — the unit the
rules are made of — or none at all for Services that get no rules: ``ExternalName`` and
headless Services (DNS only), Services without a usable IPv4 ClusterIP, and Services the
cluster DNS answers on the node itself (annotation ``k3py.io/node-local: "true"``, the
``kube-dns`` Service: packets for its address must reach the node's own listener untouched).

``EndpointsCache`` merges the EndpointSlices of each Service (by the
``kubernetes.io/service-name`` label, as upstream; Endpoints objects are not read) into the
endpoints of each of its ports. ``categorize`` then picks the endpoints a port's traffic may go
to, exactly as kube-proxy's ``CategorizeEndpoints``: Ready endpoints, or — only when none is
Ready — the ones that are Serving and Terminating; the same separately for the endpoints on
this node (traffic policy ``Local``). Topology hints are not read (every endpoint is in
play), which is what upstream does for Services without ``trafficDistribution``.

Everything here is pure and cheap to call from a worker thread; nothing refers back to the
API objects once read.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NODE_LOCAL_ANNOTATION = "k3py.io/node-local"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_AFFINITY_SECONDS = 10800
MAX_AFFINITY_SECONDS = 86400

Obj = Mapping[str, Any]


@dataclass(frozen=True, order=True, slots=True)
class ServicePortName:
    """Which port of which Service: what rules, sets and endpoints are keyed by."""

    namespace: str
    name: str
    port: str  # the port's name ("" for a Service's only, unnamed port)
    protocol: str  # TCP, UDP or SCTP

    @property
    def service(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}" if self.port else f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Service, with everything that decides its rules."""

    name: ServicePortName
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    affinity_seconds: int = 0  # sessionAffinity ClientIP's timeout; 0 without affinity
    external_policy_local: bool = False
    internal_policy_local: bool = False
    health_check_node_port: int = 0
    # Ordering among Services claiming the same address and port (externalIPs, the node
    # addresses ServiceLB hands out): the older Service keeps it, as with hostPorts.
    rank: tuple[str, str] = ("", "")

    @property
    def protocol(self) -> str:
        return self.name.protocol

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Some traffic of this port goes to endpoints anywhere in the cluster: internal traffic
        under policy Cluster, and external traffic under either policy (with ``Local``, pods and
        the node itself still reach every endpoint — upstream's short-circuit)."""
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        """Some traffic of this port goes only to endpoints on this node."""
        return self.internal_policy_local or (self.externally_accessible and self.external_policy_local)


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    """``ip:port`` of one endpoint of a Service port, with its EndpointSlice conditions."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Categorized:
    """Where a Service port's traffic may go from this node (see ``categorize``)."""

    cluster: tuple[Endpoint, ...] = ()
    local: tuple[Endpoint, ...] = ()
    has_any: bool = False  # usable endpoints exist somewhere in the cluster

    @property
    def reachable(self) -> tuple[Endpoint, ...]:
        """Every endpoint some rule may send to (cluster and local ones, once each)."""
        seen = dict.fromkeys(self.cluster)
        seen.update(dict.fromkeys(self.local))
        return tuple(sorted(seen))


def _ipv4(text: Any) -> str | None:
    """``text`` as a canonical dotted-quad IPv4 address; None for anything else (IPv6, names,
    shorthand forms, 0.0.0.0). ``inet_pton`` is strict and far cheaper than ``ipaddress``."""
    if not isinstance(text, str):
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None
    return None if packed == b"\0\0\0\0" else socket.inet_ntoa(packed)


def _port_number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536 else 0


def service_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def service_ports(service: Obj) -> list[ServicePort]:
    """The ports of ``service`` that get rules (see the module docstring)."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    if (meta.get("annotations") or {}).get(NODE_LOCAL_ANNOTATION) == "true":
        return []
    if (spec.get("type") or "ClusterIP") == "ExternalName":
        return []
    cluster_ip = _ipv4(spec.get("clusterIP"))
    if cluster_ip is None:  # headless ("None"), unallocated, or IPv6: nothing to capture
        return []
    namespace, name = service_key(service)
    service_type = spec.get("type") or "ClusterIP"
    external_ips = tuple(sorted({ip for ip in map(_ipv4, spec.get("externalIPs") or ()) if ip}))
    lb_ips: tuple[str, ...] = ()
    if service_type == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        lb_ips = tuple(sorted({
            ip for ip in (_ipv4(entry.get("ip")) for entry in ingress if isinstance(entry, Mapping)) if ip
        }))  # fmt: skip
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        timeout = config.get("timeoutSeconds")
        valid = isinstance(timeout, int) and not isinstance(timeout, bool) and 0 < timeout <= MAX_AFFINITY_SECONDS
        affinity = timeout if valid else DEFAULT_AFFINITY_SECONDS
    external_local = spec.get("externalTrafficPolicy") == "Local" and service_type in ("NodePort", "LoadBalancer")
    health_port = _port_number(spec.get("healthCheckNodePort")) if external_local and service_type == "LoadBalancer" else 0
    rank = (str(meta.get("creationTimestamp") or ""), f"{namespace}/{name}")
    found: list[ServicePort] = []
    for entry in spec.get("ports") or ():
        if not isinstance(entry, Mapping):
            continue
        protocol = entry.get("protocol") or "TCP"
        port = _port_number(entry.get("port"))
        if protocol not in PROTOCOLS or not port:
            continue
        node_port = _port_number(entry.get("nodePort")) if service_type in ("NodePort", "LoadBalancer") else 0
        found.append(ServicePort(
            name=ServicePortName(namespace, name, str(entry.get("name") or ""), protocol),
            cluster_ip=cluster_ip, port=port, node_port=node_port, external_ips=external_ips,
            load_balancer_ips=lb_ips, affinity_seconds=affinity,
            external_policy_local=external_local,
            internal_policy_local=spec.get("internalTrafficPolicy") == "Local",
            health_check_node_port=health_port, rank=rank,
        ))  # fmt: skip
    return found


@dataclass(frozen=True)
class SliceInfo:
    """One EndpointSlice, read: its Service and, per (port name, protocol), the endpoints."""

    service: tuple[str, str]
    ports: Mapping[tuple[str, str], tuple[Endpoint, ...]]


def _condition(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    value = conditions.get(name)
    return default if value is None else bool(value)


def read_slice(obj: Obj) -> SliceInfo | None:
    """An EndpointSlice as ``SliceInfo``; None for slices the proxy ignores (no Service label,
    not IPv4)."""
    meta = obj.get("metadata") or {}
    service_name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service_name or obj.get("addressType") != "IPv4":
        return None
    endpoints: list[tuple[str, bool, bool, bool, str]] = []
    for entry in obj.get("endpoints") or ():
        if not isinstance(entry, Mapping):
            continue
        addresses = entry.get("addresses") or ()
        ip = _ipv4(addresses[0]) if addresses else None  # upstream uses the first address
        if ip is None:
            continue
        conditions = entry.get("conditions") or {}
        ready = _condition(conditions, "ready", True)
        serving = _condition(conditions, "serving", ready)
        terminating = _condition(conditions, "terminating", False)
        endpoints.append((ip, ready, serving, terminating, str(entry.get("nodeName") or "")))
    ports: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
    for port in obj.get("ports") or ():
        if not isinstance(port, Mapping):
            continue
        number = _port_number(port.get("port"))
        protocol = port.get("protocol") or "TCP"
        if not number or protocol not in PROTOCOLS:
            continue
        ports[(str(port.get("name") or ""), protocol)] = tuple(
            Endpoint(ip, number, ready, serving, terminating, node) for ip, ready, serving, terminating, node in endpoints
        )
    return SliceInfo(service=(str(meta.get("namespace") or ""), str(service_name)), ports=ports)


def _preference(endpoint: Endpoint) -> tuple[bool, bool]:
    return (endpoint.ready, endpoint.serving)


@dataclass
class EndpointsCache:
    """EndpointSlices by name, and which belong to each Service."""

    slices: dict[tuple[str, str], SliceInfo] = field(default_factory=dict)
    by_service: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)

    def update(self, key: tuple[str, str], info: SliceInfo | None) -> set[tuple[str, str]]:
        """Stores (or, for None, forgets) the slice ``key``; returns the Services it touches."""
        touched: set[tuple[str, str]] = set()
        old = self.slices.pop(key, None)
        if old is not None:
            touched.add(old.service)
            owners = self.by_service.get(old.service)
            if owners is not None:
                owners.discard(key)
                if not owners:
                    del self.by_service[old.service]
        if info is not None:
            self.slices[key] = info
            self.by_service.setdefault(info.service, set()).add(key)
            touched.add(info.service)
        return touched

    def endpoints(self, name: ServicePortName) -> tuple[Endpoint, ...]:
        """The endpoints of one Service port over all its slices; an address listed twice keeps
        its best conditions (ready over serving over neither)."""
        best: dict[tuple[str, int], Endpoint] = {}
        for key in self.by_service.get(name.service, ()):
            for endpoint in self.slices[key].ports.get((name.port, name.protocol), ()):
                current = best.get((endpoint.ip, endpoint.port))
                if current is None or _preference(endpoint) > _preference(current):
                    best[(endpoint.ip, endpoint.port)] = endpoint
        return tuple(sorted(best.values()))


def categorize(port: ServicePort, endpoints: Iterable[Endpoint], node_name: str) -> Categorized:
    """Upstream's ``CategorizeEndpoints`` (without topology): see the module docstring."""
    endpoints = tuple(endpoints)
    if not endpoints:
        return Categorized()
    cluster: tuple[Endpoint, ...] = ()
    has_any = False
    if port.uses_cluster_endpoints:
        cluster = tuple(e for e in endpoints if e.ready)
        if not cluster:
            cluster = tuple(e for e in endpoints if e.serving and e.terminating)
        has_any = bool(cluster)
    local: tuple[Endpoint, ...] = ()
    if port.uses_local_endpoints:
        has_any = has_any or any(e.ready or (e.serving and e.terminating) for e in endpoints)
        local = tuple(e for e in endpoints if e.node_name == node_name and e.ready)
        if not local:
            local = tuple(e for e in endpoints if e.node_name == node_name and e.serving and e.terminating)
    return Categorized(cluster=cluster, local=local, has_any=has_any)
