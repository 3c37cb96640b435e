"""The Deployment controller: roll ReplicaSets towards the deployment's pod template.

Each reconcile of a Deployment (upstream's syncDeployment, reduced to what clients observe):

- claims ReplicaSets by selector (adopt orphans, release strays) — the ones it controls are
  what ``kubectl rollout history`` lists;
- finds the *new* ReplicaSet: the one whose template equals the deployment's, ignoring the
  ``pod-template-hash`` label. A missing one is created as ``<name>-<hash>`` with the hash in
  its labels, selector and template, and ``deployment.kubernetes.io/revision`` set to one
  more than any existing revision; an old one that matches again (``rollout undo``) gets the
  next revision instead, so the revision history stays monotonic;
- scales: ``RollingUpdate`` brings the new set up by at most ``maxSurge`` over the desired
  count and old sets down while keeping ``replicas - maxUnavailable`` available (ints or
  percentages; surge rounds up, unavailable down, both zero means one unavailable);
  ``Recreate`` scales old sets to zero, waits for their pods to be gone, then scales the new
  one up. A paused deployment is only scaled, never rolled;
- a *scaling event* — an active ReplicaSet whose ``desired-replicas`` annotation differs from
  ``spec.replicas`` — is handled before any rollout step, as upstream's sync/scale() does: with
  one active set it takes the whole count; with several (a rollout in progress or paused) the
  change ``spec.replicas + maxSurge - sum(replicas)`` is shared out in proportion to each set's
  size against the ``max-replicas`` it was last scaled for (rounded half away from zero,
  largest set first, newer first on ties when growing and older first when shrinking), and the
  largest set takes the rounding leftover. Every scale stamps ``desired-replicas`` and
  ``max-replicas`` on the ReplicaSet, which is what the next scaling event measures from;
- prunes old ReplicaSets at zero replicas beyond ``revisionHistoryLimit``;
- writes status — replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas, observedGeneration, collisionCount — with the ``Available`` and
  ``Progressing`` conditions in upstream's wording (reasons NewReplicaSetCreated,
  FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded,
  DeploymentPaused, DeploymentResumed), which ``kubectl rollout status`` and ``helm --wait``
  read.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Hashable
from typing import cast

from k3py.api.errors import ApiError
from k3py.api.meta import parse_rfc3339
from k3py.client.controller import Controller
from k3py.client.informer import (
    ORPHAN_INDEX,
    OWNER_UID_INDEX,
    InformerFactory,
    index_by_owner_uid,
    index_orphans,
)
from k3py.client.interface import DEPLOYMENTS, PODS, REPLICASETS, Client
from k3py.server.controllers.common import (
    Obj,
    controller_ref,
    get_condition,
    int_or_percent,
    is_deleting,
    meta,
    name_of,
    owner_reference,
    pod_phase,
    selector_of,
    set_condition,
    timestamp_of,
    uid_of,
    utcnow,
)
from k3py.server.controllers.podowner import (
    FactsCache,
    OwnedFacts,
    claim,
    claim_candidates,
    owner_recheck,
)

log = logging.getLogger("k3py.controllers.deployment")

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations never copied onto its ReplicaSets (upstream's skip list).
_NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
               DESIRED_REPLICAS, MAX_REPLICAS}
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """A short, stable, DNS-safe hash of a pod template (the pod-template-hash label value)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    value = str(_fnv32a(data))
    # Map digits through a vowel-free alphabet, as upstream's SafeEncodeString does.
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in value)


def _drop_nulls(value: object) -> object:
    """JSON nulls removed: a typed Kubernetes object cannot tell null from absent
    (``kubectl rollout undo`` sends ``creationTimestamp: null`` inside the template)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _strip_hash(template: Obj) -> Obj:
    t = cast(Obj, _drop_nulls(template or {}))
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def templates_equal(rs_template: Obj, d_template: Obj) -> bool:
    return _strip_hash(rs_template) == _strip_hash(d_template)


def revision_of(obj: Obj) -> int:
    try:
        return int((meta(obj).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def replicas_of(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _status(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def max_surge_unavailable(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas as upstream does."""
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    ru = strategy.get("rollingUpdate") or {}
    desired = replicas_of(d)
    surge = int_or_percent(ru.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = int_or_percent(ru.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, desired)


def new_rs_replicas(d: Obj, all_rs: list[Obj], new_rs: Obj) -> int:
    """How many replicas the new ReplicaSet may have now (rolling update's surge budget)."""
    desired = replicas_of(d)
    if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
        return desired
    surge, _ = max_surge_unavailable(d)
    current = sum(replicas_of(rs) for rs in all_rs)
    max_total = desired + surge
    if current >= max_total:
        return replicas_of(new_rs)
    scale_up = min(max_total - current, desired - replicas_of(new_rs))
    return replicas_of(new_rs) + max(0, scale_up)


def _annotation_int(obj: Obj, name: str) -> int | None:
    try:
        return int((meta(obj).get("annotations") or {})[name])
    except (KeyError, TypeError, ValueError):
        return None


def _round_half_away(value: float) -> int:
    """Go's math.Round: halves go away from zero (Python's round() goes to even)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def is_scaling_event(d: Obj, all_rs: list[Obj]) -> bool:
    """Was ``spec.replicas`` changed since an active ReplicaSet was last scaled for it?"""
    desired = replicas_of(d)
    for rs in all_rs:
        if replicas_of(rs) > 0:
            annotated = _annotation_int(rs, DESIRED_REPLICAS)
            if annotated is not None and annotated != desired:
                return True
    return False


def replica_set_fraction(rs: Obj, d: Obj) -> int:
    """How many replicas ``rs`` gains (or loses) when the deployment's size changes: its size
    scaled by the ratio of the new max-replicas to the one it was last scaled for."""
    desired = replicas_of(d)
    if desired == 0:
        return -replicas_of(rs)
    surge, _ = max_surge_unavailable(d)
    before = _annotation_int(rs, MAX_REPLICAS)
    if not before:
        # Scaled by hand (no annotation): fall back on the deployment's current size.
        before = _status(d, "replicas")
    if before <= 0:
        return 0
    return _round_half_away(replicas_of(rs) * (desired + surge) / before) - replicas_of(rs)


def proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """``rs``'s share of ``to_add``, never overshooting what is left of it after ``added``."""
    if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_sizes(d: Obj, active: list[Obj]) -> list[tuple[Obj, int]]:
    """New sizes for the active ReplicaSets of a rolling deployment scaled mid-rollout
    (upstream's scale(): largest first, the rounding leftover to the largest)."""
    total = sum(replicas_of(rs) for rs in active)
    surge, _ = max_surge_unavailable(d)
    allowed = replicas_of(d) + surge if replicas_of(d) > 0 else 0
    to_add = allowed - total
    ordered = sorted(active, key=lambda rs: (timestamp_of(rs), name_of(rs)), reverse=to_add > 0)
    ordered.sort(key=replicas_of, reverse=True)  # stable: ties keep newer (up) or older (down) first
    sizes: list[tuple[Obj, int]] = []
    added = 0
    for rs in ordered:
        share = proportion(rs, d, to_add, added)
        sizes.append((rs, replicas_of(rs) + share))
        added += share
    if sizes and to_add:
        largest, size = sizes[0]
        sizes[0] = (largest, max(0, size + to_add - added))
    return sizes


class DeploymentController(Controller):
    """See the module docstring."""

    name = "deployment"
    workers = 4

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.deployments = informers.informer(DEPLOYMENTS)
        self.replicasets = informers.informer(REPLICASETS, {OWNER_UID_INDEX: index_by_owner_uid,
                                                            ORPHAN_INDEX: index_orphans})
        self.rs_facts: FactsCache[OwnedFacts] = FactsCache(OwnedFacts, self.replicasets.cache)
        self.pods = informers.informer(PODS, {OWNER_UID_INDEX: index_by_owner_uid})
        self.deployments.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.replicasets.add_handler(self._rs_changed, self._rs_updated, self._rs_changed)
        # Recreate waits for old pods to disappear; their deletion must wake the deployment.
        self.pods.add_handler(on_delete=self._pod_deleted)

    def _rs_changed(self, rs: Obj) -> None:
        ref = controller_ref(rs)
        if ref is not None:
            if ref.get("kind") == "Deployment":
                self.queue.add(f"{namespace_key(rs)}/{ref.get('name')}")
            return
        labels = meta(rs).get("labels") or {}
        for d in self.deployments.cache.list(meta(rs).get("namespace", "")):
            sel = selector_of(d)
            if sel is not None and not sel.empty and sel.matches(labels):
                self.enqueue(d)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        self.rs_facts.forget(old)
        self._rs_changed(new)

    def _pod_deleted(self, pod: Obj) -> None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.cache.get_by_name(namespace_key(pod), str(ref.get("name")))
        if rs is not None:
            self._rs_changed(rs)

    # -- claiming ---------------------------------------------------------------------------

    async def claim_replicasets(self, d: Obj) -> list[Obj]:
        """The ReplicaSets ``d`` controls after adopting matching orphans and releasing strays
        (:func:`~k3py.server.controllers.podowner.claim`)."""
        return await claim(self.client, REPLICASETS, d, owner_reference(d, "apps/v1", "Deployment"), selector_of(d),
                           claim_candidates(self.replicasets.cache, d), self.rs_facts.of,
                           can_adopt=owner_recheck(self.client, DEPLOYMENTS, d))

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> float | None:
        cached = self.deployments.cache.get(str(key))
        if cached is None or is_deleting(cached):
            return None
        d = copy.deepcopy(cached)  # never mutate the informer's copy
        spec = d.get("spec") or {}
        status = copy.deepcopy(d.get("status") or {})
        sel = selector_of(d)
        if sel is None or sel.empty:
            # Upstream refuses to act on an empty selector; it only records that it saw it.
            status["observedGeneration"] = meta(d).get("generation", 1)
            await self.write_status(DEPLOYMENTS, d, status)
            return None
        all_rs = await self.claim_replicasets(d)
        new_rs, old_rs = self._split(d, all_rs)
        paused = bool(spec.get("paused"))
        created = False
        if paused:
            self._paused_condition(d, status)
            await self._scale_to_spec(d, new_rs, old_rs)
        elif is_scaling_event(d, all_rs):
            # Resize what exists first (no new ReplicaSet yet, as upstream's sync()); the
            # rollout continues on the next pass, which the ReplicaSet updates trigger.
            self._resumed_condition(d, status)
            if new_rs is not None:
                new_rs, _ = await self._ensure_new_rs(d, new_rs, old_rs, status)
            await self._scale_to_spec(d, new_rs, old_rs)
        else:
            self._resumed_condition(d, status)
            new_rs, created = await self._ensure_new_rs(d, new_rs, old_rs, status)
            if new_rs is not None:
                all_rs = [*old_rs, new_rs]
                if (spec.get("strategy") or {}).get("type") == "Recreate":
                    await self._recreate(d, new_rs, old_rs)
                else:
                    await self._rolling(d, new_rs, old_rs)
        await self._cleanup(d, old_rs)
        return await self._sync_status(d, new_rs, [*old_rs, *([new_rs] if new_rs else [])], status, created)

    def _split(self, d: Obj, all_rs: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        template = (d.get("spec") or {}).get("template") or {}
        matching = sorted((rs for rs in all_rs if templates_equal((rs.get("spec") or {}).get("template") or {}, template)),
                          key=lambda rs: (timestamp_of(rs), name_of(rs)))
        new_rs = matching[0] if matching else None
        return new_rs, [rs for rs in all_rs if rs is not new_rs]

    def _paused_condition(self, d: Obj, status: Obj) -> None:
        cond = get_condition({"status": status}, "Progressing")
        if cond is not None and cond.get("reason") != "DeploymentPaused":
            set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", with_update_time=True)

    def _resumed_condition(self, d: Obj, status: Obj) -> None:
        cond = get_condition({"status": status}, "Progressing")
        if cond is not None and cond.get("reason") == "DeploymentPaused":
            set_condition(status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", with_update_time=True)

    async def _ensure_new_rs(self, d: Obj, new_rs: Obj | None, old_rs: list[Obj], status: Obj) -> tuple[Obj | None, bool]:
        """The new ReplicaSet with its revision annotations current; created when missing."""
        max_old = max((revision_of(rs) for rs in old_rs), default=0)
        d_annotations = dict(meta(d).get("annotations") or {})
        if new_rs is not None:
            annotations = dict(meta(new_rs).get("annotations") or {})
            wanted = dict(annotations)
            if revision_of(new_rs) <= max_old:
                old_rev = annotations.get(REVISION)
                wanted[REVISION] = str(max_old + 1)
                if old_rev:
                    history = [h for h in (annotations.get(REVISION_HISTORY) or "").split(",") if h]
                    wanted[REVISION_HISTORY] = ",".join([*history, old_rev])
            for k, v in d_annotations.items():
                if k not in _NOT_COPIED:
                    wanted[k] = v
            if wanted != annotations:
                new_rs = await self.client.update(REPLICASETS, {**new_rs, "metadata": {**meta(new_rs), "annotations": wanted}})
            await self._set_deployment_revision(d, wanted[REVISION] if REVISION in wanted else str(max_old + 1))
            if get_condition({"status": status}, "Progressing") is None:
                set_condition(status, "Progressing", "True", "FoundNewReplicaSet",
                              f'Found new replica set "{name_of(new_rs)}"', with_update_time=True)
            return new_rs, False
        collision = int(status.get("collisionCount") or 0)
        template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
        hash_value = template_hash(template, collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = hash_value
        selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = hash_value
        annotations = {k: v for k, v in d_annotations.items() if k not in _NOT_COPIED}
        surge, _ = max_surge_unavailable(d)
        annotations.update({REVISION: str(max_old + 1), DESIRED_REPLICAS: str(replicas_of(d)),
                            MAX_REPLICAS: str(replicas_of(d) + surge)})
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name_of(d)}-{hash_value}",
                "namespace": namespace_key(d),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_reference(d, "apps/v1", "Deployment")],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": int((d.get("spec") or {}).get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        rs["spec"]["replicas"] = new_rs_replicas(d, old_rs, rs)
        try:
            created = await self.client.create(REPLICASETS, rs, namespace_key(d))
            if replicas_of(created):
                self.recorder.record(d, "Normal", "ScalingReplicaSet",
                                     f"Scaled up replica set {name_of(created)} from 0 to {replicas_of(created)}",
                                     kind="Deployment", api_version="apps/v1")
        except ApiError as e:
            if e.code != 409:
                raise
            # Someone holds the name: ours if it has our template (cache lag), else a collision.
            existing = await self.client.get(REPLICASETS, rs["metadata"]["name"], namespace_key(d))
            if is_controlled(existing, uid_of(d)) and templates_equal(existing["spec"]["template"], template):
                return existing, False
            status["collisionCount"] = collision + 1
            await self.write_status(DEPLOYMENTS, d, status)
            raise
        await self._set_deployment_revision(d, str(max_old + 1))
        set_condition(status, "Progressing", "True", "NewReplicaSetCreated",
                      f'Created new replica set "{name_of(created)}"', with_update_time=True, refresh=True)
        return created, True

    async def _set_deployment_revision(self, d: Obj, revision: str) -> None:
        if (meta(d).get("annotations") or {}).get(REVISION) == revision:
            return
        patch = {"metadata": {"annotations": {REVISION: revision}, "resourceVersion": meta(d).get("resourceVersion")}}
        updated = await self.client.patch(DEPLOYMENTS, name_of(d), patch, namespace_key(d))
        d["metadata"] = updated["metadata"]

    async def _scale(self, rs: Obj, replicas: int, d: Obj) -> Obj:
        surge, _ = max_surge_unavailable(d)
        annotations = dict(meta(rs).get("annotations") or {})
        wanted = dict(annotations, **{DESIRED_REPLICAS: str(replicas_of(d)), MAX_REPLICAS: str(replicas_of(d) + surge)})
        if replicas_of(rs) == replicas and wanted == annotations:
            return rs
        updated = {**rs, "metadata": {**meta(rs), "annotations": wanted}, "spec": {**(rs.get("spec") or {}), "replicas": replicas}}
        if int(updated["spec"].get("minReadySeconds") or 0) != int((d.get("spec") or {}).get("minReadySeconds") or 0):
            updated["spec"]["minReadySeconds"] = int((d.get("spec") or {}).get("minReadySeconds") or 0)
        result = await self.client.update(REPLICASETS, updated)
        before = replicas_of(rs)
        if before != replicas:
            direction = "up" if replicas > before else "down"
            self.recorder.record(d, "Normal", "ScalingReplicaSet",
                                 f"Scaled {direction} replica set {name_of(rs)} from {before} to {replicas}",
                                 kind="Deployment", api_version="apps/v1")
        return result

    async def _scale_to_spec(self, d: Obj, new_rs: Obj | None, old_rs: list[Obj]) -> None:
        """Follow a change of spec.replicas without rolling (paused, or a scaling event)."""
        active = [rs for rs in [*old_rs, *([new_rs] if new_rs else [])] if replicas_of(rs) > 0]
        if len(active) <= 1:
            # One active set takes the whole count; with none, the newest one does.
            target = active[0] if active else new_rs or max(old_rs, key=lambda rs: (timestamp_of(rs), name_of(rs)), default=None)
            if target is not None and replicas_of(target) != replicas_of(d):
                await self._scale(target, replicas_of(d), d)
            return
        if new_rs is not None and is_saturated(d, new_rs):
            for rs in old_rs:
                if replicas_of(rs) > 0:
                    await self._scale(rs, 0, d)
            return
        if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            return  # upstream leaves a Recreate deployment's sets to the rollout
        for rs, size in proportional_sizes(d, active):
            await self._scale(rs, size, d)

    async def _rolling(self, d: Obj, new_rs: Obj, old_rs: list[Obj]) -> None:
        desired = replicas_of(d)
        all_rs = [*old_rs, new_rs]
        # Scale the new set up (within the surge budget) or down (if above desired).
        if replicas_of(new_rs) > desired:
            new_rs = await self._scale(new_rs, desired, d)
        elif replicas_of(new_rs) < desired:
            new_rs = await self._scale(new_rs, new_rs_replicas(d, all_rs, new_rs), d)
        all_rs = [*old_rs, new_rs]
        old_total = sum(replicas_of(rs) for rs in old_rs)
        if old_total == 0:
            return
        _, max_unavailable = max_surge_unavailable(d)
        min_available = desired - max_unavailable
        all_pods = sum(replicas_of(rs) for rs in all_rs)
        new_unavailable = replicas_of(new_rs) - _status(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        # First drop old replicas that are not available anyway (no availability is lost).
        old_sorted = sorted(old_rs, key=lambda rs: (timestamp_of(rs), name_of(rs)))
        cleaned = 0
        for i, rs in enumerate(old_sorted):
            if cleaned >= max_scaled_down:
                break
            unhealthy = replicas_of(rs) - _status(rs, "availableReplicas")
            if replicas_of(rs) == 0 or unhealthy <= 0:
                continue
            take = min(unhealthy, max_scaled_down - cleaned)
            old_sorted[i] = await self._scale(rs, replicas_of(rs) - take, d)
            cleaned += take
        # Then scale down available old replicas while staying above minAvailable.
        available = sum(_status(rs, "availableReplicas") for rs in [*old_sorted, new_rs])
        budget = min(available - min_available, max_scaled_down - cleaned)
        for rs in old_sorted:
            if budget <= 0:
                break
            if replicas_of(rs) == 0:
                continue
            take = min(replicas_of(rs), budget)
            await self._scale(rs, replicas_of(rs) - take, d)
            budget -= take

    async def _recreate(self, d: Obj, new_rs: Obj, old_rs: list[Obj]) -> None:
        for rs in old_rs:
            if replicas_of(rs) != 0:
                await self._scale(rs, 0, d)
        # New pods wait until no old pod is left running (terminating ones still count).
        for rs in old_rs:
            for pod in self.pods.cache.by_index(OWNER_UID_INDEX, uid_of(rs)):
                if pod_phase(pod) not in ("Succeeded", "Failed"):
                    return
        if replicas_of(new_rs) != replicas_of(d):
            await self._scale(new_rs, replicas_of(d), d)

    async def _cleanup(self, d: Obj, old_rs: list[Obj]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        dead = [rs for rs in old_rs if replicas_of(rs) == 0 and _status(rs, "replicas") == 0 and not is_deleting(rs)]
        excess = len(dead) - limit
        if excess <= 0:
            return
        for rs in sorted(dead, key=lambda r: (revision_of(r), timestamp_of(r)))[:excess]:
            try:
                await self.client.delete(REPLICASETS, name_of(rs), namespace_key(rs), preconditions={"uid": uid_of(rs)})
            except ApiError as e:
                if e.code not in (404, 409):
                    raise

    async def _sync_status(self, d: Obj, new_rs: Obj | None, all_rs: list[Obj], status: Obj, created: bool) -> float | None:
        desired = replicas_of(d)
        old_status = d.get("status") or {}
        status.update({
            "observedGeneration": meta(d).get("generation", 1),
            "replicas": sum(_status(rs, "replicas") for rs in all_rs),
            "updatedReplicas": _status(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(_status(rs, "readyReplicas") for rs in all_rs),
            "availableReplicas": sum(_status(rs, "availableReplicas") for rs in all_rs),
        })
        status["unavailableReplicas"] = max(0, max(desired, status["replicas"]) - status["availableReplicas"])
        _, max_unavailable = max_surge_unavailable(d)
        if status["availableReplicas"] >= desired - max_unavailable:
            set_condition(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", with_update_time=True)
        else:
            set_condition(status, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", with_update_time=True)
        requeue = None
        spec = d.get("spec") or {}
        deadline = spec.get("progressDeadlineSeconds")
        deadline = 600 if deadline is None else int(deadline)
        if new_rs is not None and not spec.get("paused"):
            requeue = self._progressing(new_rs, status, old_status, desired, deadline, created)
        if not status.get("collisionCount"):
            status.pop("collisionCount", None)
        await self.write_status(DEPLOYMENTS, d, status)
        return requeue

    @staticmethod
    def _progressing(new_rs: Obj, status: Obj, old_status: Obj, desired: int, deadline: int,
                     created: bool) -> float | None:
        """Set the Progressing condition; returns when to check the deadline again."""
        rs_name = name_of(new_rs)
        complete = (status["updatedReplicas"] == desired and status["replicas"] == desired
                    and status["availableReplicas"] == desired)
        if complete:
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{rs_name}" has successfully progressed.', with_update_time=True)
            return None
        if created:
            return float(deadline) + 1  # NewReplicaSetCreated was just set
        progressed = any(int(status.get(f) or 0) > int(old_status.get(f) or 0)
                         for f in ("updatedReplicas", "readyReplicas", "availableReplicas"))
        progressed = progressed or int(status["replicas"]) < int(old_status.get("replicas") or 0)
        cond = get_condition({"status": status}, "Progressing")
        if progressed or cond is None:
            set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                          f'ReplicaSet "{rs_name}" is progressing.', with_update_time=True, refresh=True)
            return float(deadline) + 1
        if cond.get("reason") in ("ProgressDeadlineExceeded", "NewReplicaSetAvailable"):
            return None  # a finished rollout does not time out until it progresses again
        since = cond.get("lastUpdateTime") or cond.get("lastTransitionTime")
        try:
            elapsed = (utcnow() - parse_rfc3339(since)).total_seconds() if since else 0.0
        except ValueError:
            elapsed = 0.0
        if elapsed > deadline:
            set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                          f'ReplicaSet "{rs_name}" has timed out progressing.', with_update_time=True)
            return None
        return deadline - elapsed + 1


def is_saturated(d: Obj, rs: Obj) -> bool:
    """The new ReplicaSet runs the full, current count with every replica available."""
    desired = replicas_of(d)
    return (replicas_of(rs) == desired and _annotation_int(rs, DESIRED_REPLICAS) == desired
            and _status(rs, "availableReplicas") == desired)


def namespace_key(obj: Obj) -> str:
    return str(meta(obj).get("namespace", ""))


def is_controlled(obj: Obj, owner_uid: str) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner_uid
