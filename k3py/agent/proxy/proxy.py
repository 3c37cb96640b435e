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
import logging
import subprocess
import time
from typing import Any

from k3py.agent.proxy.config import ProxyConfig
from k3py.agent.proxy.healthcheck import HealthCheckServers
from k3py.agent.proxy.model import service_key
from k3py.agent.proxy.netlink import NftNetlink
from k3py.agent.proxy.state import ProxyState, SyncReport
from k3py.client.informer import Informer, object_key
from k3py.client.interface import ENDPOINTSLICES, SERVICES, Client

log = logging.getLogger("k3py.agent.proxy")

SERVICE_ROUTE_PROTOCOL = 244  # next to the pod network's 242 (peers) and 243 (pods)
RETRY_MIN, RETRY_MAX = 0.5, 30.0
VERIFY_PERIOD = 30.0


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
