"""The node lifecycle controller: notice dead nodes, taint them, evict their pods.

A node's heartbeat is the later of its Lease's ``renewTime`` (kube-node-lease) and its Ready
condition's ``lastHeartbeatTime``. When it is older than the grace period (40 s, or the
Lease's own ``leaseDurationSeconds`` if longer) the node's Ready, MemoryPressure, DiskPressure
and PIDPressure conditions become Unknown ("Kubelet stopped posting node status.") and the node
gets the ``node.kubernetes.io/unreachable`` NoSchedule and NoExecute taints; a node that
reports Ready=False gets ``node.kubernetes.io/not-ready`` instead. The taints go as soon as
the node is Ready again. Pods on an unreachable node are marked not Ready. A node that has
not posted any status yet gets 60 s to start before it is judged.

Taint-based eviction: pods on a node with a NoExecute taint they do not tolerate are deleted
at once; those that tolerate it for ``tolerationSeconds`` are deleted when that time has
passed since the taint was added (the API server's admission gives pods 300 s by default).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from datetime import datetime, timedelta

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339, parse_rfc3339
from k3py.client.controller import Controller
from k3py.client.informer import NODE_NAME_INDEX, InformerFactory, index_by_node_name
from k3py.client.interface import LEASES, NODES, PODS, Client, Resource
from k3py.server.controllers.common import (
    Obj,
    get_condition,
    is_deleting,
    meta,
    name_of,
    namespace_of,
    uid_of,
    utcnow,
)
from k3py.server.scheduler.predicates import Taint, tolerates

log = logging.getLogger("k3py.controllers.nodelifecycle")

LEASE_NAMESPACE = "kube-node-lease"
GRACE_SECONDS = 40.0
STARTUP_GRACE_SECONDS = 60.0  # a new node has this long to post its first status
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


class NodeLifecycleController(Controller):
    """See the module docstring. Keys are node names."""

    name = "node-lifecycle"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory, grace_seconds: float = GRACE_SECONDS) -> None:
        super().__init__(client, informers)
        self.grace = grace_seconds
        self.nodes = informers.informer(NODES)
        self.leases = informers.informer(LEASES)
        self.pods = informers.informer(PODS, {NODE_NAME_INDEX: index_by_node_name})
        self.nodes.add_handler(self.enqueue, lambda _o, n: self.enqueue(n))
        self.leases.add_handler(self._lease, lambda _o, n: self._lease(n))
        self.pods.add_handler(self._pod, lambda _o, n: self._pod(n))

    def _lease(self, lease: Obj) -> None:
        if namespace_of(lease) == LEASE_NAMESPACE:
            self.queue.add(name_of(lease))

    def _pod(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and any(t.get("effect") == "NoExecute" for t in ((self.nodes.cache.get(node) or {}).get("spec") or {}).get("taints") or ()):
            self.queue.add(node)

    def heartbeat(self, node: Obj) -> tuple[datetime | None, float]:
        """The node's last sign of life and how long it may stay silent."""
        lease = self.leases.cache.get_by_name(LEASE_NAMESPACE, name_of(node))
        times = []
        grace = self.grace
        if lease is not None:
            spec = lease.get("spec") or {}
            times.append(_time(spec.get("renewTime")))
            grace = max(grace, float(spec.get("leaseDurationSeconds") or 0))
        ready = get_condition(node, "Ready")
        if ready is not None:
            times.append(_time(ready.get("lastHeartbeatTime")))
        known = [t for t in times if t is not None]
        return (max(known) if known else _time(meta(node).get("creationTimestamp"))), grace

    async def reconcile(self, key: Hashable) -> float | None:
        cached = self.nodes.cache.get(str(key))
        if cached is None:
            return None
        node = cached  # read-only until a write is needed (lease renewals wake us often)
        now = utcnow()
        last, grace = self.heartbeat(node)
        silent = (now - last).total_seconds() if last else grace + 1
        requeue: float | None = max(1.0, grace - silent + 0.5) if silent <= grace else None
        ready = get_condition(node, "Ready")
        created = _time(meta(node).get("creationTimestamp"))
        starting = ready is None and created is not None and (now - created).total_seconds() < STARTUP_GRACE_SECONDS
        if starting:
            silent = 0.0
            requeue = STARTUP_GRACE_SECONDS
        if silent > grace and (ready is None or ready.get("status") != "Unknown"):
            node = copy.deepcopy(cached)
            status = node.setdefault("status", {})
            stamp = now_rfc3339()
            for cond_type in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                cond = get_condition(node, cond_type)
                if cond is None:
                    cond = {"type": cond_type}
                    status.setdefault("conditions", []).append(cond)
                cond.update({"status": "Unknown", "reason": "NodeStatusUnknown", "message": UNKNOWN_MESSAGE,
                             "lastTransitionTime": stamp})
            await self.write_status(NODES, cached, status)
            log.info("node %s stopped posting status (silent %.0fs)", key, silent)
            return 1.0
        ready = get_condition(node, "Ready")
        if ready is None:
            # A node that has not posted status yet is still starting: leave it untainted.
            return requeue
        state = ready.get("status", "Unknown")
        wanted_key = None if state == "True" else (UNREACHABLE if state == "Unknown" else NOT_READY)
        taints = list((node.get("spec") or {}).get("taints") or [])
        managed = [t for t in taints if t.get("key") in (UNREACHABLE, NOT_READY)]
        keep = [t for t in taints if t.get("key") not in (UNREACHABLE, NOT_READY)]
        desired_managed = [t for t in managed if t.get("key") == wanted_key]
        if wanted_key is not None:
            for effect in ("NoSchedule", "NoExecute"):
                if not any(t.get("effect") == effect for t in desired_managed):
                    taint: Obj = {"key": wanted_key, "effect": effect}
                    if effect == "NoExecute":
                        taint["timeAdded"] = now_rfc3339()
                    desired_managed.append(taint)
        def shape(ts: list[Obj]) -> list[tuple[str, str]]:
            return sorted((t.get("key", ""), t.get("effect", "")) for t in ts)

        if shape(desired_managed) != shape(managed):
            node = copy.deepcopy(cached)
            node.setdefault("spec", {})["taints"] = keep + desired_managed or None
            if node["spec"]["taints"] is None:
                node["spec"].pop("taints")
            await self._write(NODES, node)
            return 0.5
        if state == "Unknown":
            await self._mark_pods_not_ready(str(key))
        evict_wait = await self._evict(str(key), [t for t in taints if t.get("effect") == "NoExecute"], now)
        if evict_wait is not None:
            requeue = evict_wait if requeue is None else min(requeue, evict_wait)
        return requeue

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        for pod in self.pods.cache.by_index(NODE_NAME_INDEX, node_name):
            cond = get_condition(pod, "Ready")
            if cond is None or cond.get("status") == "False" or is_deleting(pod):
                continue
            updated = copy.deepcopy(pod)
            for c in updated["status"]["conditions"]:
                if c.get("type") == "Ready":
                    c.update({"status": "False", "lastTransitionTime": now_rfc3339()})
            await self.write_status(PODS, pod, updated["status"])

    async def _evict(self, node_name: str, no_execute: list[Obj], now: datetime) -> float | None:
        if not no_execute:
            return None
        soonest: float | None = None
        for pod in self.pods.cache.by_index(NODE_NAME_INDEX, node_name):
            if is_deleting(pod) or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            tolerations = (pod.get("spec") or {}).get("tolerations") or []
            evict_at: datetime | None = None
            for raw in no_execute:
                taint = Taint(raw.get("key", ""), raw.get("value", "") or "", "NoExecute")
                matching = [t for t in tolerations if tolerates(t, taint)]
                added = _time(raw.get("timeAdded")) or now
                if not matching:
                    evict_at = now
                    break
                limits = [t.get("tolerationSeconds") for t in matching]
                if any(limit is None for limit in limits):
                    continue  # tolerated forever
                at = added + timedelta(seconds=max(0, min(int(x) for x in limits)))
                evict_at = at if evict_at is None else min(evict_at, at)
            if evict_at is None:
                continue
            wait = (evict_at - now).total_seconds()
            if wait > 0:
                soonest = wait if soonest is None else min(soonest, wait)
                continue
            log.info("evicting pod %s/%s from node %s (NoExecute taint)", namespace_of(pod), name_of(pod), node_name)
            try:
                await self.client.delete(PODS, name_of(pod), namespace_of(pod), preconditions={"uid": uid_of(pod)})
            except ApiError as e:
                if e.code not in (404, 409):
                    raise
        return None if soonest is None else soonest + 0.05

    async def _write(self, resource: Resource, obj: Obj) -> None:
        try:
            await self.client.update(resource, obj)
        except ApiError as e:
            if e.code != 404:
                raise
