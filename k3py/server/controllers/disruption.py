"""The disruption controller: PodDisruptionBudget status.

For each PodDisruptionBudget (policy/v1) it looks at the pods its selector matches in its
namespace (not finished). ``currentHealthy`` counts those Ready and not being deleted. What
the budget is measured against follows upstream:

- an integer ``minAvailable``: the matching pods are ``expectedPods``, ``desiredHealthy`` is
  the integer;
- ``maxUnavailable`` or a percentage ``minAvailable``: ``expectedPods`` is the *scale* of the
  pods' controllers — ``spec.replicas`` of each distinct ReplicaSet (or the Deployment that
  controls it), StatefulSet or ReplicationController — so surge pods of a rollout do not raise
  the bar; percentages round up. Pods without a controller are left out (warning event
  ``UnmanagedPods``); a pod whose controller has no scale makes the status fail safe:
  ``disruptionsAllowed`` 0 and condition DisruptionAllowed False/SyncFailed.

``disruptionsAllowed`` is ``currentHealthy - desiredHealthy`` (never negative); the
``DisruptionAllowed`` condition says True/SufficientPods or False/InsufficientPods, and
``observedGeneration`` tracks the spec — the API server's eviction subresource consults this
status before evicting.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable

from k3py.api.errors import ApiError
from k3py.api.selectors import SelectorError, label_selector_from_dict
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS, Client, Resource
from k3py.server.controllers.common import (
    Obj,
    controller_ref,
    int_or_percent,
    is_deleting,
    is_pod_ready,
    meta,
    name_of,
    namespace_of,
    pod_phase,
    set_condition,
    uid_of,
)

log = logging.getLogger("k3py.controllers.disruption")

PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
RCS = Resource("", "v1", "replicationcontrollers", "ReplicationController")
# Pod controllers with a replica count, by kind (upstream's podControllerFinders).
SCALABLE: dict[str, Resource] = {"ReplicaSet": REPLICASETS, "Deployment": DEPLOYMENTS,
                                 "StatefulSet": STATEFULSETS, "ReplicationController": RCS}


def measured_by_scale(pdb: Obj) -> bool:
    """Is this budget measured against its controllers' scale (not the pods that exist)?"""
    spec = pdb.get("spec") or {}
    if spec.get("maxUnavailable") is not None:
        return True
    return spec.get("minAvailable") is not None and not isinstance(spec["minAvailable"], int)


class NoScale(Exception):
    """A matched pod's controller has no replica count to measure the budget against."""


def budget_numbers(pdb: Obj, expected: int, healthy: int) -> tuple[int, int]:
    """(desiredHealthy, disruptionsAllowed) for a budget over ``expected`` pods."""
    spec = pdb.get("spec") or {}
    if spec.get("minAvailable") is not None:
        desired = int_or_percent(spec["minAvailable"], expected, round_up=True)
    elif spec.get("maxUnavailable") is not None:
        desired = max(0, expected - int_or_percent(spec["maxUnavailable"], expected, round_up=True))
    else:
        desired = expected
    return desired, max(0, healthy - desired)


class DisruptionController(Controller):
    """See the module docstring."""

    name = "disruption"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.pdbs = informers.informer(PDBS)
        self.pods = informers.informer(PODS)
        self.pdbs.add_handler(self.enqueue, lambda _o, n: self.enqueue(n))
        self.pods.add_handler(self._pod, lambda _o, n: self._pod(n), self._pod)

    def _pod(self, pod: Obj) -> None:
        labels = meta(pod).get("labels") or {}
        for pdb in self.pdbs.cache.list(namespace_of(pod)):
            try:
                sel = label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if sel.matches(labels):
                self.enqueue(pdb)

    async def reconcile(self, key: Hashable) -> float | None:
        cached = self.pdbs.cache.get(str(key))
        if cached is None:
            return None
        pdb = copy.deepcopy(cached)
        try:
            sel = label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
        except SelectorError:
            return None
        pods = [p for p in self.pods.cache.list(namespace_of(pdb))
                if sel.matches(meta(p).get("labels") or {}) and pod_phase(p) not in ("Succeeded", "Failed")]
        healthy = sum(1 for p in pods if is_pod_ready(p) and not is_deleting(p))
        status = copy.deepcopy(pdb.get("status") or {})
        status["observedGeneration"] = meta(pdb).get("generation", 1)
        try:
            expected = await self._expected_scale(pdb, pods) if measured_by_scale(pdb) else len(pods)
        except NoScale as e:
            status["disruptionsAllowed"] = 0
            set_condition(status, "DisruptionAllowed", "False", "SyncFailed", str(e))
        else:
            desired, allowed = budget_numbers(pdb, expected, healthy)
            status.update({"expectedPods": expected, "currentHealthy": healthy, "desiredHealthy": desired,
                           "disruptionsAllowed": allowed})
            if allowed > 0:
                set_condition(status, "DisruptionAllowed", "True", "SufficientPods", "")
            else:
                set_condition(status, "DisruptionAllowed", "False", "InsufficientPods", "")
        for cond in status.get("conditions") or []:
            cond.setdefault("observedGeneration", meta(pdb).get("generation", 1))
        await self.write_status(PDBS, pdb, status)
        return None

    async def _expected_scale(self, pdb: Obj, pods: list[Obj]) -> int:
        """The summed replicas of the pods' distinct controllers (upstream's getExpectedScale)."""
        namespace = namespace_of(pdb)
        counted: dict[str, int] = {}  # uid of the scaled object (a Deployment counts once) -> replicas
        looked_up: set[str] = set()
        unmanaged: list[str] = []
        for pod in pods:
            ref = controller_ref(pod)
            if ref is None:
                unmanaged.append(name_of(pod))
                continue
            if str(ref.get("uid")) in looked_up:
                continue
            looked_up.add(str(ref.get("uid")))
            found = await self._scale_of(ref, namespace)
            if found is None:
                raise NoScale(f'found no controllers for pod "{name_of(pod)}"')
            counted[found[0]] = found[1]
        if unmanaged:
            self.recorder.record(pdb, "Warning", "UnmanagedPods",
                                 f"Pods selected by this PodDisruptionBudget (selector: {(pdb.get('spec') or {}).get('selector')}) "
                                 "were found to be unmanaged. As a result, the status of the PDB cannot be calculated "
                                 "correctly, which may result in undefined behavior. To account for these pods please "
                                 'set ".spec.minAvailable" field of the PDB to an integer value.',
                                 kind="PodDisruptionBudget", api_version="policy/v1")
        return sum(counted.values())

    async def _scale_of(self, ref: Obj, namespace: str) -> tuple[str, int] | None:
        """(uid of the object whose scale counts, its spec.replicas) for a pod's controller."""
        resource = SCALABLE.get(str(ref.get("kind")))
        if resource is None or str(ref.get("apiVersion")) != resource.api_version:
            return None
        try:
            owner = await self.client.get(resource, str(ref.get("name")), namespace)
        except ApiError as e:
            if e.code == 404:
                return None
            raise
        if uid_of(owner) != ref.get("uid"):
            return None
        if resource is REPLICASETS:
            parent = controller_ref(owner)
            if parent is not None and parent.get("kind") == "Deployment" and parent.get("apiVersion") == "apps/v1":
                found = await self._scale_of(parent, namespace)
                if found is not None:
                    return found
        replicas = (owner.get("spec") or {}).get("replicas")
        return uid_of(owner), 1 if replicas is None else int(replicas)
