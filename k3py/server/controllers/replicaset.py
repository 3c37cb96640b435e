"""The ReplicaSet controller: keep ``spec.replicas`` active pods matching the selector.

Each reconcile of a ReplicaSet:

1. *claims* pods (upstream's ControllerRefManager): pods it controls that still match its
   selector are kept, controlled pods that no longer match are *released* (the ownerReference
   is removed), orphans that match and are not being deleted are *adopted*;
2. creates or deletes pods to reach ``spec.replicas`` — new pods get the template, a
   ``<name>-`` generateName and a controller ownerReference; surplus pods are deleted least
   valuable first (unscheduled before scheduled, pending before running, not-ready before
   ready, lower ``controller.kubernetes.io/pod-deletion-cost`` first, pods doubled up on a
   node first, ready for less time first, more restarts first, newest first);
3. writes status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
   minReadySeconds) and observedGeneration, then asks to be called again when a ready pod
   will become available.

Expectations keep it from acting twice on the same change before its pod cache catches up.

Cost at scale: a reconcile walks every pod of its owner, and every pod of a large owner changes
about three times on its way to Ready (created, bound, Running). Events that only change what
the status counts — pod updates, the owner's own status write, adds and deletes that do not yet
complete the owner's expectations — therefore wake an owner at most once per
``STATUS_SYNC_INTERVAL`` (immediately when it was not reconciled that recently, so a lone change
is seen at once); spec changes and the event completing the expectations wake it at once. Without that, a 2,000-pod ReplicaSet spends most of the control plane's CPU
re-counting the same pods for each of its 4,000 status changes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Hashable
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.selectors import LabelSelector, SelectorError, label_selector_from_dict
from k3py.client.controller import Controller
from k3py.client.informer import (
    ORPHAN_INDEX,
    OWNER_UID_INDEX,
    InformerFactory,
    index_by_owner_uid,
    index_orphans,
    object_key,
)
from k3py.client.interface import PODS, REPLICASETS, Client, Resource
from k3py.server.controllers.common import (
    Expectations,
    Obj,
    available_in,
    controller_ref,
    is_deleting,
    is_pod_active,
    is_pod_ready,
    meta,
    name_of,
    owner_reference,
    pod_phase,
    ready_since,
    selector_of,
    uid_of,
    utcnow,
)

log = logging.getLogger("k3py.controllers.replicaset")

# Creates per reconcile grow 1, 2, 4... (upstream's slow start) so a failing template
# does not produce a burst of doomed requests.
SLOW_START_INITIAL = 1
MAX_BURST = 500
# Upper bound on how often pod updates re-trigger one owner's reconcile (seconds); bounds the
# status lag under load and leaves it at zero when pods change rarely.
STATUS_SYNC_INTERVAL = 0.1


def _restart_count(pod: Obj) -> int:
    return sum(int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or ())


DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def deletion_cost(pod: Obj) -> int:
    """The pod-deletion-cost annotation (an int32; absent or invalid counts as 0)."""
    try:
        value = int(str((meta(pod).get("annotations") or {}).get(DELETION_COST, "0")).strip())
    except ValueError:
        return 0
    return value if -(2 ** 31) <= value < 2 ** 31 else 0


def deletion_rank(pod: Obj, colocated: int = 0) -> tuple[Any, ...]:
    """Sort key: the pod to delete first sorts first (upstream's ActivePodsWithRanks ordering):
    unscheduled, then pending, not ready, lower pod-deletion-cost, more of the owner's pods on
    the same node (``colocated``), ready for less time, more restarts, newer."""
    phase_order = {"Pending": 0, "Unknown": 1, "Running": 2}
    since = ready_since(pod)
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        phase_order.get(pod_phase(pod), 1),
        1 if is_pod_ready(pod) else 0,
        deletion_cost(pod),
        -colocated,
        # Ready more recently (a later timestamp) goes first: negate via reverse string order.
        "" if since is None else _invert(since.isoformat()),
        -_restart_count(pod),
        _invert(str(meta(pod).get("creationTimestamp") or "")),
    )


def least_valuable(pods: list[Obj], count: int) -> list[Obj]:
    """The ``count`` pods to delete first, ranking each by how many of ``pods`` share its node."""
    per_node: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            per_node[node] = per_node.get(node, 0) + 1

    def rank(pod: Obj) -> tuple[Any, ...]:
        return deletion_rank(pod, per_node.get((pod.get("spec") or {}).get("nodeName") or "", 0))
    return sorted(pods, key=rank)[:count]


def _invert(text: str) -> str:
    """A string that sorts in the reverse order of ``text`` (for mixed-direction sort keys)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def pod_from_template(owner: Obj, api_version: str, kind: str) -> Obj:
    """A new pod for ``owner`` (ReplicaSet, Job...) from its ``spec.template``."""
    template = (owner.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    pod_meta: Obj = {
        "generateName": f"{name_of(owner)}-",
        "namespace": meta(owner).get("namespace"),
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_reference(owner, api_version, kind)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": dict(template.get("spec") or {})}


def owner_of_deleted(pod: Obj, kind: str, api_version: str) -> Obj:
    """A minimal owner object (from the pod's controller reference) to attach an event to."""
    ref = controller_ref(pod) or {}
    return {"kind": kind, "apiVersion": api_version,
            "metadata": {"name": ref.get("name", ""), "namespace": meta(pod).get("namespace", ""), "uid": ref.get("uid", "")}}


class PodOwnerController(Controller):
    """Shared claim/adopt/release logic for controllers that own pods by selector."""

    owner_resource: Resource = REPLICASETS
    owner_kind = "ReplicaSet"

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.expectations = Expectations()
        self.owners = informers.informer(self.owner_resource)
        self.pods = informers.informer(PODS, {OWNER_UID_INDEX: index_by_owner_uid, ORPHAN_INDEX: index_orphans})
        self.owners.add_handler(self.enqueue, self._owner_updated, self._owner_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        # owner key -> event-loop time its last reconcile started (see STATUS_SYNC_INTERVAL)
        self._last_sync: dict[str, float] = {}

    def live_owner(self, key: str) -> Obj | None:
        """A private copy of the cached owner to reconcile, or None when there is nothing to do:
        the owner is gone (its expectations are forgotten) or is being deleted."""
        cached = self.owners.cache.get(key)
        if cached is None:
            self.expectations.forget(key)
            return None
        if is_deleting(cached):
            return None
        return copy.deepcopy(cached)

    def note_sync(self, key: str) -> None:
        """Record that ``key`` is being reconciled now (subclasses call it from reconcile)."""
        self._last_sync[key] = asyncio.get_running_loop().time()

    def _enqueue_observed(self, key: str) -> None:
        """Wake ``key`` for an observed add/delete: at once when that completes its expectations
        (the owner may act again), otherwise coalesced like a status change."""
        if self.expectations.satisfied(key):
            self.queue.add(key)
        else:
            self._enqueue_update(key)

    def _enqueue_update(self, key: str) -> None:
        """Wake ``key`` for a pod update, at most once per STATUS_SYNC_INTERVAL."""
        last = self._last_sync.get(key)
        if last is None:
            self.queue.add(key)
            return
        self.queue.add_after(key, last + STATUS_SYNC_INTERVAL - asyncio.get_running_loop().time())

    def owner_selector(self, owner: Obj) -> LabelSelector | None:
        """The owner's pod selector (a metav1.LabelSelector in ``spec.selector``)."""
        return selector_of(owner)

    def _owner_updated(self, old: Obj, new: Obj) -> None:
        # Only its status changed (typically our own write): nothing to act on, so coalesce.
        if (old.get("spec") == new.get("spec") and meta(old).get("generation") == meta(new).get("generation")
                and meta(old).get("labels") == meta(new).get("labels") and not is_deleting(new)):
            self._enqueue_update(object_key(new))
        else:
            self.enqueue(new)

    def _owner_deleted(self, obj: Obj) -> None:
        self.expectations.forget(object_key(obj))
        self.enqueue(obj)

    def _owner_key(self, pod: Obj) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != self.owner_kind:
            return None
        return f"{meta(pod).get('namespace')}/{ref.get('name')}"

    def _enqueue_matching_owners(self, pod: Obj) -> None:
        labels = meta(pod).get("labels") or {}
        for owner in self.owners.cache.list(meta(pod).get("namespace", "")):
            sel = self.owner_selector(owner)
            if sel is not None and not sel.empty and sel.matches(labels):
                self.enqueue(owner)

    def _pod_added(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.observed_add(key)
            self._enqueue_observed(key)
        elif not is_deleting(pod):
            self._enqueue_matching_owners(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key, old_key = self._owner_key(new), self._owner_key(old)
        if old_key is not None and old_key != key:
            self.queue.add(old_key)
        if key is not None:
            if old_key == key and not is_deleting(new):
                self._enqueue_update(key)
            else:
                self.queue.add(key)
        elif (meta(old).get("labels") != meta(new).get("labels")) and not is_deleting(new):
            self._enqueue_matching_owners(new)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.observed_delete(key)
            self._enqueue_observed(key)

    async def claim_pods(self, owner: Obj) -> list[Obj]:
        """The pods ``owner`` controls after adopting matching orphans and releasing strays."""
        sel = self.owner_selector(owner)
        owner_uid = uid_of(owner)
        namespace = meta(owner).get("namespace", "")
        claimed: list[Obj] = []
        # Only pods that reference this owner or have no controller can be claimed: walk the
        # two indexes instead of the whole namespace.
        owned = self.pods.cache.by_index(OWNER_UID_INDEX, owner_uid)
        orphans = self.pods.cache.by_index(ORPHAN_INDEX, namespace)
        candidates: Any = owned
        if orphans:  # rare: keyed merge only then (a pod can be in both while it is adopted)
            merged = {object_key(p): p for p in owned}
            merged.update((object_key(p), p) for p in orphans)
            candidates = merged.values()
        usable = sel is not None and not sel.empty
        for pod in candidates:
            ref = controller_ref(pod)
            matches = usable and sel.matches(meta(pod).get("labels") or {})  # type: ignore[union-attr]
            if ref is not None:
                if ref.get("uid") != owner_uid:
                    continue
                if matches:
                    claimed.append(pod)
                elif not is_deleting(owner):
                    await self._patch_owner_refs(pod, [r for r in meta(pod).get("ownerReferences") or () if r.get("uid") != owner_uid])
                continue
            if matches and not is_deleting(pod) and not is_deleting(owner):
                refs = [*(meta(pod).get("ownerReferences") or ()),
                        owner_reference(owner, self.owner_resource.api_version, self.owner_kind)]
                adopted = await self._patch_owner_refs(pod, refs)
                if adopted is not None:
                    claimed.append(adopted)
        return claimed

    async def _patch_owner_refs(self, pod: Obj, refs: list[Obj]) -> Obj | None:
        patch = {"metadata": {"ownerReferences": refs or None, "uid": uid_of(pod),
                              "resourceVersion": meta(pod).get("resourceVersion")}}
        try:
            return await self.client.patch(PODS, meta(pod)["name"], patch, meta(pod).get("namespace", ""))
        except ApiError as e:
            if e.code in (404, 409, 422):
                return None  # gone or changed: the next reconcile sees the new state
            raise

    async def create_pods(self, key: str, owner: Obj, count: int) -> None:
        """Create ``count`` pods in slow-start batches, recording expectations first."""
        namespace = meta(owner).get("namespace", "")
        self.expectations.expect(key, adds=count)
        created = 0
        batch = SLOW_START_INITIAL
        while created < count:
            size = min(batch, count - created)
            results = await asyncio.gather(
                *(self.client.create(PODS, pod_from_template(owner, self.owner_resource.api_version, self.owner_kind), namespace)
                  for _ in range(size)),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            created += size
            for r in results:
                if isinstance(r, dict):
                    self._event(owner, "Normal", "SuccessfulCreate", f"Created pod: {name_of(r)}")
            if errors:
                self._event(owner, "Warning", "FailedCreate", f"Error creating: {getattr(errors[0], 'message', errors[0])}")
                # Those pods will never be observed; lower the expectation for them and the rest.
                for _ in range(len(errors) + count - created):
                    self.expectations.observed_add(key)
                raise errors[0]
            batch = min(batch * 2, MAX_BURST)

    async def delete_pods(self, key: str, pods: list[Obj]) -> set[str]:
        """Delete ``pods`` concurrently; returns the uids this call deleted (or found gone)."""
        self.expectations.expect(key, deletes=len(pods))
        gone: set[str] = set()
        results = await asyncio.gather(
            *(self.client.delete(PODS, name_of(p), meta(p).get("namespace", ""),
                                 preconditions={"uid": uid_of(p)}) for p in pods),
            return_exceptions=True,
        )
        for pod, r in zip(pods, results, strict=True):
            if isinstance(r, BaseException):
                self.expectations.observed_delete(key)
                if isinstance(r, ApiError) and r.code == 404:
                    gone.add(uid_of(pod))
                elif not (isinstance(r, ApiError) and r.code == 409):
                    raise r
            else:
                gone.add(uid_of(pod))
                self._event(owner_of_deleted(pod, self.owner_kind, self.owner_resource.api_version), "Normal",
                            "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
        return gone

    def _event(self, owner: Obj, event_type: str, reason: str, message: str) -> None:
        self.recorder.record(owner, event_type, reason, message, kind=self.owner_kind,
                             api_version=self.owner_resource.api_version)


class ReplicaSetController(PodOwnerController):
    """See the module docstring."""

    name = "replicaset"
    workers = 4

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        rs = self.owners.cache.get(key)
        if rs is None:
            self.expectations.forget(key)
            self._last_sync.pop(key, None)
            return None
        self.note_sync(key)
        pods = [p for p in await self.claim_pods(rs) if is_pod_active(p)]
        needs_sync = self.expectations.satisfied(key) and not is_deleting(rs)
        if needs_sync:
            pods = await self.manage_replicas(key, rs, pods)
        return await self.sync_status(rs, pods)

    async def manage_replicas(self, key: str, rs: Obj, pods: list[Obj]) -> list[Obj]:
        """Create or delete towards spec.replicas; returns ``pods`` less those just deleted (so
        the status written next does not count pods that are already going away)."""
        desired = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(pods) - desired
        if diff < 0:
            await self.create_pods(key, rs, -diff)
        elif diff > 0:
            victims = least_valuable(pods, diff)
            gone = await self.delete_pods(key, victims)
            return [p for p in pods if uid_of(p) not in gone]
        return pods

    async def sync_status(self, rs: Obj, pods: list[Obj]) -> float | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = utcnow()
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = available = 0
        next_check: float | None = None
        fully_labeled = 0
        for pod in pods:
            labels = meta(pod).get("labels") or {}
            if all(labels.get(k) == v for k, v in template_labels.items()):
                fully_labeled += 1
            if is_pod_ready(pod):
                ready += 1
                wait = available_in(pod, min_ready, now)
                if wait == 0:
                    available += 1
                elif wait is not None:
                    next_check = wait if next_check is None else min(next_check, wait)
        old_status = rs.get("status") or {}
        status = dict(old_status)
        status.update({
            "replicas": len(pods),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": meta(rs).get("generation", 1),
        })
        if status != old_status:
            try:
                await self.client.update_status(self.owner_resource, {**rs, "status": status})
            except ApiError as e:
                if e.code != 404:
                    raise
        return None if next_check is None else next_check + 0.05


RC = Resource("", "v1", "replicationcontrollers", "ReplicationController")


class ReplicationControllerManager(ReplicaSetController):
    """ReplicationControllers: ReplicaSets whose ``spec.selector`` is a plain label map.

    An RC without a selector selects its template's labels (the API server defaults that too).
    """

    name = "replicationcontroller"
    component = "replication-controller"
    owner_resource = RC
    owner_kind = "ReplicationController"

    def owner_selector(self, owner: Obj) -> LabelSelector | None:
        spec = owner.get("spec") or {}
        labels = spec.get("selector") or ((spec.get("template") or {}).get("metadata") or {}).get("labels")
        if not labels:
            return None
        try:
            return label_selector_from_dict({"matchLabels": labels})
        except SelectorError:
            return None
