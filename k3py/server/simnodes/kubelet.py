"""N simulated kubelets in one task: Nodes, Leases and pod lifecycles, but no containers.

For load tests and for exercising controllers, the scheduler and clients (``kubectl rollout
status``, ``helm --wait``) without a container runtime. Each simulated node:

- registers a Node (``simnode-<i>``; labels kubernetes.io/hostname, os, arch and
  ``node.k3py.io/simulated=true``; capacity = allocatable = 4 cpu, 8Gi memory, 110 pods,
  unless configured otherwise; a Ready condition with kubelet's wording) and keeps it Ready.
  Addresses come from 100.64.0.0/10 (node i: 100.64.x.y; its pods: the /24 at 100.65.0.0 + i),
  never from the cluster's pod or service CIDRs, and the Node has no ``spec.podCIDR`` — so real
  nodes never see a simulated pod's address as one of theirs, and the pod network never
  installs routes towards a node that does not exist;
- renews its Lease in ``kube-node-lease`` (the node heartbeat); with many nodes the renew
  interval stretches so heartbeats stay near 50 writes a second, and leaseDurationSeconds is
  four intervals;
- runs every pod bound to it: Pending → Running with all containers ready (Initialized,
  ContainersReady, Ready, PodScheduled True; hostIP, podIP, containerStatuses). Pods whose
  restartPolicy is Never or OnFailure finish after ``k3py.io/simulated-run-seconds``
  (annotation, default 0) with ``k3py.io/simulated-exit-code`` (default 0): exit 0 →
  Succeeded; otherwise Never → Failed and OnFailure → the container restarts (restartCount
  grows) and runs again. restartPolicy Always pods run until deleted;
- honours graceful deletion: a pod with a deletionTimestamp has nothing to stop, so its
  containers are reported terminated and the pod is deleted with grace period 0 (with a uid
  precondition, so a recreated pod of the same name is never touched).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339, now_rfc3339_micro, parse_rfc3339
from k3py.client.controller import Controller
from k3py.client.informer import NODE_NAME_INDEX, InformerFactory, index_by_node_name
from k3py.client.interface import LEASES, NAMESPACES, NODES, PODS, Client

log = logging.getLogger("k3py.simnodes")

RUN_SECONDS = "k3py.io/simulated-run-seconds"
EXIT_CODE = "k3py.io/simulated-exit-code"
LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.32.0-k3py"
MAX_HEARTBEATS_PER_SECOND = 50.0

Obj = dict[str, Any]


@dataclass
class NodeShape:
    cpu: str = "4"
    memory: str = "8Gi"
    pods: str = "110"
    ephemeral_storage: str = "100Gi"


def node_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index}"


def pod_cidr(index: int) -> str:
    """Node ``index``'s simulated pod range: a /24 counted up from 100.65.0.0."""
    return str(ipaddress.ip_network("100.65.0.0/24").network_address + 256 * index) + "/24"


def node_address(index: int) -> str:
    return str(ipaddress.ip_address("100.64.0.0") + index)


def node_object(name: str, index: int, shape: NodeShape) -> Obj:
    now = now_rfc3339()
    resources = {"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods,
                 "ephemeral-storage": shape.ephemeral_storage}
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now, "lastTransitionTime": now}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.k3py.io/simulated": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": node_address(index)},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hashlib.md5(name.encode()).hexdigest(),
                "systemUUID": hashlib.md5(name.encode()).hexdigest(),
                "bootID": "",
                "kernelVersion": "simulated",
                "osImage": "k3py simulated node",
                "containerRuntimeVersion": "simulated://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _int_annotation(pod: Obj, name: str, default: float) -> float:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


class SimulatedNodes(Controller):
    """See the module docstring. Reconciles pods (by key) bound to its nodes."""

    name = "simulated-nodes"
    workers = 8

    def __init__(self, client: Client, informers: InformerFactory, count: int, *,
                 prefix: str = "simnode", shape: NodeShape | None = None) -> None:
        super().__init__(client, informers)
        self.count = count
        self.prefix = prefix
        self.shape = shape or NodeShape()
        self.node_names = {node_name(prefix, i): i for i in range(1, count + 1)}
        self.pods = informers.informer(PODS, {NODE_NAME_INDEX: index_by_node_name})
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n))
        self._ip_counters: dict[str, int] = {}
        self._pod_ips: dict[str, str] = {}
        self.heartbeat_interval = max(10.0, count / MAX_HEARTBEATS_PER_SECOND)
        self.registered = asyncio.Event()

    def _pod_event(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.node_names:
            self.enqueue(pod)

    # -- nodes and leases ------------------------------------------------------------------

    async def register(self) -> None:
        """Create (or refresh) every Node and its Lease; concurrency-bounded."""
        try:
            await self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": LEASE_NAMESPACE}})
        except ApiError as e:
            if e.code != 409:
                raise
        limit = asyncio.Semaphore(32)

        async def one(name: str, index: int) -> None:
            async with limit:
                await self._register_node(name, index)
                if not await self._create_lease(name):
                    await self._renew_lease(name)

        await asyncio.gather(*(one(n, i) for n, i in self.node_names.items()))
        self.registered.set()
        log.info("registered %d simulated nodes", self.count)

    async def _register_node(self, name: str, index: int) -> None:
        node = node_object(name, index, self.shape)
        try:
            created = await self.client.create(NODES, node)
        except ApiError as e:
            if e.code != 409:
                raise
            created = await self.client.get(NODES, name)
        if not _is_ready(created) or (created.get("status") or {}).get("allocatable") != node["status"]["allocatable"]:
            # The server may drop status on create (or the node is a stale one): set it.
            await self.client.update_status(NODES, {**created, "status": node["status"]})

    def _lease_spec(self, name: str) -> Obj:
        return {"holderIdentity": name, "leaseDurationSeconds": int(self.heartbeat_interval * 4),
                "renewTime": now_rfc3339_micro()}

    async def _create_lease(self, name: str) -> bool:
        """Create the node's Lease; False when it already exists (a restart)."""
        spec = self._lease_spec(name)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                 "spec": {**spec, "acquireTime": spec["renewTime"]}}
        try:
            await self.client.create(LEASES, lease, LEASE_NAMESPACE)
            return True
        except ApiError as e:
            if e.code != 409:
                raise
            return False

    async def _renew_lease(self, name: str) -> None:
        try:
            await self.client.patch(LEASES, name, {"spec": self._lease_spec(name)}, LEASE_NAMESPACE)
        except ApiError as e:
            if e.code != 404:
                raise
            await self._create_lease(name)

    async def heartbeats(self) -> None:
        """Renew every node's Lease each interval, spread evenly over the interval."""
        names = list(self.node_names)
        while True:
            gap = self.heartbeat_interval / max(1, len(names))
            for name in names:
                try:
                    await self._renew_lease(name)
                except ApiError as e:
                    log.debug("lease renewal for %s failed: %s", name, e.message)
                await asyncio.sleep(gap)

    # -- pods ------------------------------------------------------------------------------

    def _pod_ip(self, pod: Obj) -> str:
        uid = (pod.get("metadata") or {}).get("uid", "")
        ip = self._pod_ips.get(uid)
        if ip is None:
            node = pod["spec"]["nodeName"]
            base = pod_cidr(self.node_names[node]).rsplit(".", 1)[0]  # "100.65.3"
            n = self._ip_counters.get(node, 1) % 253 + 1  # .2 ... .254 (.1 is the gateway)
            self._ip_counters[node] = n
            ip = f"{base}.{n}"
            self._pod_ips[uid] = ip
        return ip

    async def reconcile(self, key: Hashable) -> float | None:
        pod = self.pods.cache.get(str(key))
        if pod is None:
            return None
        meta = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self.node_names:
            return None
        if meta.get("deletionTimestamp"):
            self._pod_ips.pop(meta.get("uid", ""), None)
            try:
                await self.client.delete(PODS, meta["name"], meta.get("namespace", ""),
                                         grace_period_seconds=0, preconditions={"uid": meta.get("uid", "")})
            except ApiError as e:
                if e.code not in (404, 409):
                    raise
            return None
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        if phase in ("Succeeded", "Failed"):
            self._pod_ips.pop(meta.get("uid", ""), None)
            return None
        if phase == "Pending":
            await self._write_status(pod, self._running_status(pod, restarts=0))
            return self._finish_delay(pod)
        return await self._maybe_finish(pod)

    def _finish_delay(self, pod: Obj) -> float | None:
        if (pod.get("spec") or {}).get("restartPolicy", "Always") == "Always":
            return None
        return max(0.0, _int_annotation(pod, RUN_SECONDS, 0.0))

    async def _maybe_finish(self, pod: Obj) -> float | None:
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        if policy == "Always":
            return None
        status = pod.get("status") or {}
        started = _latest_start(status)
        run_seconds = _int_annotation(pod, RUN_SECONDS, 0.0)
        if started is not None:
            elapsed = (datetime.now(UTC) - parse_rfc3339(started)).total_seconds()
            if elapsed < run_seconds:
                return run_seconds - elapsed + 0.01
        code = int(_int_annotation(pod, EXIT_CODE, 0))
        if code != 0 and policy == "OnFailure":
            restarts = max((int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or ()), default=0)
            await self._write_status(pod, self._running_status(pod, restarts=restarts + 1))
            return max(run_seconds, 1.0)
        await self._write_status(pod, self._terminated_status(pod, code))
        return None

    def _container_statuses(self, pod: Obj, state: Obj, ready: bool, restarts: int) -> list[Obj]:
        uid = (pod.get("metadata") or {}).get("uid", "")
        out = []
        for c in (pod.get("spec") or {}).get("containers") or ():
            image = c.get("image", "")
            digest = hashlib.sha256(image.encode()).hexdigest()
            out.append({
                "name": c.get("name", ""),
                "image": image,
                "imageID": f"{re.sub(r'[:@].*$', '', image)}@sha256:{digest}",
                "containerID": "simulated://" + hashlib.sha256(f"{uid}/{c.get('name')}/{restarts}".encode()).hexdigest(),
                "ready": ready,
                "started": ready,
                "restartCount": restarts,
                "state": state,
                "lastState": {},
            })
        return out

    def _base_status(self, pod: Obj) -> Obj:
        status = dict(pod.get("status") or {})
        node = pod["spec"]["nodeName"]
        host_ip = node_address(self.node_names[node])
        ip = host_ip if (pod.get("spec") or {}).get("hostNetwork") else self._pod_ip(pod)
        status.update({"hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
                       "qosClass": status.get("qosClass") or _qos_class(pod)})
        status.setdefault("startTime", now_rfc3339())
        return status

    def _running_status(self, pod: Obj, restarts: int) -> Obj:
        now = now_rfc3339()
        status = self._base_status(pod)
        status["phase"] = "Running"
        status["conditions"] = [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        status["containerStatuses"] = self._container_statuses(pod, {"running": {"startedAt": now}}, True, restarts)
        return status

    def _terminated_status(self, pod: Obj, code: int) -> Obj:
        now = now_rfc3339()
        status = self._base_status(pod)
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        reason = "PodCompleted"
        status["conditions"] = [
            {"type": "PodReadyToStartContainers", "status": "False", "lastProbeTime": None, "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": now, "reason": reason},
            {"type": "Ready", "status": "False", "lastProbeTime": None, "lastTransitionTime": now, "reason": reason},
            {"type": "ContainersReady", "status": "False", "lastProbeTime": None, "lastTransitionTime": now, "reason": reason},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
        ]
        started = _latest_start(pod.get("status") or {}) or now
        restarts = max((int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or ()), default=0)
        state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                "startedAt": started, "finishedAt": now}}
        status["containerStatuses"] = self._container_statuses(pod, state, False, restarts)
        for cs in status["containerStatuses"]:
            cs["started"] = False
        return status

    async def _write_status(self, pod: Obj, status: Obj) -> None:
        try:
            await self.client.update_status(PODS, {**pod, "status": status})
        except ApiError as e:
            if e.code != 404:
                raise

    async def run(self) -> None:
        await self.register()
        beats = asyncio.create_task(self.heartbeats(), name="simnode-heartbeats")
        try:
            await super().run()
        finally:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)


def _latest_start(status: Obj) -> str | None:
    for cs in status.get("containerStatuses") or ():
        running = (cs.get("state") or {}).get("running")
        if running and running.get("startedAt"):
            return str(running["startedAt"])
    return None


def _is_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


def _qos_class(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or ()
    requests_any = limits_all = False
    limits_all = bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        if not (lim.get("cpu") and lim.get("memory") and all(req.get(k, lim[k]) == lim[k] for k in ("cpu", "memory"))):
            limits_all = False
    if limits_all:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"
