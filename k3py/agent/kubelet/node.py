"""The Node object of this host and its heartbeat.

``NodeStatusReporter`` registers the Node (creating it, or taking over the object a previous
run left), then keeps two things fresh:

- the Lease ``kube-node-lease/<node>`` renewed every 10 s (``leaseDurationSeconds`` 40): the
  heartbeat the node-lifecycle controller watches;
- the Node status: capacity/allocatable measured from the host (cpu, memory,
  ephemeral-storage of the data dir's filesystem, pods=110), addresses, nodeInfo, the images
  in the runtime's store, and the
  conditions MemoryPressure / DiskPressure / PIDPressure measured against the kubelet's default
  hard-eviction thresholds (memory.available < 100Mi, nodefs.available < 10%,
  nodefs.inodesFree < 5%, pids in use above 90% of the host's limit) and Ready (the runtime
  answers and the pod network is up). The
  status is written when anything changed, and at least every minute (heartbeat times).

``spec.podCIDR``: kept if the Node already has one (a controller or an earlier run assigned it),
else the lowest free /24 of 10.42.0.0/16 among the nodes that exist is claimed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339, now_rfc3339_micro
from k3py.client.interface import LEASES, NAMESPACES, NODES, Client

log = logging.getLogger("k3py.kubelet.node")

Obj = dict[str, Any]

KUBELET_VERSION = "v1.32.0-k3py"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_RENEW_SECONDS = 10.0
LEASE_DURATION_SECONDS = 40
STATUS_FORCE_SECONDS = 60.0
MAX_PODS = 110
CLUSTER_CIDR = ipaddress.ip_network("10.42.0.0/16")
MEMORY_EVICTION_BYTES = 100 << 20


def go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}.get(
        machine, machine
    )


def detect_node_ip() -> str:
    """The IPv4 address of the interface holding the default route; 127.0.0.1 when there is none."""
    try:
        with open("/proc/net/route") as routes:
            next(routes)
            default_iface = next(
                (fields[0] for fields in (line.split() for line in routes) if fields[1] == "00000000"), None
            )
    except (OSError, StopIteration):
        default_iface = None
    if default_iface:
        for addr in psutil.net_if_addrs().get(default_iface, []):
            if addr.family.name == "AF_INET":
                return addr.address
    return "127.0.0.1"


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _read_id(path: str) -> str:
    try:
        return Path(path).read_text().strip().replace("-", "")
    except OSError:
        return ""


def host_capacity(data_dir: Path) -> dict[str, str]:
    disk = shutil.disk_usage(data_dir)
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{psutil.virtual_memory().total // 1024}Ki",
        "ephemeral-storage": f"{disk.total // 1024}Ki",
        "pods": str(MAX_PODS),
    }


def _pid_pressure() -> bool:
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return False
    return len(psutil.pids()) > pid_max * 0.9


def disk_pressure(data_dir: Path) -> bool:
    """The kubelet's nodefs thresholds on the data dir's filesystem: less than 10% of the space or
    5% of the inodes available (filesystems without an inode count, such as btrfs, report 0)."""
    stats = os.statvfs(data_dir)
    space_low = stats.f_bavail * stats.f_frsize < stats.f_blocks * stats.f_frsize * 0.10
    inodes_low = stats.f_files > 0 and stats.f_favail < stats.f_files * 0.05
    return space_low or inodes_low


def pressure_conditions(data_dir: Path) -> dict[str, bool]:
    return {
        "MemoryPressure": psutil.virtual_memory().available < MEMORY_EVICTION_BYTES,
        "DiskPressure": disk_pressure(data_dir),
        "PIDPressure": _pid_pressure(),
    }


_CONDITION_TEXT = {
    ("MemoryPressure", False): ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("MemoryPressure", True): ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    ("DiskPressure", False): ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("DiskPressure", True): ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    ("PIDPressure", False): ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("PIDPressure", True): ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}


def build_conditions(
    pressures: dict[str, bool], ready: bool, not_ready_message: str, previous: list[Obj]
) -> list[Obj]:
    """Node conditions with heartbeat now and transition times kept while a status holds."""
    now = now_rfc3339()
    before = {c.get("type"): c for c in previous}
    out = []
    wanted: list[tuple[str, str, str, str]] = []
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        reason, message = _CONDITION_TEXT[(kind, pressures[kind])]
        wanted.append((kind, "True" if pressures[kind] else "False", reason, message))
    if ready:
        wanted.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    else:
        wanted.append(("Ready", "False", "KubeletNotReady", not_ready_message))
    for kind, status, reason, message in wanted:
        old = before.get(kind) or {}
        transition = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append({"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": transition or now})
    return out


def claim_pod_cidr(nodes: list[Obj], node_name: str) -> str:
    """This node's pod CIDR: its own if set, else the lowest /24 of the cluster CIDR no node has."""
    taken = set()
    for node in nodes:
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr:
            continue
        if (node.get("metadata") or {}).get("name") == node_name:
            return cidr
        taken.add(cidr)
    for subnet in CLUSTER_CIDR.subnets(new_prefix=24):
        if str(subnet) not in taken:
            return str(subnet)
    raise RuntimeError("no free /24 left in the cluster CIDR 10.42.0.0/16")


@dataclass
class NodeIdentity:
    name: str
    node_ip: str
    data_dir: Path
    is_control_plane: bool = False
    streaming_port: int = 10250
    extra_labels: dict[str, str] = field(default_factory=dict)


def node_labels(identity: NodeIdentity) -> dict[str, str]:
    arch = go_arch()
    labels = {
        "kubernetes.io/hostname": identity.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "node.kubernetes.io/instance-type": "k3py",
    }
    if identity.is_control_plane:
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
    labels.update(identity.extra_labels)
    return labels


def node_images(images: list[Any]) -> list[Obj]:
    """``status.images`` from the runtime's image store: names (with the digest form) and size."""
    out = []
    for image in sorted(images, key=lambda i: -i.size)[:50]:  # the kubelet reports at most 50
        names = list(image.names)
        for name in image.names:
            repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            names.append(f"{repository}@{image.manifest_digest}")
        out.append({"names": list(dict.fromkeys(names)) or [image.id], "sizeBytes": image.size})
    return out


def node_status(identity: NodeIdentity, conditions: list[Obj], images: Sequence[Any] = ()) -> Obj:
    capacity = host_capacity(identity.data_dir)
    uname = os.uname()
    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": identity.node_ip},
            {"type": "Hostname", "address": identity.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": identity.streaming_port}},
        "images": node_images(list(images)),
        "nodeInfo": {
            "machineID": _read_id("/etc/machine-id"),
            "systemUUID": _read_id("/sys/class/dmi/id/product_uuid") or _read_id("/etc/machine-id"),
            "bootID": _read_id("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": uname.release,
            "osImage": _os_image(),
            "containerRuntimeVersion": "k3py://0.1.0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": go_arch(),
        },
    }


class NodeStatusReporter:
    """Registers the Node, renews its Lease and reports its status; see the module docstring."""

    def __init__(
        self,
        client: Client,
        identity: NodeIdentity,
        health: Callable[[], str | None],
        images: Callable[[], list[Any]] = list,
    ) -> None:
        self.client = client
        self.identity = identity
        self.health = health  # None when healthy, else why the node is not ready
        self.images = images  # the runtime's images, for status.images
        self.node: Obj | None = None
        self.registered = asyncio.Event()
        self._last_reported: Obj | None = None
        self._last_report_time = 0.0

    @property
    def pod_cidr(self) -> str:
        assert self.node is not None
        return (self.node.get("spec") or {}).get("podCIDR", "")

    @property
    def allocatable(self) -> dict[str, str]:
        return dict(((self.node or {}).get("status") or {}).get("allocatable") or {})

    async def register(self) -> Obj:
        """Create or adopt the Node with labels, podCIDR and a first status."""
        name = self.identity.name
        nodes = (await self.client.list(NODES)).get("items") or []
        cidr = claim_pod_cidr(nodes, name)
        existing = next((n for n in nodes if n["metadata"]["name"] == name), None)
        labels = node_labels(self.identity)
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            }
            try:
                existing = await self.client.create(NODES, body)
            except ApiError as e:
                if e.code != 409:
                    raise
                existing = await self.client.get(NODES, name)
        patch: Obj = {"metadata": {"labels": labels}}
        if not (existing.get("spec") or {}).get("podCIDR"):
            patch["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
        self.node = await self.client.patch(NODES, name, patch)
        await self.report(force=True)
        self.registered.set()
        return self.node

    async def report(self, force: bool = False) -> None:
        assert self.node is not None
        pressures = await asyncio.to_thread(pressure_conditions, self.identity.data_dir)
        problem = self.health()
        previous = (self.node.get("status") or {}).get("conditions") or []
        conditions = build_conditions(pressures, problem is None, problem or "", previous)
        status = await asyncio.to_thread(lambda: node_status(self.identity, conditions, self.images()))
        comparable = {**status, "conditions": [{k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in conditions]}
        loop = asyncio.get_running_loop()
        if not force and comparable == self._last_reported and loop.time() - self._last_report_time < STATUS_FORCE_SECONDS:
            return
        self.node = await self.client.patch(NODES, self.identity.name, {"status": status}, subresource="status")
        self._last_reported = comparable
        self._last_report_time = loop.time()

    async def renew_lease(self) -> None:
        name = self.identity.name
        stamp = now_rfc3339_micro()
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": stamp}
        try:
            await self.client.patch(LEASES, name, {"spec": spec}, LEASE_NAMESPACE)
            return
        except ApiError as e:
            if e.code != 404:
                raise
        node_uid = (self.node or {}).get("metadata", {}).get("uid", "")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]
                if node_uid else [],
            },
            "spec": {**spec, "acquireTime": stamp},
        }
        try:
            await self.client.create(LEASES, lease, LEASE_NAMESPACE)
        except ApiError as e:
            if e.code == 404:  # the namespace itself is missing (no controller made it yet)
                await self._ensure_lease_namespace()
                await self.client.create(LEASES, lease, LEASE_NAMESPACE)
            elif e.code != 409:
                raise

    async def _ensure_lease_namespace(self) -> None:
        try:
            await self.client.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
            )
        except ApiError as e:
            if e.code != 409:
                raise

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat loop: lease and status every 10 s until ``stop``; errors are retried."""
        while not stop.is_set():
            try:
                await self.report()
                await self.renew_lease()
            except ApiError as e:
                if e.code == 404:
                    # Someone deleted our Node (kubectl delete node): register it again.
                    log.warning("node %s was deleted; registering it again", self.identity.name)
                    with contextlib.suppress(ApiError):
                        await self.register()
                else:
                    log.warning("node heartbeat failed: %s", e.message)
            except OSError as e:
                log.warning("node heartbeat failed: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), LEASE_RENEW_SECONDS)
            except TimeoutError:
                pass

    async def mark_ready_changed(self) -> None:
        """Report at once (the runtime or network health changed)."""
        try:
            await self.report(force=True)
        except ApiError as e:
            log.warning("node status update failed: %s", e.message)
