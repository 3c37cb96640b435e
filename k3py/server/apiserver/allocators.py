"""Service ClusterIP and NodePort allocation, without duplicates.

Addresses come from the service CIDR 10.43.0.0/16 (10.43.0.1 is the ``kubernetes`` Service's);
node ports from 30000-32767. What is in use is read from the Services in the watch cache plus
this process's reservations that the cache has not caught up with yet, so two concurrent
creates never get the same address: allocation is synchronous on the event loop (no await
between choosing and reserving). A reservation lives until the cache has applied the write
that stored it (or the write failed).

As upstream, dynamically chosen addresses come from above a small "static band" at the start
of the range that is left for Services asking for a fixed address (cluster DNS uses 10.43.0.10).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from k3py.api import errors
from k3py.api.meta import section
from k3py.api.resources import ResourceInfo

if TYPE_CHECKING:
    from k3py.server.apiserver.registry import Registry

SERVICE_CIDR = ipaddress.ip_network("10.43.0.0/16")
KUBERNETES_SERVICE_IP = "10.43.0.1"
NODE_PORT_RANGE = (30000, 32767)
STATIC_BAND = 256


class _Reservation:
    def __init__(self, ips: set[str], ports: set[int]) -> None:
        self.ips = ips
        self.ports = ports
        self.revision: int | None = None  # set once the store write that keeps it succeeded


def _service_ips(svc: dict[str, Any]) -> set[str]:
    spec = svc.get("spec") or {}
    ips = set(spec.get("clusterIPs") or ())
    if spec.get("clusterIP"):
        ips.add(spec["clusterIP"])
    ips.discard("None")
    ips.discard("")
    return ips


def _service_ports(svc: dict[str, Any]) -> set[int]:
    spec = svc.get("spec") or {}
    ports = {p.get("nodePort") for p in spec.get("ports") or () if isinstance(p, dict)}
    if spec.get("healthCheckNodePort"):
        ports.add(spec["healthCheckNodePort"])
    return {p for p in ports if isinstance(p, int) and p}


class ServiceAllocator:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._reservations: list[_Reservation] = []

    def _in_use(self, exclude_key: str | None) -> tuple[set[str], set[int]]:
        from k3py.server.apiserver.registry import storage_prefix

        info = self.registry.table.lookup("", "v1", "services")
        assert info is not None
        ips: set[str] = set()
        ports: set[int] = set()
        for key, svc in self.registry.cache.cache(storage_prefix(info)).objects.items():
            if key == exclude_key:
                continue
            ips |= _service_ips(svc)
            ports |= _service_ports(svc)
        cache_revision = self.registry.cache.revision
        self._reservations = [
            r for r in self._reservations if r.revision is None or r.revision > cache_revision
        ]
        for r in self._reservations:
            ips |= r.ips
            ports |= r.ports
        return ips, ports

    async def allocate(
        self, info: ResourceInfo, new: dict[str, Any], old: dict[str, Any] | None, dry_run: bool
    ) -> Callable[[], None]:
        """Fill in the Service's ClusterIP and node ports; returns the undo for a failed write."""
        if not (info.group == "" and info.kind == "Service"):
            return _nothing
        from k3py.server.apiserver.registry import object_key

        meta = new["metadata"]
        key = object_key(info, meta.get("namespace", ""), meta.get("name", ""))
        used_ips, used_ports = self._in_use(key)
        spec = section(new, "spec")
        svc_type = spec.get("type") or "ClusterIP"
        name = meta.get("name", "")
        causes: list[dict[str, Any]] = []
        new_ips: set[str] = set()
        new_ports: set[int] = set()

        old_spec = (old or {}).get("spec") or {}
        if svc_type == "ExternalName":
            if not old_spec.get("clusterIP"):
                spec.pop("clusterIP", None)
        else:
            wanted = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
            if not wanted and old_spec.get("clusterIP"):
                wanted = old_spec["clusterIP"]
                spec["clusterIP"] = wanted
            if wanted == "None":
                spec["clusterIP"] = "None"
                spec["clusterIPs"] = ["None"]
            elif wanted:
                if old_spec.get("clusterIP") != wanted:
                    problem = self._check_ip(wanted, used_ips)
                    if problem:
                        causes.append({"field": "spec.clusterIPs", "reason": "FieldValueInvalid", "message": f'Invalid value: ["{wanted}"]: {problem}'})
                    new_ips.add(wanted)
                spec["clusterIP"] = wanted
                spec["clusterIPs"] = [wanted]
            else:
                ip = self._free_ip(used_ips)
                if ip is None:
                    raise errors.internal("failed to allocate a serviceIP: range is full")
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
                new_ips.add(ip)
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")

        needs_node_ports = svc_type in ("NodePort", "LoadBalancer")
        old_ports = _service_ports(old) if old else set()
        taken = set(used_ports)
        # A number one port of this Service holds may serve its other protocol too (upstream
        # allows TCP and UDP on one nodePort of one Service).
        mine: dict[int, set[str]] = {}
        for i, port in enumerate(spec.get("ports") or ()):
            if not isinstance(port, dict):
                continue
            node_port = port.get("nodePort")
            if not needs_node_ports:
                if node_port and svc_type in ("ClusterIP", "ExternalName"):
                    port.pop("nodePort", None)
                continue
            protocol = port.get("protocol") or "TCP"
            if node_port:
                shared = protocol not in mine.get(node_port, {protocol})
                if not isinstance(node_port, int) or not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]:
                    causes.append({"field": f"spec.ports[{i}].nodePort", "reason": "FieldValueInvalid", "message": f"Invalid value: {node_port}: provided port is not in the valid range. The range of valid ports is {NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}"})
                elif node_port in taken and node_port not in old_ports and not shared:
                    causes.append({"field": f"spec.ports[{i}].nodePort", "reason": "FieldValueInvalid", "message": f"Invalid value: {node_port}: provided port is already allocated"})
                taken.add(node_port)
                if isinstance(node_port, int):
                    mine.setdefault(node_port, set()).add(protocol)
                if node_port not in old_ports:
                    new_ports.add(node_port)
                continue
            free = self._free_port(taken)
            if free is None:
                raise errors.internal("failed to allocate a nodePort: range is full")
            port["nodePort"] = free
            taken.add(free)
            mine.setdefault(free, set()).add(protocol)
            new_ports.add(free)
        # healthCheckNodePort: allocated for LoadBalancers with externalTrafficPolicy Local (the
        # service proxy answers on it), released when the Service stops being one.
        if svc_type == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
            health = spec.get("healthCheckNodePort")
            if health:
                if not isinstance(health, int) or not NODE_PORT_RANGE[0] <= health <= NODE_PORT_RANGE[1]:
                    causes.append({"field": "spec.healthCheckNodePort", "reason": "FieldValueInvalid", "message": f"Invalid value: {health}: provided port is not in the valid range. The range of valid ports is {NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}"})
                elif health in taken and health not in old_ports:
                    causes.append({"field": "spec.healthCheckNodePort", "reason": "FieldValueInvalid", "message": f"Invalid value: {health}: provided port is already allocated"})
                elif health not in old_ports:
                    new_ports.add(health)
            else:
                free = self._free_port(taken)
                if free is None:
                    raise errors.internal("failed to allocate a nodePort: range is full")
                spec["healthCheckNodePort"] = free
                new_ports.add(free)
        else:
            spec.pop("healthCheckNodePort", None)
        if causes:
            raise errors.invalid("Service", name, causes)
        if dry_run or (not new_ips and not new_ports):
            return _nothing
        reservation = _Reservation(new_ips, new_ports)
        self._reservations.append(reservation)

        def release() -> None:
            if reservation in self._reservations:
                self._reservations.remove(reservation)

        release.reservation = reservation  # type: ignore[attr-defined]
        return release

    def committed(self, release: Callable[[], None], revision: int) -> None:
        reservation = getattr(release, "reservation", None)
        if reservation is not None:
            reservation.revision = revision

    def released(self, obj: dict[str, Any]) -> None:
        """A Service was deleted: its addresses are free once the cache drops it (nothing to do)."""

    @staticmethod
    def _check_ip(ip: str, used: set[str]) -> str:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return "must be a valid IP address"
        if addr not in SERVICE_CIDR or addr in (SERVICE_CIDR.network_address, SERVICE_CIDR.broadcast_address):
            return f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
        if ip in used:
            return f"failed to allocate IP {ip}: provided IP is already allocated"
        return ""

    @staticmethod
    def _free_ip(used: set[str]) -> str | None:
        base = int(SERVICE_CIDR.network_address)
        size = SERVICE_CIDR.num_addresses
        for _ in range(64):
            candidate = str(ipaddress.ip_address(base + random.randrange(STATIC_BAND, size - 1)))
            if candidate not in used:
                return candidate
        for offset in range(STATIC_BAND, size - 1):
            candidate = str(ipaddress.ip_address(base + offset))
            if candidate not in used:
                return candidate
        return None

    @staticmethod
    def _free_port(taken: set[int]) -> int | None:
        low, high = NODE_PORT_RANGE
        for _ in range(64):
            candidate = random.randint(low, high)
            if candidate not in taken:
                return candidate
        for candidate in range(low, high + 1):
            if candidate not in taken:
                return candidate
        return None


def _nothing() -> None:
    return None
