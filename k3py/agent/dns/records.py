"""The cluster's DNS data: every record the Kubernetes DNS specification asks for, kept as a
table that changes incrementally with Services, EndpointSlices and Namespaces.

Records are plain values (an address, a target name, a (port, target) pair) under lowercase,
absolute owner names. Each API object contributes a list of records (its *contribution*); when
the object changes, its old contribution is taken out and the new one put in, so the cost of
an update is the size of the object that changed — one EndpointSlice of a 10,000-endpoint
Service recomputes at most its own 100 endpoints. Several objects may contribute the same
record (one pod IP behind two Services gives two PTRs; the same address twice is one record
counted twice): values are reference-counted.

What each object contributes (``<base>`` = ``<service>.<ns>.svc.<zone>.``):

    Service, ClusterIP      <base> A/AAAA <cluster IP>, one per clusterIPs entry
                            PTR of each cluster IP -> <base>
                            _<port>._<proto>.<base> SRV <port> <base>   (named ports only)
                            <base> SRV <port> <base>                    (every port; CoreDNS's)
    Service, ExternalName   <base> CNAME <externalName>  (not for an IP address, as CoreDNS)
    Service, headless       nothing of its own: a headless Service with no ready endpoint
                            does not exist (NXDOMAIN, as the specification says)
    EndpointSlice           for each ready endpoint address, with <host> its ``hostname`` or
                            the address with dashes (10-42-0-5, as CoreDNS):
                            <host>.<base> A/AAAA <address>; PTR of the address -> <host>.<base>
                            and for a headless Service also <base> A/AAAA <address>,
                            _<port>._<proto>.<base> SRV <port> <host>.<base> (named ports),
                            <base> SRV <port> <host>.<base>

*Ready* is the endpoint's ``ready`` condition (unset counts as ready), or any endpoint when the
Service carries ``service.alpha.kubernetes.io/tolerate-unready-endpoints: "true"``
(``publishNotReadyAddresses`` already makes the EndpointSlice controller mark them ready).

Existence. A name under the zone exists when it owns a record or has a descendant that does
(an *empty non-terminal*, such as ``_tcp.<base>`` or ``<ns>.svc.<zone>`` of a namespace with
Services): ``_names`` counts records at or below each name. The resolver answers NODATA for a
name that exists without the asked type and NXDOMAIN for one that does not (RFC 8020).
Namespaces are tracked on their own: ``<ns>.svc.<zone>`` and ``<ns>.pod.<zone>`` exist for
every namespace, as in CoreDNS. Reverse names (PTR owners) live outside the zone and are
looked up, not counted.

``generation`` grows with every change that alters an answer; the wire layer's response cache
keys its entries on it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

# Record types (the DNS numbers, so the resolver needs no mapping).
A, CNAME, PTR, TXT, AAAA, SRV = 1, 5, 12, 16, 28, 33

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TOLERATE_UNREADY = "service.alpha.kubernetes.io/tolerate-unready-endpoints"

Record = tuple[str, int, Any]  # (owner name, type, value)


def reverse_name(address: str) -> str:
    """``5.0.42.10.in-addr.arpa.`` for 10.42.0.5; the nibble form for IPv6."""
    return ipaddress.ip_address(address).reverse_pointer + "."


def dashed(address: str) -> str:
    """An endpoint's default hostname: its address with dashes (CoreDNS's choice)."""
    if ":" in address:
        text = address.replace(":", "-")
        return text + "0" if text.endswith("-") else text
    return address.replace(".", "-")


def _address(text: Any) -> tuple[str, int] | None:
    """``(canonical address, A|AAAA)``, or None for anything that is not an IP address."""
    try:
        address = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    return str(address), (A if address.version == 4 else AAAA)


def _absolute(name: str) -> str | None:
    """A DNS name as an absolute lowercase owner/target, or None when it cannot be one."""
    name = name.strip().lower().removesuffix(".")
    if not name or len(name) > 253 or any(not 0 < len(label) <= 63 for label in name.split(".")):
        return None
    if any(c.isspace() or c == "\\" for c in name):
        return None
    return name + "."


@dataclass(frozen=True)
class ServiceFacts:
    """What DNS needs of one Service."""

    namespace: str
    name: str
    kind: str  # "cluster-ip", "headless", "external-name" or "" (no address, no records)
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, port), lowercase
    external_name: str = ""
    tolerate_unready: bool = False

    @property
    def base(self) -> str:
        return f"{self.name}.{self.namespace}.svc."

    @classmethod
    def of(cls, obj: Obj) -> ServiceFacts:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        ports = tuple(
            (str(p.get("name") or "").lower(), str(p.get("protocol") or "TCP").lower(), int(p["port"]))
            for p in spec.get("ports") or () if isinstance(p, dict) and isinstance(p.get("port"), int)
        )
        tolerate = str((meta.get("annotations") or {}).get(TOLERATE_UNREADY, "")).lower() == "true"
        common = {"namespace": str(meta.get("namespace") or "").lower(), "name": str(meta.get("name") or "").lower(),
                  "ports": ports, "tolerate_unready": tolerate}
        if spec.get("type") == "ExternalName":
            return cls(kind="external-name", external_name=str(spec.get("externalName") or ""), **common)
        cluster_ip = spec.get("clusterIP")
        if cluster_ip == "None":
            return cls(kind="headless", **common)
        if cluster_ip:
            ips = [ip for ip in spec.get("clusterIPs") or [cluster_ip] if ip and ip != "None"]
            return cls(kind="cluster-ip", cluster_ips=tuple(ips), **common)
        return cls(kind="", **common)


@dataclass(frozen=True)
class SliceFacts:
    """What DNS needs of one EndpointSlice."""

    service_key: str  # "<ns>/<service>"
    endpoints: tuple[tuple[tuple[str, ...], str, bool], ...]  # (addresses, hostname, ready)
    ports: tuple[tuple[str, str, int], ...]

    @classmethod
    def of(cls, obj: Obj) -> SliceFacts | None:
        meta = obj.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service or obj.get("addressType") not in ("IPv4", "IPv6"):
            return None
        endpoints = []
        for endpoint in obj.get("endpoints") or ():
            if not isinstance(endpoint, dict):
                continue
            ready = (endpoint.get("conditions") or {}).get("ready") is not False
            addresses = tuple(str(a) for a in endpoint.get("addresses") or ())
            endpoints.append((addresses, str(endpoint.get("hostname") or "").lower(), ready))
        ports = tuple(
            (str(p.get("name") or "").lower(), str(p.get("protocol") or "TCP").lower(), int(p["port"]))
            for p in obj.get("ports") or () if isinstance(p, dict) and isinstance(p.get("port"), int)
        )
        return cls(f"{str(meta.get('namespace') or '').lower()}/{str(service).lower()}", tuple(endpoints), ports)


def service_records(service: ServiceFacts, zone: str) -> list[Record]:
    base = service.base + zone
    records: list[Record] = []
    if service.kind == "external-name":
        target = _absolute(service.external_name)
        if target is not None and _address(target.removesuffix(".")) is None:
            records.append((base, CNAME, target))
    elif service.kind == "cluster-ip":
        for ip in service.cluster_ips:
            parsed = _address(ip)
            if parsed is None:
                continue
            records.append((base, parsed[1], parsed[0]))
            records.append((reverse_name(parsed[0]), PTR, base))
        for port_name, protocol, port in service.ports:
            if port_name:
                records.append((f"_{port_name}._{protocol}.{base}", SRV, (port, base)))
            records.append((base, SRV, (port, base)))
    return records


def slice_records(service: ServiceFacts, facts: SliceFacts, zone: str) -> list[Record]:
    if service.kind not in ("cluster-ip", "headless"):
        return []
    base = service.base + zone
    headless = service.kind == "headless"
    records: list[Record] = []
    for addresses, hostname, ready in facts.endpoints:
        if not ready and not service.tolerate_unready:
            continue
        for text in addresses:
            parsed = _address(text)
            if parsed is None:
                continue
            address, rtype = parsed
            host = f"{hostname or dashed(address)}.{base}"
            records.append((host, rtype, address))
            records.append((reverse_name(address), PTR, host))
            if headless:
                records.append((base, rtype, address))
                for port_name, protocol, port in facts.ports:
                    if port_name:
                        records.append((f"_{port_name}._{protocol}.{base}", SRV, (port, host)))
                    records.append((base, SRV, (port, host)))
    return records


class ClusterRecords:
    """The table; see the module docstring. Fed by ``k3py.agent.dns.feed``, read by the resolver."""

    def __init__(self, zone: str = "cluster.local") -> None:
        self.zone = zone.lower().strip(".") + "."
        self.generation = 0
        self.serial = int(time.time())
        self.synced = False  # set by the feed once every informer listed
        self.namespaces: set[str] = set()
        self._table: dict[str, dict[int, dict[Any, int]]] = {}
        self._names: dict[str, int] = {}
        self._contributions: dict[tuple[str, str], list[Record]] = {}
        self._services: dict[str, ServiceFacts] = {}
        self._slices: dict[str, SliceFacts] = {}
        self._slices_of: dict[str, set[str]] = {}

    # -- reads --------------------------------------------------------------------------

    def values(self, name: str, rtype: int) -> list[Any]:
        """The values of one RRset (in the order they came), empty when there is none."""
        types = self._table.get(name)
        if not types:
            return []
        return list(types.get(rtype, ()))

    def types(self, name: str) -> dict[int, dict[Any, int]]:
        return self._table.get(name) or {}

    def exists(self, name: str) -> bool:
        """Whether a name under the zone owns records or has descendants that do."""
        return name in self._names

    @property
    def services(self) -> int:
        return len(self._services)

    # -- writes -------------------------------------------------------------------------

    def _changed(self) -> None:
        self.generation += 1
        self.serial = max(self.serial + 1, int(time.time()))

    def set_namespace(self, name: str) -> None:
        if name not in self.namespaces:
            self.namespaces.add(name)
            self._changed()

    def remove_namespace(self, name: str) -> None:
        if name in self.namespaces:
            self.namespaces.discard(name)
            self._changed()

    def set_service(self, obj: Obj) -> None:
        facts = ServiceFacts.of(obj)
        key = f"{facts.namespace}/{facts.name}"
        if self._services.get(key) == facts:
            return
        self._services[key] = facts
        self._replace(("svc", key), service_records(facts, self.zone))
        for slice_key in self._slices_of.get(key, ()):
            self._replace(("slice", slice_key), slice_records(facts, self._slices[slice_key], self.zone))

    def remove_service(self, key: str) -> None:
        if self._services.pop(key, None) is None:
            return
        self._replace(("svc", key), [])
        for slice_key in self._slices_of.get(key, ()):
            self._replace(("slice", slice_key), [])

    def set_slice(self, key: str, obj: Obj) -> None:
        facts = SliceFacts.of(obj)
        if facts is None:
            self.remove_slice(key)
            return
        old = self._slices.get(key)
        if old == facts:
            return
        if old is not None and old.service_key != facts.service_key:
            self.remove_slice(key)
        self._slices[key] = facts
        self._slices_of.setdefault(facts.service_key, set()).add(key)
        service = self._services.get(facts.service_key)
        self._replace(("slice", key), slice_records(service, facts, self.zone) if service else [])

    def remove_slice(self, key: str) -> None:
        facts = self._slices.pop(key, None)
        if facts is None:
            return
        owners = self._slices_of.get(facts.service_key)
        if owners is not None:
            owners.discard(key)
            if not owners:
                del self._slices_of[facts.service_key]
        self._replace(("slice", key), [])

    def _replace(self, source: tuple[str, str], records: list[Record]) -> None:
        old = self._contributions.get(source, [])
        if old == records:
            return
        for record in old:
            self._remove(record)
        for record in records:
            self._add(record)
        if records:
            self._contributions[source] = records
        else:
            self._contributions.pop(source, None)
        self._changed()

    def _in_zone(self, name: str) -> bool:
        return name.endswith("." + self.zone)

    def _ancestry(self, name: str) -> Iterable[str]:
        """``name`` and its ancestors below the zone apex."""
        while name != self.zone and name.endswith(self.zone):
            yield name
            name = name.split(".", 1)[1]

    def _add(self, record: Record) -> None:
        name, rtype, value = record
        values = self._table.setdefault(name, {}).setdefault(rtype, {})
        values[value] = values.get(value, 0) + 1
        if self._in_zone(name):
            for owner in self._ancestry(name):
                self._names[owner] = self._names.get(owner, 0) + 1

    def _remove(self, record: Record) -> None:
        name, rtype, value = record
        types = self._table[name]
        values = types[rtype]
        if values[value] > 1:
            values[value] -= 1
        else:
            del values[value]
            if not values:
                del types[rtype]
                if not types:
                    del self._table[name]
        if self._in_zone(name):
            for owner in self._ancestry(name):
                if self._names[owner] > 1:
                    self._names[owner] -= 1
                else:
                    del self._names[owner]
