"""The service proxy's settings, and the name of its nftables table.

One table per agent, named after the agent's data dir (``k3py-proxy-<12 hex of its
sha256>``), so several k3py instances sharing a network namespace never touch each other's
tables; ``ProxyConfig.context()`` is what the rules are rendered from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from k3py.agent.proxy.ruleset import NodeContext

TABLE_PREFIX = "k3py-proxy-"


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
