"""The disruption controller: PodDisruptionBudget status.

For each PodDisruptionBudget (policy/v1) it counts the pods its selector matches in its
namespace (not finished, not being deleted): ``expectedPods``; those Ready: ``currentHealthy``.
``desiredHealthy`` is ``minAvailable`` (an int, or a percentage of expectedPods rounded up),
or ``expectedPods - maxUnavailable`` (percentage rounded up); ``disruptionsAllowed`` is
``currentHealthy - desiredHealthy`` (never negative). The ``DisruptionAllowed`` condition
says True/SufficientPods or False/InsufficientPods, and ``observedGeneration`` tracks the
spec — the API server's eviction subresource consults this status before evicting.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable

from k3py.api.errors import ApiError
from k3py.api.selectors import SelectorError, label_selector_from_dict
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import PODS, Client, Resource
from k3py.server.controllers.common import (
    Obj,
    int_or_percent,
    is_pod_active,
    is_pod_ready,
    meta,
    namespace_of,
    set_condition,
)

log = logging.getLogger("k3py.controllers.disruption")

PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")


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
                if sel.matches(meta(p).get("labels") or {}) and is_pod_active(p)]
        expected = len(pods)
        healthy = sum(1 for p in pods if is_pod_ready(p))
        desired, allowed = budget_numbers(pdb, expected, healthy)
        status = copy.deepcopy(pdb.get("status") or {})
        status.update({
            "observedGeneration": meta(pdb).get("generation", 1),
            "expectedPods": expected,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": allowed,
        })
        if allowed > 0:
            set_condition(status, "DisruptionAllowed", "True", "SufficientPods", "")
        else:
            set_condition(status, "DisruptionAllowed", "False", "InsufficientPods", "")
        for cond in status.get("conditions") or []:
            cond.setdefault("observedGeneration", meta(pdb).get("generation", 1))
        if status != (pdb.get("status") or {}):
            try:
                await self.client.update_status(PDBS, {**pdb, "status": status})
            except ApiError as e:
                if e.code != 404:
                    raise
        return None
