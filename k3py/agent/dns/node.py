"""One node's cluster DNS: records fed from informers, the resolver, the forwarder, the
listeners, and the node-local address they listen on.

``ClusterDNS.start`` starts the informers and waits (at most ``sync_timeout``) for their first
list, puts the cluster DNS address on the ``k3py-dns`` interface, and binds UDP and TCP port
53 there; ``stop`` closes the listeners, stops the informers and removes the interface. With
``interface=""`` no interface is touched and the listeners bind to an address that already
exists (tests and benchmarks bind to loopback with ``port=0``).

The upstream servers come from the node's resolv.conf (``resolvconf.choose_resolv_conf``),
read again when the file changes (checked at most every few seconds, off the loop), unless
``upstreams`` names them (``"address"`` or ``"address:port"``; tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from k3py.agent.dns.feed import RecordFeed
from k3py.agent.dns.forwarder import Forwarder, Server
from k3py.agent.dns.interface import DNS_INTERFACE, ensure_dns_interface, remove_dns_interface
from k3py.agent.dns.records import ClusterRecords
from k3py.agent.dns.resolvconf import choose_resolv_conf, read_resolv_conf, upstream_servers
from k3py.agent.dns.resolver import Resolver
from k3py.agent.dns.server import DNSServer
from k3py.agent.dns.wire import QueryProcessor
from k3py.client.interface import Client

log = logging.getLogger("k3py.agent.dns")

DEFAULT_CLUSTER_DNS = "10.43.0.10"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
RESOLV_CONF_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class ClusterDNSConfig:
    address: str = DEFAULT_CLUSTER_DNS
    domain: str = DEFAULT_CLUSTER_DOMAIN
    resolv_conf: str = ""  # --resolv-conf; empty: chosen as k3s does
    port: int = 53
    interface: str = DNS_INTERFACE  # "": bind to an existing address, touch no interface
    upstreams: tuple[str, ...] | None = None  # None: from resolv.conf
    sync_timeout: float = 10.0


def parse_server(text: str, default_port: int = 53) -> Server:
    """``"10.0.0.2"``, ``"10.0.0.2:5353"``, ``"[fd00::2]:5353"`` → (address, port)."""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        return address, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        address, port = text.split(":")
        return address, int(port)
    return text, default_port


class _ResolvConfUpstreams:
    """The forwarder's servers from a resolv.conf, re-read (in a thread) when it changes."""

    def __init__(self, path: Path, own: tuple[str, ...]) -> None:
        self.path = path
        self.own = own
        self.servers: list[Server] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._refreshing = False

    def load(self) -> None:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return
        self._stamp = stamp
        servers = [(address, 53) for address in upstream_servers(read_resolv_conf(self.path), self.own)]
        if servers != self.servers:
            log.info("cluster DNS forwards to %s (from %s)", ", ".join(a for a, _ in servers) or "nothing", self.path)
        self.servers = servers

    def __call__(self) -> list[Server]:
        now = time.monotonic()
        if now - self._checked > RESOLV_CONF_CHECK_SECONDS and not self._refreshing:
            self._checked = now
            self._refreshing = True
            task = asyncio.get_running_loop().run_in_executor(None, self.load)
            task.add_done_callback(lambda _f: setattr(self, "_refreshing", False))
        return self.servers


class ClusterDNS:
    def __init__(self, client: Client, config: ClusterDNSConfig) -> None:
        self.config = config
        self.records = ClusterRecords(config.domain)
        self.feed = RecordFeed(client, self.records)
        self._upstreams: _ResolvConfUpstreams | None = None
        if config.upstreams is not None:
            servers: list[Server] | _ResolvConfUpstreams = [parse_server(s) for s in config.upstreams]
        else:
            self._upstreams = _ResolvConfUpstreams(choose_resolv_conf(config.resolv_conf), (config.address,))
            servers = self._upstreams
        self.forwarder = Forwarder(servers)
        self.resolver = Resolver(self.records, self.forwarder, [config.address])
        self.processor = QueryProcessor(self.resolver, self.records)
        self.server = DNSServer(self.processor, config.address, config.port)
        self._feed_task: asyncio.Task[None] | None = None
        self._interface_made = False

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        config = self.config
        if self._upstreams is not None:
            await asyncio.to_thread(self._upstreams.load)
        self._feed_task = asyncio.create_task(self.feed.run(), name="cluster-dns-records")
        try:
            await asyncio.wait_for(self.feed.ready.wait(), config.sync_timeout)
        except TimeoutError:
            log.warning("cluster DNS starts before its records are complete (no first list in %.0fs)",
                        config.sync_timeout)
        try:
            if config.interface:
                await asyncio.to_thread(ensure_dns_interface, config.interface, config.address)
                self._interface_made = True
            await self.server.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.server.stop()
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
            self._feed_task = None
        if self._interface_made:
            self._interface_made = False
            try:
                await asyncio.to_thread(remove_dns_interface, self.config.interface)
            except Exception as e:  # the node is going away: say so, do not fail the stop
                log.warning("cannot remove the DNS interface %s: %s", self.config.interface, e)
