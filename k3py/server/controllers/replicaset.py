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
re-counting the same pods for each of its 4,000 status changes. The interval also stretches to
``STATUS_DUTY_FACTOR`` times what the owner's last pod walk took (at most
``STATUS_SYNC_MAX_INTERVAL``), so on a loaded host ten 1,000-pod owners cannot take a core
between them re-counting.

The walk itself is kept cheap by :class:`PodFacts`: what a reconcile reads from each pod (its
controller reference, labels, active, ready, and whether the owner's selector matches) is
derived once per pod *object* — informer objects are replaced, never mutated, on a change — and
reused by every later reconcile until the pod changes. Parsed selectors are kept per owner
until its selector changes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
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
# ... stretched to this many times the owner's last pod walk (seconds of CPU), up to the max.
STATUS_DUTY_FACTOR = 25
STATUS_SYNC_MAX_INTERVAL = 2.0


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


class PodFacts:
    """What owner controllers read from one pod object, derived once per object (see module
    docstring); ``matches`` remembers its answer for the last two selectors asked."""

    __slots__ = ("_match_a", "_match_b", "_sel_a", "_sel_b", "active", "controller", "labels", "pod", "ready")

    def __init__(self, pod: Obj) -> None:
        self.pod = pod
        self.controller = controller_ref(pod)
        self.labels: dict[str, str] = meta(pod).get("labels") or {}
        self.active = is_pod_active(pod)
        self.ready = is_pod_ready(pod)
        self._sel_a: LabelSelector | None = None
        self._sel_b: LabelSelector | None = None
        self._match_a = self._match_b = False

    def matches(self, sel: LabelSelector) -> bool:
        if sel is self._sel_a:
            return self._match_a
        if sel is self._sel_b:
            return self._match_b
        result = sel.matches(self.labels)
        # Keep the newest answer in slot a, the previous one in slot b.
        self._sel_b, self._match_b = self._sel_a, self._match_a
        self._sel_a, self._match_a = sel, result
        return result


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
        # owner key -> seconds its last pod walk took (see STATUS_DUTY_FACTOR)
        self._walk_cost: dict[str, float] = {}
        # id(pod object) -> its facts; the entry holds the object, so the id cannot be reused
        self._pod_facts: dict[int, PodFacts] = {}
        # owner uid -> (what its selector is built from, the parsed selector)
        self._selectors: dict[str, tuple[Any, LabelSelector | None]] = {}

    def facts(self, pod: Obj) -> PodFacts:
        """The :class:`PodFacts` of this pod object (computed on first use)."""
        found = self._pod_facts.get(id(pod))
        if found is not None and found.pod is pod:
            return found
        if len(self._pod_facts) > 2 * len(self.pods.cache) + 256:
            self._pod_facts.clear()  # entries of deleted pods (their delete event carries another object)
        found = PodFacts(pod)
        self._pod_facts[id(pod)] = found
        return found

    def cached_selector(self, owner: Obj) -> LabelSelector | None:
        """:meth:`owner_selector`, parsed again only when what it is built from changed."""
        spec = owner.get("spec") or {}
        source = (spec.get("selector"), ((spec.get("template") or {}).get("metadata") or {}).get("labels"))
        uid = uid_of(owner)
        hit = self._selectors.get(uid)
        if hit is not None and hit[0] == source:
            return hit[1]
        sel = self.owner_selector(owner)
        self._selectors[uid] = (source, sel)
        return sel

    def note_walk(self, key: str, seconds: float) -> None:
        """Record how long reconciling ``key`` spent walking its pods (see STATUS_DUTY_FACTOR)."""
        self._walk_cost[key] = seconds

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
        interval = min(STATUS_SYNC_MAX_INTERVAL, max(STATUS_SYNC_INTERVAL, STATUS_DUTY_FACTOR * self._walk_cost.get(key, 0.0)))
        self.queue.add_after(key, last + interval - asyncio.get_running_loop().time())

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
        self._selectors.pop(uid_of(obj), None)
        self._selectors.pop("template/" + uid_of(obj), None)
        self._walk_cost.pop(object_key(obj), None)
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
        self._pod_facts.pop(id(old), None)
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
        sel = self.cached_selector(owner)
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
        facts_of = self.facts
        for pod in candidates:
            facts = facts_of(pod)
            ref = facts.controller
            matches = usable and facts.matches(sel)  # type: ignore[arg-type]
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
            self._walk_cost.pop(key, None)
            return None
        self.note_sync(key)
        walk_started = time.perf_counter()
        facts_of = self.facts
        pods = [p for p in await self.claim_pods(rs) if facts_of(p).active]
        walked = time.perf_counter() - walk_started
        needs_sync = self.expectations.satisfied(key) and not is_deleting(rs)
        if needs_sync:
            pods = await self.manage_replicas(key, rs, pods)
        walk_started = time.perf_counter()
        status, next_check = self.count_status(rs, pods)
        self.note_walk(key, walked + time.perf_counter() - walk_started)
        await self.write_status(rs, status)
        return next_check

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
        """Write the status counting ``pods``; returns when to look again (minReadySeconds)."""
        status, next_check = self.count_status(rs, pods)
        await self.write_status(rs, status)
        return next_check

    def template_selector(self, rs: Obj) -> LabelSelector | None:
        """A selector of the template's labels (for fullyLabeledReplicas), cached per owner."""
        labels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        key = "template/" + uid_of(rs)
        hit = self._selectors.get(key)
        if hit is not None and hit[0] == labels:
            return hit[1]
        try:
            sel: LabelSelector | None = label_selector_from_dict({"matchLabels": labels})
        except SelectorError:
            sel = None  # labels no selector can express: compare them one by one
        self._selectors[key] = (labels, sel)
        return sel

    def count_status(self, rs: Obj, pods: list[Obj]) -> tuple[Obj, float | None]:
        """The status ``pods`` add up to, and the seconds until a ready pod becomes available."""
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = utcnow()
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        template_sel = self.template_selector(rs)
        ready = available = 0
        next_check: float | None = None
        fully_labeled = 0
        facts_of = self.facts
        for pod in pods:
            facts = facts_of(pod)
            if template_sel is not None:
                fully_labeled += facts.matches(template_sel)
            elif all(facts.labels.get(k) == v for k, v in template_labels.items()):
                fully_labeled += 1
            if facts.ready:
                ready += 1
                wait = available_in(pod, min_ready, now) if min_ready > 0 else 0.0
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
        return status, (None if next_check is None else next_check + 0.05)

    async def write_status(self, rs: Obj, status: Obj) -> None:
        """Write ``status`` unless it is what the owner already has."""
        if status != (rs.get("status") or {}):
            try:
                await self.client.update_status(self.owner_resource, {**rs, "status": status})
            except ApiError as e:
                if e.code != 404:
                    raise


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
