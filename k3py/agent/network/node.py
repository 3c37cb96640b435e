"""The node side of the pod network: bridge, safety routes, forwarding, NAT table, IPAM.

``NodeNetwork.start()`` brings the node to this state, idempotently (it runs at every agent
start and repairs whatever is missing):

- ``net.ipv4.ip_forward = 1``: pods reach the outside, and hostPorts the pods, through the
  node's routing;
- the bridge (``k3py0``, k3s calls its own ``cni0``) with a fixed MAC and the gateway address
  (first address of the node's pod CIDR) but no route for the whole /24: the node reaches its
  pods by one /32 route each (see ``routes``), rebuilt here from the pod records.
  ``route_localnet`` on the bridge lets a hostPort reached on 127.0.0.1 be forwarded — only
  once the table's rule against pods reaching the node's 127.0.0.0/8 is in place (upstream's
  CVE-2020-8558 fix, see ``nftables``);
- ``unreachable`` routes for the whole cluster CIDR and service CIDR with a high metric:
  the more specific routes (a /32 per local pod, a /24 per other node) win, and a packet for
  any other address of those ranges — a pod that does not exist — is refused at once
  (EHOSTUNREACH) instead of following the default route off the host or waiting for ARP;
- the node's table (see ``nftables``: NAT and the localnet rule), rebuilt from the pod records
  on disk.

Pod records (``<data_dir>/pods/<uid>.json``: IP, host veth, netns, hostPorts) are written by
``PodNetwork`` and are what makes state survive a restart of k3py: NAT rules are rebuilt from
them and a teardown after a restart still knows what to remove.

Everything runs in the calling thread's network namespace (see ``commands``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k3py.agent.network import commands, nftables, routes
from k3py.agent.network.config import NetworkError, NodeNetworkConfig
from k3py.agent.network.hostports import HostPort
from k3py.agent.network.ipam import HostLocalIPAM, check_owner
from k3py.util.private import private_dir


@dataclass(frozen=True)
class PodRecord:
    """What this node set up for one pod."""

    uid: str
    ip: str
    veth: str
    netns: str
    host_ports: tuple[HostPort, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "uid": self.uid,
                "ip": self.ip,
                "veth": self.veth,
                "netns": self.netns,
                "hostPorts": [mapping.to_dict() for mapping in self.host_ports],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> PodRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(
            uid=data["uid"],
            ip=data["ip"],
            veth=data["veth"],
            netns=data["netns"],
            host_ports=tuple(HostPort.from_dict(entry) for entry in data.get("hostPorts", ())),
        )


class NodeNetwork:
    """One node's bridge, IPAM, routes and NAT rules."""

    def __init__(self, config: NodeNetworkConfig) -> None:
        self.config = config
        private_dir(config.data_dir)
        self.ipam = HostLocalIPAM.for_subnet(config.data_dir, config.pod_network)
        self.records_dir = private_dir(config.data_dir / "pods")
        # Pod setups and teardowns of one node are serialised: each rewrites the NAT table
        # from the full set of records, and hostPort conflict checks need a stable view.
        self.lock = threading.RLock()

    # -- node life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Creates or repairs the node's network (see the module docstring)."""
        config = self.config
        bridge = config.bridge
        with self.lock:
            commands.write_sysctl(("net", "ipv4", "ip_forward"), "1")
            if not commands.link_exists(bridge):
                commands.ip("link", "add", "name", bridge, "type", "bridge")
            # A pod CIDR that changed since the last start leaves its old gateway address on
            # the bridge; only the current one may stay.
            wanted = f"{config.gateway}/{config.pod_network.prefixlen}"
            stale = [a for a in commands.ipv4_addresses(bridge) if a != wanted]
            commands.ip_batch(
                [
                    *(f"addr del {address} dev {bridge}" for address in stale),
                    f"link set dev {bridge} address {config.bridge_mac}",
                    f"addr replace {wanted} dev {bridge} noprefixroute",
                    f"link set dev {bridge} up",
                    f"route replace unreachable {config.cluster_network}"
                    f" metric {config.unreachable_metric}",
                    f"route replace unreachable {config.service_network}"
                    f" metric {config.unreachable_metric}",
                ]
            )
            # A bridge address once added with its prefix route keeps that route.
            commands.ip(
                "route", "del", str(config.pod_network), "dev", bridge, "proto", "kernel",
                check=False,
            )
            self.sync_pod_routes()
            # The table's localnet drop rule first: route_localnet without it lets pods reach
            # the node's 127.0.0.1-only services (CVE-2020-8558).
            self.sync_nat()
            commands.write_sysctl(("net", "ipv4", "conf", bridge, "route_localnet"), "1")

    def destroy(self) -> None:
        """Removes bridge, routes and NAT table (``k3py-killall``); keeps IPAM and records,
        so pods still running can be torn down later."""
        config = self.config
        with self.lock:
            nftables.delete_table(config)
            routes.sync_node_routes(config, {})
            for network in (config.cluster_network, config.service_network):
                commands.ip(
                    "route", "del", "unreachable", str(network),
                    "metric", str(config.unreachable_metric), check=False,
                )
            if commands.link_exists(config.bridge):
                commands.ip("link", "del", "dev", config.bridge)

    def sync_node_routes(self, peers: Mapping[str, str]) -> None:
        """Routes to other nodes' pods: ``{their pod CIDR: their address}`` (see ``routes``)."""
        with self.lock:
            routes.sync_node_routes(self.config, peers)

    def sync_pod_routes(self) -> None:
        """Makes the /32 routes of local pods exactly those of the pod records."""
        with self.lock:
            routes.sync_pod_routes(self.config, [r.ip for r in self.records().values()])

    def _host_ports(self) -> dict[str, tuple[str, tuple[HostPort, ...]]]:
        # A record from before a port became reserved (say, an older k3py) never gets a rule.
        reserved = {port for port, _owner in self.config.reserved_ports}
        found = {
            record.uid: (record.ip, tuple(
                m for m in record.host_ports if not (m.protocol == "TCP" and m.host_port in reserved)
            ))
            for record in self.records().values()
        }  # fmt: skip
        return {uid: entry for uid, entry in found.items() if entry[1]}

    def sync_nat(self) -> None:
        """Rewrites the whole NAT table from the configuration and the pod records."""
        with self.lock:
            nftables.apply_ruleset(self.config, self._host_ports())

    def sync_host_ports(self) -> None:
        """Rewrites only the hostPort chain from the pod records — what pods change. Several
        times cheaper than the whole table, whose base chains must be re-registered in the
        kernel; falls back to the whole table if someone removed it."""
        with self.lock:
            try:
                nftables.apply_host_ports(self.config, self._host_ports())
            except NetworkError:
                nftables.apply_ruleset(self.config, self._host_ports())

    # -- pod records ------------------------------------------------------------------------

    def _record_path(self, uid: str) -> Path:
        return self.records_dir / f"{check_owner(uid)}.json"

    @staticmethod
    def _read_record(path: Path) -> PodRecord | None:
        try:
            return PodRecord.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"pod network record {path} is corrupt: {exc}") from None

    def records(self) -> dict[str, PodRecord]:
        """Every pod this node has set up, by UID."""
        found: dict[str, PodRecord] = {}
        for path in self.records_dir.glob("*.json"):
            record = self._read_record(path)
            if record is not None:
                found[record.uid] = record
        return found

    def record(self, uid: str) -> PodRecord | None:
        return self._read_record(self._record_path(uid))

    def save_record(self, record: PodRecord) -> None:
        path = self._record_path(record.uid)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(record.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def delete_record(self, uid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path(uid).unlink()
