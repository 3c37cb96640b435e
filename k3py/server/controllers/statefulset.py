"""The StatefulSet controller: pods with stable names, ordinals and claims.

Pod ``<set>-<i>`` for each ordinal i in [0, replicas) (``spec.ordinals.start`` shifts the
range), made from the template as every owner's pods are (upstream keeps the template's
annotations and finalizers and the ``<set>-`` generateName too), with hostname ``<set>-<i>``,
subdomain ``spec.serviceName``, labels ``statefulset.kubernetes.io/pod-name`` and
``apps.kubernetes.io/pod-index``, and one
PersistentVolumeClaim ``<template>-<set>-<i>`` per volumeClaimTemplate, created once. What
happens to claims follows ``spec.persistentVolumeClaimRetentionPolicy`` (default Retain/Retain):
``whenScaled: Delete`` deletes the claims of ordinals scaled away once their pod is gone;
``whenDeleted: Delete`` gives every claim an ownerReference to the StatefulSet, so the garbage
collector deletes them with it (the reference is removed again if the policy goes back to
Retain).

``OrderedReady`` (default): pod i is created only when every lower ordinal is Running and
Ready, and scale-down removes the highest ordinal first, one at a time, waiting for each to
be gone. ``Parallel`` creates and deletes without waiting.

``RollingUpdate`` (default) replaces pods whose ``controller-revision-hash`` is not the
current template's, from the highest ordinal down to ``partition``, one at a time and only
while all other pods are Ready; a deleted pod below the partition comes back at the current
(older) revision, as upstream. ``OnDelete`` waits for the user to delete pods. Template
history is kept in ControllerRevisions. Status: replicas, readyReplicas, availableReplicas,
currentReplicas, updatedReplicas, currentRevision, updateRevision, observedGeneration — what
``kubectl rollout status statefulset`` checks. Only pods named ``<set>-<ordinal>`` are members:
the set releases others it controls and never adopts them (upstream's isMemberOf).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Hashable

from k3py.api.errors import ApiError
from k3py.client.informer import InformerFactory
from k3py.client.interface import CONTROLLERREVISIONS, PVCS, STATEFULSETS, Client
from k3py.server.controllers.common import (
    Obj,
    available_in,
    is_deleting,
    is_pod_ready,
    meta,
    name_of,
    namespace_of,
    pod_phase,
    utcnow,
)
from k3py.server.controllers.podowner import PodOwnerController, pod_from_template
from k3py.server.controllers.revisions import (
    HASH_LABEL,
    POD_REVISION_LABEL,
    ensure_current_revision,
    hash_of,
    owned_revisions,
    prune_revisions,
    template_of,
)

log = logging.getLogger("k3py.controllers.statefulset")

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal_of(sts: Obj, pod: Obj) -> int | None:
    prefix = f"{name_of(sts)}-"
    name = name_of(pod)
    if not name.startswith(prefix) or not name[len(prefix):].isdigit():
        return None
    return int(name[len(prefix):])


def claim_name(template: Obj, sts: Obj, ordinal: int) -> str:
    return f"{name_of(template)}-{name_of(sts)}-{ordinal}"


def stateful_pod(sts: Obj, ordinal: int, revision_hash: str) -> Obj:
    """Pod ``<set>-<ordinal>`` from the set's template (upstream's newStatefulSetPod): its
    identity (name, hostname, subdomain, pod-name and pod-index labels), its revision label and
    a volume per claim template."""
    spec = sts.get("spec") or {}
    pod = pod_from_template(sts, "apps/v1", "StatefulSet")
    name = f"{name_of(sts)}-{ordinal}"
    pod["metadata"]["name"] = name
    pod["metadata"]["labels"].update({POD_REVISION_LABEL: revision_hash, POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal)})
    pod_spec = pod["spec"]  # a fresh top level over the template's values: replace, never mutate, them
    pod_spec["hostname"] = name
    if spec.get("serviceName"):
        pod_spec["subdomain"] = spec["serviceName"]
    volumes = list(pod_spec.get("volumes") or [])
    for claim in spec.get("volumeClaimTemplates") or ():
        cname = name_of(claim)
        volumes = [v for v in volumes if v.get("name") != cname]
        volumes.append({"name": cname, "persistentVolumeClaim": {"claimName": claim_name(claim, sts, ordinal)}})
    if volumes:
        pod_spec["volumes"] = volumes
    return pod


class StatefulSetController(PodOwnerController):
    """See the module docstring."""

    name = "statefulset"
    workers = 2
    owner_resource = STATEFULSETS
    owner_kind = "StatefulSet"

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.revisions = informers.informer(CONTROLLERREVISIONS)
        self.claims = informers.informer(PVCS)

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        sts = self.live_owner(key)
        if sts is None:
            return None
        spec = sts.get("spec") or {}
        revisions = owned_revisions(self.revisions.cache.list(namespace_of(sts)), meta(sts).get("uid", ""))
        current_rev, revisions = await ensure_current_revision(self.client, sts, "StatefulSet", revisions)
        update_hash = hash_of(spec.get("template") or {})
        # Only pods named <set>-<ordinal> are members (others are released, never adopted).
        pods = await self.claim_pods(sts, member=lambda facts: ordinal_of(sts, facts.obj) is not None)
        replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        start = int((spec.get("ordinals") or {}).get("start") or 0)
        wanted = set(range(start, start + replicas))
        by_ordinal: dict[int, Obj] = {}
        for pod in pods:
            ordinal = ordinal_of(sts, pod)
            if ordinal is not None:
                by_ordinal[ordinal] = pod
        parallel = spec.get("podManagementPolicy") == "Parallel"
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = utcnow()

        def healthy(pod: Obj | None) -> bool:
            return pod is not None and not is_deleting(pod) and pod_phase(pod) == "Running" and is_pod_ready(pod)

        status = dict(sts.get("status") or {})
        update_revision = name_of(current_rev)
        current_revision = status.get("currentRevision") or update_revision
        if self.expectations.satisfied(key):
            older = next((r for r in revisions if name_of(r) == current_revision and r is not current_rev
                          and (meta(r).get("labels") or {}).get(HASH_LABEL) != update_hash), None)
            await self._step(key, sts, by_ordinal, wanted, parallel, update_hash, healthy,
                             self._recreate_as(sts, older, int(status.get("currentReplicas") or 0)))

        # Status.
        active = [p for p in by_ordinal.values() if not is_deleting(p)]
        ready = [p for p in active if is_pod_ready(p)]
        available = [p for p in active if available_in(p, min_ready, now) == 0]
        updated = [p for p in active if (meta(p).get("labels") or {}).get(POD_REVISION_LABEL) == update_hash]
        if len(updated) == replicas and len(active) == replicas:
            current_revision = update_revision
        current_hash = next((((meta(r).get("labels") or {}).get(HASH_LABEL)) for r in revisions
                             if name_of(r) == current_revision), update_hash)
        status.update({
            "observedGeneration": meta(sts).get("generation", 1),
            "replicas": len(active),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "currentReplicas": sum(1 for p in active if (meta(p).get("labels") or {}).get(POD_REVISION_LABEL) == current_hash),
            "updatedReplicas": len(updated),
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": int(status.get("collisionCount") or 0),
        })
        for zero in ("readyReplicas", "currentReplicas", "updatedReplicas"):
            if not status.get(zero):
                status.pop(zero, None)
        await self.write_status(STATEFULSETS, sts, status)
        in_use = {(meta(p).get("labels") or {}).get(POD_REVISION_LABEL, "") for p in pods}
        await prune_revisions(self.client, sts, revisions, in_use | {update_hash, current_hash})
        await self._apply_retention(sts, wanted, by_ordinal)
        waiting = [w for p in active if (w := available_in(p, min_ready, now))]
        return min(waiting) + 0.05 if waiting else None

    @staticmethod
    def _recreate_as(sts: Obj, current: Obj | None, current_replicas: int) -> Callable[[int], tuple[Obj, str] | None]:
        """Which older revision a missing ordinal is created from, if not the update revision.

        Upstream's rule: during a RollingUpdate, ordinals below the partition — or, without a
        rollingUpdate block, below ``status.currentReplicas`` — come back at the current
        revision, so deleting such a pod never updates it behind the partition's back.
        """
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if current is None or strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return lambda _ordinal: None
        rolling = strategy.get("rollingUpdate")
        limit = int((rolling or {}).get("partition") or 0) if rolling is not None else current_replicas
        older = {**sts, "spec": {**(sts.get("spec") or {}), "template": template_of(current)}}
        older_hash = str((meta(current).get("labels") or {}).get(HASH_LABEL, ""))
        return lambda ordinal: (older, older_hash) if ordinal < limit else None

    async def _step(self, key: str, sts: Obj, by_ordinal: dict[int, Obj], wanted: set[int], parallel: bool,
                    update_hash: str, is_healthy: Callable[[Obj | None], bool],
                    recreate_as: Callable[[int], tuple[Obj, str] | None]) -> None:
        """One round of creates, deletes and updates, in the order the policy demands."""
        # Failed pods are recreated.
        for pod in list(by_ordinal.values()):
            if pod_phase(pod) == "Failed" and not is_deleting(pod):
                await self.delete_pods(key, [pod])
                return
        # Create missing ordinals, lowest first.
        for ordinal in sorted(wanted):
            pod = by_ordinal.get(ordinal)
            if pod is None:
                await self._ensure_claims(sts, ordinal)
                source, revision_hash = recreate_as(ordinal) or (sts, update_hash)
                await self.create_pod(key, stateful_pod(source, ordinal, revision_hash), tolerate=(409,))
                if not parallel:
                    return
            elif not parallel and not is_healthy(pod):
                return  # OrderedReady: wait for this ordinal before the next
        # Remove ordinals beyond the range, highest first.
        extra = sorted((o for o in by_ordinal if o not in wanted), reverse=True)
        if extra:
            if parallel:
                await self.delete_pods(key, [by_ordinal[o] for o in extra if not is_deleting(by_ordinal[o])])
                return
            pod = by_ordinal[extra[0]]
            if not is_deleting(pod) and all(is_healthy(by_ordinal[o]) for o in wanted if o in by_ordinal):
                await self.delete_pods(key, [pod])
            return
        # Rolling update from the highest ordinal down to the partition.
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        if any(is_deleting(p) for p in by_ordinal.values()):
            return
        for ordinal in sorted(wanted, reverse=True):
            if ordinal < partition:
                break
            pod = by_ordinal.get(ordinal)
            if pod is None:
                return
            if (meta(pod).get("labels") or {}).get(POD_REVISION_LABEL) != update_hash:
                others_ok = all(is_healthy(p) for o, p in by_ordinal.items() if o != ordinal and o in wanted)
                if others_ok or parallel:
                    await self.delete_pods(key, [pod])
                return
            if not is_healthy(pod):
                return  # wait for the updated pod, whatever the pod management policy (upstream)

    async def _apply_retention(self, sts: Obj, wanted: set[int], by_ordinal: dict[int, Obj]) -> None:
        """Carry out ``persistentVolumeClaimRetentionPolicy`` on this set's existing claims."""
        spec = sts.get("spec") or {}
        templates = spec.get("volumeClaimTemplates") or ()
        if not templates:
            return
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        delete_scaled = policy.get("whenScaled") == "Delete"
        owned_by_set = policy.get("whenDeleted") == "Delete"
        set_ref = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name_of(sts), "uid": meta(sts).get("uid", ""),
                   "controller": False, "blockOwnerDeletion": True}
        for claim in self.claims.cache.list(namespace_of(sts)):
            ordinal = self._claim_ordinal(sts, templates, claim)
            if ordinal is None or is_deleting(claim):
                continue
            if ordinal not in wanted:
                if delete_scaled and ordinal not in by_ordinal:
                    try:
                        await self.client.delete(PVCS, name_of(claim), namespace_of(claim),
                                                 preconditions={"uid": meta(claim).get("uid", "")})
                    except ApiError as e:
                        if e.code not in (404, 409):
                            raise
                continue
            refs = list(meta(claim).get("ownerReferences") or [])
            has_ref = any(r.get("uid") == set_ref["uid"] for r in refs)
            if owned_by_set != has_ref:
                refs = [*refs, set_ref] if owned_by_set else [r for r in refs if r.get("uid") != set_ref["uid"]]
                patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": meta(claim).get("resourceVersion")}}
                try:
                    await self.client.patch(PVCS, name_of(claim), patch, namespace_of(claim))
                except ApiError as e:
                    if e.code not in (404, 409):
                        raise

    @staticmethod
    def _claim_ordinal(sts: Obj, templates: list[Obj] | tuple[Obj, ...], claim: Obj) -> int | None:
        """The ordinal a claim named ``<template>-<set>-<i>`` belongs to, if it is one of ours."""
        name = name_of(claim)
        for template in templates:
            prefix = f"{name_of(template)}-{name_of(sts)}-"
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                return int(name[len(prefix):])
        return None

    async def _ensure_claims(self, sts: Obj, ordinal: int) -> None:
        labels = dict((((sts.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {})
        for template in (sts.get("spec") or {}).get("volumeClaimTemplates") or ():
            claim = copy.deepcopy(template)
            claim["apiVersion"] = "v1"
            claim["kind"] = "PersistentVolumeClaim"
            claim_meta = claim.setdefault("metadata", {})
            claim_meta["name"] = claim_name(template, sts, ordinal)
            claim_meta["namespace"] = namespace_of(sts)
            claim_meta["labels"] = {**labels, **(claim_meta.get("labels") or {})}
            claim.pop("status", None)
            try:
                await self.client.create(PVCS, claim, namespace_of(sts))
            except ApiError as e:
                if e.code != 409:
                    raise
