"""The pod side of the pod network: one veth pair and one address per pod sandbox.

``PodNetwork.setup(pod_uid, netns_path, host_ports)`` is what the kubelet calls once the
runtime has made the pod sandbox's network namespace (any path to an nsfs file: a
``/run/netns/<name>`` bind mount or ``/proc/<pid>/ns/net``):

1. an address is reserved in the node's IPAM for the pod UID;
2. a veth pair is created with the host end (``veth`` + 11 hex digits of a hash of the UID, so
   teardown finds it again without any state) in the node's namespace and the other end
   created directly inside the pod's namespace as ``eth0`` — so no interface named eth0 ever
   appears, even briefly, in the node's namespace;
3. the host end joins the bridge (hairpin on, so a pod can reach itself through a hostPort or
   later a Service), the node a /32 route to the pod, the pod end gets the address, and the
   pod a default route via the bridge;
4. the record is saved and, if it has hostPorts, the hostPort chain rewritten.

Any failure undoes what was done and raises ``NetworkError``. ``setup`` is idempotent: called
again for a pod that is set up it returns the same address (updating hostPorts if they
changed). ``teardown(pod_uid)`` deletes the veth (its peer goes with it), releases the address
and its route, drops the record and the hostPort rules; it is idempotent too, and works after a restart.

hostNetwork pods are not set up at all: they share the node's namespace and address
(``uses_pod_network``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from k3py.agent.network import commands, routes
from k3py.agent.network.config import NetworkConfigError, NetworkError, PodIP
from k3py.agent.network.hostports import HostPort, check_conflicts, check_reserved
from k3py.agent.network.ipam import check_owner
from k3py.agent.network.node import NodeNetwork, PodRecord

POD_INTERFACE = "eth0"


def uses_pod_network(pod_spec: Mapping[str, Any]) -> bool:
    """False for hostNetwork pods, which run in the node's network namespace."""
    return not pod_spec.get("hostNetwork", False)


def veth_reaches(veth: str, netns_path: str) -> bool:
    """Whether the pod end of ``veth`` is the ``eth0`` of the namespace at ``netns_path``.

    An agent restarted in another mount namespace reaches a pod's namespace file by another
    path (through the supervisor's root), and the path it recorded may not even open there any
    more: what tells whether an adopted pod's network is in place is the pair itself — the
    pod's eth0 names our veth's interface index as its peer. Keeping it keeps the pod's
    connections (through Services too) instead of cutting them with a new veth."""
    host = commands.ip("-o", "link", "show", "dev", veth, check=False).stdout
    index = host.split(":", 1)[0].strip()
    if not index.isdigit():
        return False
    pod = commands.run(["nsenter", f"--net={netns_path}", "ip", "-o", "link", "show", "dev", POD_INTERFACE],
                       check=False).stdout
    return f"{POD_INTERFACE}@if{index}:" in pod


def host_veth_name(pod_uid: str) -> str:
    """The node-side interface of a pod: stable, unique enough, at most 15 bytes."""
    return "veth" + hashlib.sha256(pod_uid.encode()).hexdigest()[:11]


class PodNetwork:
    """Sets up and tears down the network of pod sandboxes on one node."""

    def __init__(self, node: NodeNetwork) -> None:
        self.node = node

    def setup(
        self,
        pod_uid: str,
        netns_path: str,
        host_ports: Iterable[HostPort | Mapping[str, Any]] = (),
    ) -> PodIP:
        """Connects the pod's namespace to the node's bridge; returns the pod's address.

        ``host_ports`` are ``HostPort``s or container port dicts with a ``hostPort``.
        """
        check_owner(pod_uid)
        if not netns_path or any(c.isspace() for c in netns_path):
            raise NetworkConfigError(f"pod {pod_uid}: bad network namespace path {netns_path!r}")
        if not os.path.exists(netns_path):
            raise NetworkConfigError(f"pod {pod_uid}: network namespace {netns_path} does not exist")
        mappings = tuple(sorted({
            entry if isinstance(entry, HostPort) else HostPort.from_dict(entry)
            for entry in host_ports
        }))
        config = self.node.config
        check_reserved(mappings, dict(config.reserved_ports))
        with self.node.lock:
            others = {
                uid: record.host_ports
                for uid, record in self.node.records().items()
                if uid != pod_uid
            }
            check_conflicts({**others, pod_uid: mappings})

            existing = self.node.record(pod_uid)
            veth = host_veth_name(pod_uid)
            same = existing is not None and (existing.netns == netns_path or veth_reaches(veth, netns_path))
            if existing is not None and same and commands.link_exists(veth):
                if existing.host_ports != mappings or existing.netns != netns_path:
                    self.node.save_record(
                        PodRecord(pod_uid, existing.ip, veth, netns_path, mappings)
                    )
                if existing.host_ports != mappings:
                    self.node.sync_host_ports()
                return config.pod_ip(ipaddress.IPv4Address(existing.ip))

            if not commands.link_exists(config.bridge):
                raise NetworkError(
                    f"pod {pod_uid}: the node network is not started (no bridge {config.bridge})"
                )
            # A half-done or stale setup (other netns, missing veth): start over from scratch,
            # keeping the address the pod already holds.
            if commands.link_exists(veth):
                commands.delete_link(veth)
            address = self.node.ipam.allocate(pod_uid)
            pod_ip = config.pod_ip(address)
            try:
                self._connect(veth, netns_path, pod_ip)
                self.node.save_record(PodRecord(pod_uid, str(address), veth, netns_path, mappings))
                if mappings or (existing is not None and existing.host_ports):
                    self.node.sync_host_ports()
            except BaseException:
                # Undo, best effort: the original error is the one to report.
                with contextlib.suppress(Exception):
                    commands.delete_link(veth)
                    routes.delete_pod_route(config, str(address))
                self.node.delete_record(pod_uid)
                self.node.ipam.release(pod_uid)
                if mappings:
                    with contextlib.suppress(Exception):
                        self.node.sync_host_ports()
                raise
            return pod_ip

    def teardown(self, pod_uid: str) -> None:
        """Removes the pod's veth, address, record and hostPort rules (if any)."""
        check_owner(pod_uid)
        with self.node.lock:
            record = self.node.record(pod_uid)
            veth = record.veth if record is not None else host_veth_name(pod_uid)
            commands.delete_link(veth)
            self.node.delete_record(pod_uid)
            for address in self.node.ipam.release(pod_uid):
                routes.delete_pod_route(self.node.config, str(address))
            if record is not None and record.host_ports:
                self.node.sync_host_ports()

    def address(self, pod_uid: str) -> PodIP | None:
        """The address of a pod that is set up."""
        record = self.node.record(pod_uid)
        if record is None:
            return None
        return self.node.config.pod_ip(ipaddress.IPv4Address(record.ip))

    def reconcile(self, live_pod_uids: Collection[str]) -> list[str]:
        """Tears down every pod this node has state for that is not in ``live_pod_uids`` —
        for the kubelet after a restart, when pods may have gone while it was down. Returns
        the UIDs it tore down."""
        with self.node.lock:
            known = set(self.node.records()) | set(self.node.ipam.allocations().values())
            gone = sorted(known - set(live_pod_uids))
            for uid in gone:
                self.teardown(uid)
            # Bridge ports nobody has a record for (a crash between creating the veth and
            # saving the record) would otherwise stay until their namespace goes away.
            wanted = {record.veth for record in self.node.records().values()}
            for port in commands.links_with_master(self.node.config.bridge):
                if port.startswith("veth") and port not in wanted:
                    commands.delete_link(port)
            self.node.sync_pod_routes()
            return gone

    def _connect(self, veth: str, netns_path: str, pod_ip: PodIP) -> None:
        config = self.node.config
        commands.ip_batch(
            [
                f"link add name {veth} type veth peer name {POD_INTERFACE} netns {netns_path}",
                f"link set dev {veth} master {config.bridge}",
                f"link set dev {veth} type bridge_slave hairpin on",
                f"link set dev {veth} up",
                f"route replace {routes.pod_route(config, pod_ip.ip)}",
            ]
        )
        commands.ip_batch(
            [
                "link set dev lo up",
                f"addr add {pod_ip.cidr} dev {POD_INTERFACE}",
                f"link set dev {POD_INTERFACE} up",
                f"route replace default via {pod_ip.gateway} dev {POD_INTERFACE}",
            ],
            netns_path=netns_path,
        )
