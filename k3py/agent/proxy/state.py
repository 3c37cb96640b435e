"""``ProxyState``: the proxy's worker-thread side — model in, kernel out.

``sync(services, slices)`` takes the Services and EndpointSlices that changed (None: deleted),
reads them into the model (``model``), renders the Service ports they touch (``ruleset``),
has the ``RulesetSyncer`` apply the difference, then deletes the UDP flows the change left
stale (``conntrack``). It keeps, per Service port, what it last rendered from, so an update
that changes nothing the rules depend on costs a comparison, and indexes ports by Service and
healthCheckNodePort counts per port, so one change never walks every port. Used by one thread
at a time (the proxy's syncs run one after the other); nothing here touches the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.agent.proxy import conntrack
from k3py.agent.proxy.config import ProxyConfig
from k3py.agent.proxy.model import (
    Categorized,
    EndpointsCache,
    ServicePort,
    ServicePortName,
    categorize,
    read_slice,
    service_ports,
)
from k3py.agent.proxy.netlink import NftNetlink
from k3py.agent.proxy.ruleset import render_node, render_service_port
from k3py.agent.proxy.syncer import RulesetSyncer, SyncStats

NODE_GROUP = ""


@dataclass
class _PortState:
    port: ServicePort
    endpoints: Categorized


@dataclass
class SyncReport:
    stats: SyncStats
    ports: int
    health: dict[int, tuple[tuple[str, str], int]] = field(default_factory=dict)
    flows_deleted: int = 0


class ProxyState:
    """The worker thread's side: model, rendered groups, syncer. Used by one thread at a time."""

    def __init__(self, config: ProxyConfig, syncer: RulesetSyncer | None = None) -> None:
        self.config = config
        self.context = config.context()
        comment = f"k3py service proxy of node {config.node_name} ({Path(config.data_dir).resolve()})"
        self.syncer = syncer or RulesetSyncer(self.context.table, comment)
        self.endpoints = EndpointsCache()
        self.services: dict[tuple[str, str], list[ServicePort]] = {}
        self.ports: dict[ServicePortName, _PortState] = {}
        self._ports_of: dict[tuple[str, str], set[ServicePortName]] = {}
        # Ports with a healthCheckNodePort: → (that port, the Service, local ready endpoints).
        self._health: dict[ServicePortName, tuple[int, tuple[str, str], int]] = {}
        self.conntrack = conntrack.ConntrackCleaner()
        self._node_rendered = False

    def sync(self, services: Mapping[tuple[str, str], Any], slices: Mapping[tuple[str, str], Any]) -> SyncReport:
        touched: set[tuple[str, str]] = set()
        for key, obj in services.items():
            if obj is None:
                self.services.pop(key, None)
            else:
                self.services[key] = service_ports(obj)
            touched.add(key)
        for key, obj in slices.items():
            touched |= self.endpoints.update(key, read_slice(obj) if obj is not None else None)
        changes: dict[Any, Any] = {}
        if not self._node_rendered:
            changes[NODE_GROUP] = (render_node(self.context), (0, ("", "")))
            self._node_rendered = True
        flows: list[conntrack.FlowFilter] = []
        for service in touched:
            current = {port.name: port for port in self.services.get(service, ())}
            for name in self._ports_of.pop(service, set()) - set(current):
                gone = self.ports.pop(name)
                self._health.pop(name, None)
                flows += conntrack.stale_flows(gone.port, gone.endpoints, None)
                changes[name] = (None, (1, gone.port.rank))
            if current:
                self._ports_of[service] = set(current)
            for name, port in current.items():
                endpoints = categorize(port, self.endpoints.endpoints(name), self.config.node_name)
                old = self.ports.get(name)
                if old is not None and old.port == port and old.endpoints == endpoints:
                    continue
                if old is not None:
                    flows += conntrack.stale_flows(port, old.endpoints, endpoints)
                self.ports[name] = _PortState(port, endpoints)
                if port.health_check_node_port:
                    local = len({e.ip for e in endpoints.local if e.ready})
                    self._health[name] = (port.health_check_node_port, name.service, local)
                else:
                    self._health.pop(name, None)
                changes[name] = (render_service_port(self.context, port, endpoints), (1, port.rank))
        stats = self.syncer.sync(changes)
        report = SyncReport(stats=stats, ports=len(self.ports), health=self.health())
        report.flows_deleted = self.conntrack.delete(flows)
        return report

    def health(self) -> dict[int, tuple[tuple[str, str], int]]:
        """``{healthCheckNodePort: (Service, local ready endpoints)}`` (the most over its ports)."""
        found: dict[int, tuple[tuple[str, str], int]] = {}
        for health_port, service, count in self._health.values():
            _service, known = found.get(health_port, (service, 0))
            found[health_port] = (service, max(known, count))
        return found

    def verify(self) -> bool:
        """False (and the next sync rebuilds) when the table went missing behind our back."""
        with NftNetlink() as sock:
            if sock.table_exists(self.context.table):
                return True
        self.syncer.reset()
        return False

    def close(self) -> None:
        self.syncer.close()
