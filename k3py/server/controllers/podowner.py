"""Pod ownership: what every controller that owns objects by selector shares.

Used by the ReplicaSet (and ReplicationController), Job, DaemonSet and StatefulSet controllers
for their pods, and by the Deployment controller for its ReplicaSets. Upstream keeps the same
pieces in ``pkg/controller`` (``controller_ref_manager.go``, ``controller_utils.go``):

- **Claiming** (upstream's ControllerRefManager): :func:`claim` walks the objects an owner may
  claim (:func:`claim_candidates`: those referencing it, and its namespace's orphans, read from
  two informer indexes instead of the whole namespace). An object controlled by someone else
  is left alone; one it controls is kept while it matches (the selector, plus an optional
  membership test such as a StatefulSet's ``<set>-<ordinal>`` names) and *released* (its
  ownerReference removed) when it no longer does — unless the owner is being deleted; a
  matching orphan is *adopted* (a controller ownerReference added) unless the orphan or the
  owner is being deleted, and only after a fresh read of the owner (not the cache) shows it
  still exists with the same uid and no deletionTimestamp (upstream's
  RecheckDeletionTimestamp). Adoption and release patch the whole ``ownerReferences`` list
  with the object's uid and resourceVersion as preconditions; a 404, 409 or 422 answer means
  the object changed or vanished meanwhile and is simply not claimed this time.
- **Pods from a template** (GetPodFromTemplate): :func:`pod_from_template` — the template's
  labels, annotations, finalizers and spec, a controller ownerReference with
  ``blockOwnerDeletion``, and ``generateName`` ``<owner>-`` (just ``<owner>`` when the dash
  would make an invalid prefix).
- **Which pods go first**: :func:`sort_active_pods` is upstream's ActivePods order (used by the
  Job controller): unscheduled before scheduled, Pending before Unknown before Running, not
  ready before ready, ready for less time first, more container restarts (regular containers,
  then sidecars) first, newer first. :func:`pods_to_delete` is the ReplicaSet's ranking
  (ActivePodsWithRanks): after readiness, a lower ``controller.kubernetes.io/pod-deletion-cost``
  goes first, then pods on nodes running more of the *related* pods (the active pods of every
  ReplicaSet under the same controller — none for a ReplicaSet without one), and ready times
  and creation times compare on a log2 scale of their age (LogarithmicScaleDown), ties broken
  by uid, so scale-down does not always pick the very newest pod.
- **Facts per object**: what a reconcile reads from each object (controller reference, labels,
  selector matches; for pods also active and ready) is derived once per object *instance* by
  a :class:`FactsCache` and reused until the object changes — informer caches replace an
  object on every change and never mutate it. This is what keeps a 1,000-pod owner's
  reconcile cheap.
- :class:`PodOwnerController`, the base of the pod-owning controllers: the owner and pod
  informers (pods indexed by owner uid and orphans by namespace), expectations, pod creation
  in slow-start batches and deletion with events, and coalesced wake-ups — events that only
  change what the status counts (pod updates, the owner's own status write, adds and deletes
  that do not complete the owner's expectations) wake an owner at most once per
  ``STATUS_SYNC_INTERVAL`` (at once when it was not reconciled that recently), stretched to
  ``STATUS_DUTY_FACTOR`` times its last pod walk (at most ``STATUS_SYNC_MAX_INTERVAL``), so ten
  1,000-pod owners on a loaded host cannot take a core between them re-counting.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from k3py.api.errors import ApiError
from k3py.api.meta import parse_rfc3339
from k3py.api.selectors import LabelSelector
from k3py.api.validation import dns1123_subdomain_errors
from k3py.client.controller import Controller
from k3py.client.informer import (
    ORPHAN_INDEX,
    OWNER_UID_INDEX,
    Cache,
    InformerFactory,
    index_by_owner_uid,
    index_orphans,
    object_key,
)
from k3py.client.interface import PODS, REPLICASETS, Client, Resource
from k3py.server.controllers.common import (
    Expectations,
    Obj,
    controller_ref,
    is_deleting,
    is_pod_active,
    is_pod_ready,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    pod_phase,
    ready_since,
    selector_of,
    uid_of,
    utcnow,
)

# Creates per reconcile grow 1, 2, 4... (upstream's slow start) so a failing template does not
# produce a burst of doomed requests.
SLOW_START_INITIAL = 1
MAX_BURST = 500
# Upper bound on how often pod updates re-trigger one owner's reconcile (seconds); bounds the
# status lag under load and leaves it at zero when pods change rarely.
STATUS_SYNC_INTERVAL = 0.1
# ... stretched to this many times the owner's last pod walk (seconds of CPU), up to the max.
STATUS_DUTY_FACTOR = 25
STATUS_SYNC_MAX_INTERVAL = 2.0

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


# -- facts per object -------------------------------------------------------------------------


class OwnedFacts:
    """What claiming reads from one object; ``matches`` remembers its answer for the last two
    selectors asked (an owner's selector and, say, its template's)."""

    __slots__ = ("_match_a", "_match_b", "_sel_a", "_sel_b", "controller", "labels", "obj")

    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        self.controller = controller_ref(obj)
        self.labels: dict[str, str] = meta(obj).get("labels") or {}
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


class PodFacts(OwnedFacts):
    """:class:`OwnedFacts` of a pod, plus whether it is active and ready."""

    __slots__ = ("active", "ready")

    def __init__(self, pod: Obj) -> None:
        super().__init__(pod)
        self.active = is_pod_active(pod)
        self.ready = is_pod_ready(pod)


F = TypeVar("F", bound=OwnedFacts)


class FactsCache(Generic[F]):
    """Facts per object instance of one informer cache (see the module docstring).

    Entries are keyed by ``id(obj)`` and hold the object, so an id cannot be reused while its
    entry lives; :meth:`forget` drops the entry of an object an update replaced, and the whole
    table is dropped when it outgrows the cache (entries of deleted objects).
    """

    def __init__(self, make: Callable[[Obj], F], cache: Cache) -> None:
        self._make = make
        self._cache = cache
        self._facts: dict[int, F] = {}

    def of(self, obj: Obj) -> F:
        """The facts of this object (computed on first use)."""
        found = self._facts.get(id(obj))
        if found is not None and found.obj is obj:
            return found
        if len(self._facts) > 2 * len(self._cache) + 256:
            self._facts.clear()
        found = self._make(obj)
        self._facts[id(obj)] = found
        return found

    def forget(self, obj: Obj) -> None:
        self._facts.pop(id(obj), None)


# -- claiming (upstream's ControllerRefManager) -------------------------------------------------


def claim_candidates(cache: Cache, owner: Obj) -> Iterable[Obj]:
    """The objects of ``cache`` that ``owner`` may claim: those referencing it and the orphans
    of its namespace (the cache needs the OWNER_UID_INDEX and ORPHAN_INDEX indexes)."""
    owned = cache.by_index(OWNER_UID_INDEX, uid_of(owner))
    orphans = cache.by_index(ORPHAN_INDEX, namespace_of(owner))
    if not orphans:
        return owned
    # Rare: merge by key only then (an object is in both while it is being adopted).
    merged = {object_key(o): o for o in owned}
    merged.update((object_key(o), o) for o in orphans)
    return merged.values()


async def _patch_owner_refs(client: Client, resource: Resource, obj: Obj, refs: list[Obj]) -> Obj | None:
    patch = {"metadata": {"ownerReferences": refs or None, "uid": uid_of(obj),
                          "resourceVersion": meta(obj).get("resourceVersion")}}
    try:
        return await client.patch(resource, name_of(obj), patch, namespace_of(obj))
    except ApiError as e:
        if e.code in (404, 409, 422):
            return None  # gone or changed: the next reconcile sees its new state
        raise


async def adopt(client: Client, resource: Resource, obj: Obj, owner_ref: Obj) -> Obj | None:
    """Add the controller reference ``owner_ref`` to ``obj``; returns the adopted object, or
    None when ``obj`` changed or vanished meanwhile."""
    return await _patch_owner_refs(client, resource, obj, [*(meta(obj).get("ownerReferences") or ()), owner_ref])


async def release(client: Client, resource: Resource, obj: Obj, owner_uid: str) -> Obj | None:
    """Remove every reference to ``owner_uid`` from ``obj``; returns the released object, or
    None when ``obj`` changed or vanished meanwhile."""
    refs = [r for r in meta(obj).get("ownerReferences") or () if r.get("uid") != owner_uid]
    return await _patch_owner_refs(client, resource, obj, refs)


def owner_recheck(client: Client, resource: Resource, owner: Obj) -> Callable[[], Awaitable[bool]]:
    """A check that ``owner`` may still adopt, from a fresh read rather than the cache: it
    exists with the same uid and is not being deleted (upstream's RecheckDeletionTimestamp)."""

    async def can_adopt() -> bool:
        try:
            fresh = await client.get(resource, name_of(owner), namespace_of(owner))
        except ApiError as e:
            if e.code == 404:
                return False
            raise
        return uid_of(fresh) == uid_of(owner) and not is_deleting(fresh)

    return can_adopt


async def claim(client: Client, resource: Resource, owner: Obj, owner_ref: Obj, selector: LabelSelector | None,
                candidates: Iterable[Obj], facts_of: Callable[[Obj], F], *,
                consider: Callable[[F], bool] | None = None, member: Callable[[F], bool] | None = None,
                can_adopt: Callable[[], Awaitable[bool]] | None = None) -> list[Obj]:
    """The objects ``owner`` controls once orphans are adopted and strays released (see the
    module docstring); ``owner_ref`` is the controller reference an adoption adds.

    An invalid or empty ``selector`` matches nothing. ``consider`` leaves objects out of the
    claim altogether (kept, released and adopted alike); ``member`` is a condition matching
    needs besides the selector. ``can_adopt`` is asked once, before the first adoption.
    """
    owner_uid = uid_of(owner)
    owner_deleting = is_deleting(owner)
    usable = selector is not None and not selector.empty
    claimed: list[Obj] = []
    adoption_allowed: bool | None = None
    for obj in candidates:
        facts = facts_of(obj)
        if consider is not None and not consider(facts):
            continue
        ref = facts.controller
        if ref is not None and ref.get("uid") != owner_uid:
            continue  # someone else's
        matches = usable and facts.matches(selector) and (member is None or member(facts))  # type: ignore[arg-type]
        if ref is not None:
            if matches:
                claimed.append(obj)
            elif not owner_deleting:
                await release(client, resource, obj, owner_uid)
            continue
        if not matches or owner_deleting or is_deleting(obj):
            continue
        if adoption_allowed is None:
            adoption_allowed = can_adopt is None or await can_adopt()
        if not adoption_allowed:
            continue
        adopted = await adopt(client, resource, obj, owner_ref)
        if adopted is not None:
            claimed.append(adopted)
    return claimed


# -- pods from a template (upstream's GetPodFromTemplate) -------------------------------------


def pod_name_prefix(owner_name: str) -> str:
    """``<owner>-`` — or ``<owner>`` when that would not be a valid generateName (the API
    server validates a prefix with its trailing dash masked, as upstream's getPodsPrefix)."""
    prefix = f"{owner_name}-"
    masked = prefix[:-2] + "a" if len(prefix) > 1 else prefix
    return owner_name if dns1123_subdomain_errors(masked) else prefix


def pod_from_template(owner: Obj, api_version: str, kind: str) -> Obj:
    """A new pod for ``owner`` from its ``spec.template``: the template's labels, annotations,
    finalizers and spec, ``generateName`` from :func:`pod_name_prefix` and a controller
    ownerReference. Values inside the spec are shared with the owner: copy before changing."""
    template = (owner.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    pod_meta: Obj = {
        "generateName": pod_name_prefix(name_of(owner)),
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


# -- which pods go first (upstream's ActivePods and ActivePodsWithRanks) ----------------------

# Phases upstream orders; any other (none, Succeeded, Failed) counts as Pending does.
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
_GO_INT = re.compile(r"[+-]?[0-9]+\Z")


def deletion_cost(pod: Obj) -> int:
    """The pod-deletion-cost annotation: a base-10 int32 (Go's ParseInt); absent or invalid
    counts as 0."""
    value = (meta(pod).get("annotations") or {}).get(DELETION_COST)
    if not isinstance(value, str) or not _GO_INT.match(value):
        return 0
    number = int(value)
    return number if -(2 ** 31) <= number < 2 ** 31 else 0


def max_restarts(pod: Obj) -> tuple[int, int]:
    """(the highest restartCount among regular containers, among sidecars — init containers
    with ``restartPolicy: Always``), as upstream's compareMaxContainerRestarts reads them."""
    status = pod.get("status") or {}
    regular = max((int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or ()), default=0)
    sidecars = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or ()
                if c.get("restartPolicy") == "Always"}
    sidecar = max((int(cs.get("restartCount") or 0) for cs in status.get("initContainerStatuses") or ()
                   if cs.get("name") in sidecars), default=0) if sidecars else 0
    return regular, sidecar


def _stamp(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return parse_rfc3339(str(text))
    except ValueError:
        return None


def _zero_first_then_newest(when: datetime | None) -> tuple[int, float]:
    return (0, 0.0) if when is None else (1, -when.timestamp())


def _active_order(pod: Obj) -> tuple[Any, ...]:
    ready = is_pod_ready(pod)
    regular, sidecar = max_restarts(pod)
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        _PHASE_ORDER.get(pod_phase(pod), 0),
        1 if ready else 0,
        _zero_first_then_newest(ready_since(pod) if ready else None),
        -regular,
        -sidecar,
        _zero_first_then_newest(_stamp(meta(pod).get("creationTimestamp"))),
    )


def sort_active_pods(pods: Iterable[Obj]) -> list[Obj]:
    """``pods`` in upstream's ActivePods order: the one to delete first comes first."""
    return sorted(pods, key=_active_order)


_MICROSECOND = timedelta(microseconds=1)
_NO_TIME = -2  # sorts before every age rank, as upstream's afterOrZero puts a zero time first


def _age_rank(now: datetime, when: datetime) -> int:
    """log2 of ``when``'s age in nanoseconds (-1 when not in the past), as upstream's
    logarithmicRankDiff buckets times."""
    nanos = (now - when) // _MICROSECOND * 1000
    return int(math.log2(nanos)) if nanos > 0 else -1


class _Ranked:
    """One pod's inputs to the ReplicaSet's deletion order, read once before sorting; times are
    kept as their log2 age bucket at ``now`` (-2 when missing: a zero time)."""

    __slots__ = ("assigned", "cost", "created", "created_rank", "phase", "pod", "rank", "ready", "ready_at",
                 "ready_rank", "restarts", "uid")

    def __init__(self, pod: Obj, rank: int, now: datetime) -> None:
        self.pod = pod
        self.rank = rank
        self.assigned = bool((pod.get("spec") or {}).get("nodeName"))
        self.phase = _PHASE_ORDER.get(pod_phase(pod), 0)
        self.ready = is_pod_ready(pod)
        self.ready_at = ready_since(pod) if self.ready else None
        self.ready_rank = _NO_TIME if self.ready_at is None else _age_rank(now, self.ready_at)
        self.cost = deletion_cost(pod)
        self.restarts = max_restarts(pod)
        self.created = _stamp(meta(pod).get("creationTimestamp"))
        self.created_rank = _NO_TIME if self.created is None else _age_rank(now, self.created)
        self.uid = uid_of(pod)


def _younger_first(a: _Ranked, b: _Ranked, rank_a: int, rank_b: int) -> int:
    """The smaller age rank first (a missing time ranks lowest), ties by uid."""
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    return (a.uid > b.uid) - (a.uid < b.uid)


def _ranked_compare(a: _Ranked, b: _Ranked) -> int:
    """Upstream's ActivePodsWithRanks.Less as a comparison: negative when ``a`` goes first."""
    if a.assigned != b.assigned:
        return 1 if a.assigned else -1
    if a.phase != b.phase:
        return -1 if a.phase < b.phase else 1
    if a.ready != b.ready:
        return 1 if a.ready else -1
    if a.cost != b.cost:
        return -1 if a.cost < b.cost else 1
    if a.rank != b.rank:
        return -1 if a.rank > b.rank else 1
    if a.ready and b.ready and a.ready_at != b.ready_at:
        return _younger_first(a, b, a.ready_rank, b.ready_rank)
    if a.restarts != b.restarts:
        return -1 if a.restarts > b.restarts else 1
    if a.created != b.created:
        return _younger_first(a, b, a.created_rank, b.created_rank)
    return 0


def related_per_node(related: Iterable[Obj]) -> dict[str, int]:
    """How many active ``related`` pods each node runs (unscheduled ones under "")."""
    per_node: dict[str, int] = {}
    for pod in related:
        if is_pod_active(pod):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            per_node[node] = per_node.get(node, 0) + 1
    return per_node


def pods_to_delete(pods: Sequence[Obj], related: Iterable[Obj], count: int, now: datetime | None = None) -> list[Obj]:
    """The ``count`` of ``pods`` a ReplicaSet deletes first (upstream's getPodsToDelete with
    ActivePodsWithRanks): each pod ranked by how many active ``related`` pods share its node.
    All of them, unsorted, when ``count`` covers them all."""
    if count <= 0:
        return []
    if count >= len(pods):
        return list(pods)
    per_node = related_per_node(related)
    now = now or utcnow()
    ranked = [_Ranked(p, per_node.get((p.get("spec") or {}).get("nodeName") or "", 0), now) for p in pods]
    ranked.sort(key=functools.cmp_to_key(_ranked_compare))
    return [r.pod for r in ranked[:count]]


# -- the base of pod-owning controllers ---------------------------------------------------------


class PodOwnerController(Controller):
    """Owner and pod informers, expectations, claiming, pod creation and deletion, coalesced
    wake-ups (see the module docstring); subclasses implement ``reconcile``."""

    owner_resource: Resource = REPLICASETS
    owner_kind = "ReplicaSet"

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.expectations = Expectations()
        self.owners = informers.informer(self.owner_resource)
        self.pods = informers.informer(PODS, {OWNER_UID_INDEX: index_by_owner_uid, ORPHAN_INDEX: index_orphans})
        self.owners.add_handler(self.enqueue, self._owner_updated, self._owner_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        self.pod_facts: FactsCache[PodFacts] = FactsCache(PodFacts, self.pods.cache)
        # owner key -> event-loop time its last reconcile started (see STATUS_SYNC_INTERVAL)
        self._last_sync: dict[str, float] = {}
        # owner key -> seconds its last pod walk took (see STATUS_DUTY_FACTOR)
        self._walk_cost: dict[str, float] = {}
        # owner uid (or "template/" + uid) -> (what the selector is built from, the parsed selector)
        self._selectors: dict[str, tuple[Any, LabelSelector | None]] = {}

    # -- selectors and bookkeeping ----------------------------------------------------------

    def owner_selector(self, owner: Obj) -> LabelSelector | None:
        """The owner's pod selector (a metav1.LabelSelector in ``spec.selector``)."""
        return selector_of(owner)

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

    def note_sync(self, key: str) -> None:
        """Record that ``key`` is being reconciled now (subclasses call it from reconcile)."""
        self._last_sync[key] = asyncio.get_running_loop().time()

    def forget_owner(self, key: str) -> None:
        """Drop what is remembered of an owner that is gone."""
        self.expectations.forget(key)
        self._last_sync.pop(key, None)
        self._walk_cost.pop(key, None)

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

    # -- event handlers ---------------------------------------------------------------------

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
        self.pod_facts.forget(old)
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

    # -- claiming, creating, deleting -------------------------------------------------------

    async def claim_pods(self, owner: Obj, *, consider: Callable[[PodFacts], bool] | None = None,
                         member: Callable[[PodFacts], bool] | None = None) -> list[Obj]:
        """The pods ``owner`` controls after adopting matching orphans and releasing strays
        (:func:`claim`)."""
        return await claim(
            self.client, PODS, owner, owner_reference(owner, self.owner_resource.api_version, self.owner_kind),
            self.cached_selector(owner), claim_candidates(self.pods.cache, owner), self.pod_facts.of,
            consider=consider, member=member, can_adopt=owner_recheck(self.client, self.owner_resource, owner))

    async def create_pods(self, key: str, owner: Obj, pods: int | Sequence[Obj]) -> None:
        """Create ``pods`` (or that many from the owner's template) in slow-start batches,
        expecting them first; records SuccessfulCreate / FailedCreate events. On a failure the
        rest of the batch's pods and every later one are not expected any more, and the first
        error is raised."""
        count = pods if isinstance(pods, int) else len(pods)
        namespace = namespace_of(owner)
        self.expectations.expect(key, adds=count)
        created = 0
        batch = SLOW_START_INITIAL
        while created < count:
            size = min(batch, count - created)
            bodies = ([pod_from_template(owner, self.owner_resource.api_version, self.owner_kind) for _ in range(size)]
                      if isinstance(pods, int) else pods[created:created + size])
            results = await asyncio.gather(*(self.client.create(PODS, body, namespace) for body in bodies),
                                           return_exceptions=True)
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

    async def create_pod(self, key: str, pod: Obj, *, tolerate: Collection[int] = ()) -> Obj | None:
        """Create one pod, expecting it first; None when the server answered one of the
        ``tolerate`` codes (the pod will not be observed, so it is not expected any more)."""
        self.expectations.expect(key, adds=1)
        try:
            return await self.client.create(PODS, pod, namespace_of(pod))
        except ApiError as e:
            self.expectations.observed_add(key)
            if e.code in tolerate:
                return None
            raise

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
