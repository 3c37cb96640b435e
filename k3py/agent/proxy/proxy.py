"""``ServiceProxy``: the node's service proxy task — informers in, nftables out.

On the event loop: informers on Services and EndpointSlices (shared with nothing else), whose
handlers only note which objects changed and wake the sync loop — nothing is parsed or
rendered there, so a flood of Service changes never holds the loop. The sync loop hands the
changed objects to a worker thread, which reads them into the model, renders the Service ports
they touch, has the ``RulesetSyncer`` apply the difference, and removes stale UDP flows; back
on the loop, the healthCheckNodePort servers get their new counts. Changes that arrive during
a sync are taken together by the next one. A failed sync is retried with back-off (from the
kernel's actual state: ``RulesetSyncer.reset``). Nothing is written before both informers have
listed, so a restart never programs a partial view.

The node's own connections: a locally generated packet is routed before the output hook's
DNAT, and the pod network's ``unreachable`` route for the service CIDR would refuse it on the
spot. The proxy therefore adds a route for the service CIDR over the pod bridge with a metric
just below that one (protocol ``SERVICE_ROUTE_PROTOCOL``, so it is recognisably ours); the
connection is then DNAT'd in the output hook and routed again to its endpoint, and a packet
for an address no Service has is rejected by the table (``filter-*-post``), so nothing still
leaves the host. Pods' packets are DNAT'd in prerouting, before routing, and never need it.

``remove_service_proxy`` deletes the table and the route — for a node that goes away for good;
a mere stop (or a crash) leaves both, and the next start reconciles the table in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.agent.proxy import conntrack
from k3py.agent.proxy.healthcheck import HealthCheckServers
from k3py.agent.proxy.model import (
    Categorized,
    EndpointsCache,
    ServicePort,
    ServicePortName,
    categorize,
    read_slice,
    service_key,
    service_ports,
)
from k3py.agent.proxy.netlink import NftNetlink
from k3py.agent.proxy.ruleset import NodeContext, render_node, render_service_port
from k3py.agent.proxy.syncer import RulesetSyncer, SyncStats
from k3py.client.informer import Informer, object_key
from k3py.client.interface import ENDPOINTSLICES, SERVICES, Client

log = logging.getLogger("k3py.agent.proxy")

SERVICE_ROUTE_PROTOCOL = 244  # next to the pod network's 242 (peers) and 243 (pods)
TABLE_PREFIX = "k3py-proxy-"
NODE_GROUP = ""
RETRY_MIN, RETRY_MAX = 0.5, 30.0
VERIFY_PERIOD = 30.0


def table_name(data_dir: Path) -> str:
    """The proxy's table for the agent with ``data_dir``: unique per data dir, so several k3py
    instances sharing a network namespace never touch each other's."""
    return TABLE_PREFIX + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ProxyConfig:
    node_name: str
    data_dir: Path  # the agent's (names the table)
    pod_cidr: str = ""
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    bridge: str = "k3py0"  # the service CIDR route goes over it ("" adds none)
    route_metric: int = 4241  # below the pod network's unreachable route (4242)
    reserved_tcp_ports: tuple[int, ...] = ()
    health_bind_address: str = "0.0.0.0"

    @property
    def table(self) -> str:
        return table_name(self.data_dir)

    def context(self) -> NodeContext:
        return NodeContext(
            table=self.table, node_name=self.node_name, cluster_cidr=self.cluster_cidr,
            service_cidr=self.service_cidr, pod_cidr=self.pod_cidr,
            reserved_tcp_ports=self.reserved_tcp_ports,
        )  # fmt: skip


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def ensure_service_route(config: ProxyConfig) -> None:
    if config.bridge:
        _ip("route", "replace", config.service_cidr, "dev", config.bridge, "metric", str(config.route_metric),
            "proto", str(SERVICE_ROUTE_PROTOCOL))


def remove_service_route(config: ProxyConfig) -> None:
    _ip("route", "del", config.service_cidr, "proto", str(SERVICE_ROUTE_PROTOCOL), "metric",
        str(config.route_metric), check=False)


def remove_service_proxy(config: ProxyConfig) -> bool:
    """Deletes the proxy's table and route (a node uninstalled); True if there was a table."""
    remove_service_route(config)
    with NftNetlink() as sock:
        return sock.delete_table(config.table)


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


class ServiceProxy:
    """See the module docstring. ``run()`` until cancelled."""

    def __init__(self, client: Client, config: ProxyConfig) -> None:
        self.client = client
        self.config = config
        self.state = ProxyState(config)
        self.services = Informer(client, SERVICES)
        self.slices = Informer(client, ENDPOINTSLICES)
        self.health = HealthCheckServers(config.health_bind_address)
        self._pending_services: dict[tuple[str, str], Any] = {}
        self._pending_slices: dict[tuple[str, str], Any] = {}
        self._wake = asyncio.Event()
        self.synced = asyncio.Event()  # the first sync is in the kernel
        self.last_report: SyncReport | None = None
        self.syncs = 0  # successful syncs so far
        self._synced_more = asyncio.Condition()
        self.services.add_handler(self._service, lambda _old, new: self._service(new), self._service_gone)
        self.slices.add_handler(self._slice, lambda _old, new: self._slice(new), self._slice_gone)

    # -- informer handlers: note and wake, nothing more -------------------------------------

    def _service(self, obj: dict[str, Any]) -> None:
        self._pending_services[service_key(obj)] = obj
        self._wake.set()

    def _service_gone(self, obj: dict[str, Any]) -> None:
        self._pending_services[service_key(obj)] = None
        self._wake.set()

    def _slice(self, obj: dict[str, Any]) -> None:
        self._pending_slices[_key(obj)] = obj
        self._wake.set()

    def _slice_gone(self, obj: dict[str, Any]) -> None:
        self._pending_slices[_key(obj)] = None
        self._wake.set()

    async def wait_syncs(self, count: int) -> None:
        """Until ``syncs`` reaches ``count`` (tests and benchmarks)."""
        async with self._synced_more:
            await self._synced_more.wait_for(lambda: self.syncs >= count)

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        informers = [asyncio.create_task(i.run(), name=f"proxy-{i.resource.plural}") for i in (self.services, self.slices)]
        try:
            try:
                await asyncio.to_thread(ensure_service_route, self.config)
            except (OSError, subprocess.SubprocessError) as exc:  # pods still get their Services
                log.error("service proxy: no route for the service CIDR, the node itself cannot reach "
                          "ClusterIPs: %s", getattr(exc, "stderr", "") or exc)
            await asyncio.gather(self.services.wait_synced(), self.slices.wait_synced())
            await self._sync_loop()
        finally:
            for task in informers:
                task.cancel()
            await asyncio.gather(*informers, return_exceptions=True)
            await self.health.close()
            await asyncio.to_thread(self.state.close)

    async def _sync_loop(self) -> None:
        delay = RETRY_MIN
        last_verify = time.monotonic()
        self._wake.set()
        while True:
            try:
                async with asyncio.timeout(VERIFY_PERIOD):
                    await self._wake.wait()
            except TimeoutError:
                if not await asyncio.to_thread(self.state.verify):
                    log.warning("service proxy: table %s went missing; rebuilding it", self.config.table)
                    self._wake.set()
                last_verify = time.monotonic()
                continue
            self._wake.clear()
            services, self._pending_services = self._pending_services, {}
            slices, self._pending_slices = self._pending_slices, {}
            try:
                report = await asyncio.to_thread(self.state.sync, services, slices)
            except Exception as exc:  # nft or netlink refused; the state is kept, retry
                log.error("service proxy: sync failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                self._wake.set()
                continue
            delay = RETRY_MIN
            self.syncs += 1
            self.last_report = report
            stats = report.stats
            if stats.full or stats.chains_added or stats.chains_removed or stats.seconds > 0.5:
                log.info(
                    "service proxy: %d service ports in %.3fs (+%d/-%d chains, +%d/-%d sets, %d element "
                    "messages%s)", report.ports, stats.seconds, stats.chains_added, stats.chains_removed,
                    stats.sets_added, stats.sets_removed, stats.element_messages, ", full" if stats.full else "",
                )  # fmt: skip
            await self.health.sync(report.health)
            self.synced.set()
            async with self._synced_more:
                self._synced_more.notify_all()
            if time.monotonic() - last_verify > VERIFY_PERIOD:
                last_verify = time.monotonic()
                if not await asyncio.to_thread(self.state.verify):
                    self._wake.set()


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    namespace, _, name = object_key(obj).rpartition("/")
    return (namespace, name)
