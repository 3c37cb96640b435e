"""Pod topology spread constraints: the hard kind filters, the soft kind (and the defaults) score.

**Filter** (``whenUnsatisfiable: DoNotSchedule``). For each such constraint the pods matching
its ``labelSelector`` in the pod's namespace are counted per value of ``topologyKey`` over the
*eligible* nodes — nodes that carry the key and (``nodeAffinityPolicy: Honor``, the default)
pass the pod's nodeSelector and required node affinity. Placing the pod on a node in domain
``v`` is allowed when ``count[v] + self - min(count)`` stays within ``maxSkew`` (``self`` is 1
if the pod matches its own selector; the minimum is 0 while fewer than ``minDomains`` domains
exist). Nodes without the key fail with "(missing required label)". ``matchLabelKeys`` adds
the pod's own values of those labels to the selector, as upstream does.

**Score** (upstream's PodTopologySpread score plugin). The constraints scored are the pod's
``ScheduleAnyway`` ones or, when the pod declares no constraints at all, the system defaults
that replaced SelectorSpread: ``topology.kubernetes.io/zone`` maxSkew 3 and
``kubernetes.io/hostname`` maxSkew 5, counting the pods of the same owner (the pod's
controller ownerReference, else its first — upstream counts per owner uid for pods with owners;
a pod without owner gets no defaults, where upstream would still use a selecting Service). Each
candidate node scores, per constraint whose key it carries,
``count(domain) * log(domains + 2) + maxSkew - 1`` (domains = distinct values among the
candidates; for hostname, the number of candidates), rounded; then scores are inverted into
0..100 as ``100 * (max + min - s) / max`` so the emptiest domain scores highest. With explicit
constraints a candidate missing any key is ignored (scores 0); with the defaults it is not.

Owner counts are what almost every pod (a Deployment's) needs, so :class:`OwnerCounts` keeps
them incrementally — owner uid -> node -> pods and owner uid -> zone -> pods — updated as the
scheduler places and removes pods; scoring a candidate is then two dict lookups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from k3py.api.selectors import LabelSelector, SelectorError, label_selector_from_dict
from k3py.server.scheduler.nodeinfo import NodeInfo

Obj = dict[str, Any]

REASON_SKEW = "node(s) didn't match pod topology spread constraints"
REASON_MISSING = "node(s) didn't match pod topology spread constraints (missing required label)"

ZONE = "topology.kubernetes.io/zone"
HOSTNAME = "kubernetes.io/hostname"
# Upstream's system default constraints (PodTopologySpread defaultingType: System).
DEFAULT_CONSTRAINTS: tuple[tuple[str, int], ...] = ((ZONE, 3), (HOSTNAME, 5))
MAX_NODE_SCORE = 100


@dataclass
class SpreadConstraint:
    key: str
    max_skew: int
    counts: dict[str, int]
    self_match: int
    min_count: int

    def check(self, labels: dict[str, str]) -> str | None:
        value = labels.get(self.key)
        if value is None:
            return REASON_MISSING
        if self.counts.get(value, 0) + self.self_match - self.min_count > self.max_skew:
            return REASON_SKEW
        return None


@dataclass
class SpreadRules:
    constraints: list[SpreadConstraint]

    def check(self, labels: dict[str, str]) -> str | None:
        for c in self.constraints:
            reason = c.check(labels)
            if reason is not None:
                return reason
        return None


def hard_constraints(pod: Obj) -> list[Obj]:
    return [c for c in (pod.get("spec") or {}).get("topologySpreadConstraints") or ()
            if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"]


def soft_constraints(pod: Obj) -> list[Obj]:
    return [c for c in (pod.get("spec") or {}).get("topologySpreadConstraints") or ()
            if c.get("whenUnsatisfiable") == "ScheduleAnyway"]


def owner_uid(pod: Obj) -> str | None:
    """The uid default spreading groups the pod by: its controller's (the ReplicaSet or
    StatefulSet whose selector upstream would use), else its first ownerReference's."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or ()
    if not refs:
        return None
    controller = next((r for r in refs if r.get("controller")), refs[0])
    return controller.get("uid") or None


def constraint_selector(constraint: Obj, own_labels: Mapping[str, str]) -> LabelSelector | None:
    """The constraint's selector with ``matchLabelKeys`` folded in; None matches nothing."""
    if constraint.get("labelSelector") is None:
        return None
    selector_dict = dict(constraint.get("labelSelector") or {})
    match_keys = [k for k in constraint.get("matchLabelKeys") or () if k in own_labels]
    if match_keys:
        exprs = list(selector_dict.get("matchExpressions") or [])
        exprs += [{"key": k, "operator": "In", "values": [own_labels[k]]} for k in match_keys]
        selector_dict["matchExpressions"] = exprs
    try:
        return label_selector_from_dict(selector_dict)
    except SelectorError:
        return None


def build_spread_rules(
    pod: Obj,
    node_labels: Iterable[tuple[str, dict[str, str]]],
    placed: Iterable[tuple[Obj, str]],
    node_eligible: Callable[[str], bool],
) -> SpreadRules | None:
    """Rules for ``pod``: ``node_labels`` (name, labels) of all nodes, ``placed`` (pod, node name)."""
    constraints = hard_constraints(pod)
    if not constraints:
        return None
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace", "")
    own_labels = meta.get("labels") or {}
    nodes = [(name, labels) for name, labels in node_labels if node_eligible(name)]
    placed = list(placed)
    out: list[SpreadConstraint] = []
    for c in constraints:
        key = c.get("topologyKey", "")
        selector = constraint_selector(c, own_labels)
        domain_of = {name: labels[key] for name, labels in nodes if key in labels}
        counts = dict.fromkeys(domain_of.values(), 0)
        if selector is not None:
            for other, node_name in placed:
                other_meta = other.get("metadata") or {}
                domain = domain_of.get(node_name)
                if domain is None or other_meta.get("namespace", "") != namespace:
                    continue
                if selector.matches(other_meta.get("labels") or {}):
                    counts[domain] += 1
        min_domains = int(c.get("minDomains") or 1)
        min_count = min(counts.values()) if counts and len(counts) >= min_domains else 0
        self_match = 1 if selector is not None and selector.matches(own_labels) else 0
        out.append(SpreadConstraint(key, int(c.get("maxSkew") or 1), counts, self_match, min_count))
    return SpreadRules(out)


# -- scoring ---------------------------------------------------------------------------------


class OwnerCounts:
    """Placed pods per owner uid, per node and per zone, maintained one pod at a time."""

    __slots__ = ("_entries", "by_node", "by_zone")

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, int]] = {}
        self.by_zone: dict[str, dict[str, int]] = {}
        self._entries: dict[str, tuple[str, str, str | None]] = {}  # pod key -> (uid, node, zone)

    def add(self, key: str, uid: str, node: str, zone: str | None) -> None:
        if key in self._entries:
            self.remove(key)
        self._entries[key] = (uid, node, zone)
        per_node = self.by_node.setdefault(uid, {})
        per_node[node] = per_node.get(node, 0) + 1
        if zone is not None:
            per_zone = self.by_zone.setdefault(uid, {})
            per_zone[zone] = per_zone.get(zone, 0) + 1

    def remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        uid, node, zone = entry
        _decrement(self.by_node, uid, node)
        if zone is not None:
            _decrement(self.by_zone, uid, zone)

    def set_zone(self, key: str, zone: str | None) -> None:
        """The pod's node changed its zone label (or became known): move the pod's count."""
        entry = self._entries.get(key)
        if entry is not None and entry[2] != zone:
            self.add(key, entry[0], entry[1], zone)


def _decrement(index: dict[str, dict[str, int]], uid: str, where: str) -> None:
    counts = index[uid]
    left = counts[where] - 1
    if left:
        counts[where] = left
    else:
        del counts[where]
        if not counts:
            del index[uid]


@dataclass
class SoftConstraint:
    """One scored constraint with its pod counts: per node (hostname) or per domain (others)."""

    key: str
    max_skew: int
    per_node: Mapping[str, int]
    per_domain: Mapping[str, int]


class SpreadScorer:
    """Scores candidate nodes for one pod; see the module docstring for the formula."""

    __slots__ = ("constraints", "require_all")

    def __init__(self, constraints: list[SoftConstraint], require_all: bool) -> None:
        self.constraints = constraints
        self.require_all = require_all

    def scores(self, candidates: list[NodeInfo], sizes: Mapping[str, int] | None = None) -> list[int]:
        """Normalised 0..100 per candidate (higher: fewer matching pods nearby).

        ``sizes`` (topology key -> number of domains) is given when ``candidates`` stand for a
        larger set — one node per group of equal score (see the scheduler's owner fast path).
        """
        n = len(candidates)
        keys = [c.key for c in self.constraints]
        ignored = ([any(k not in info.labels for k in keys) for info in candidates] if self.require_all
                   else [False] * n)
        scored = n - sum(ignored)
        raw = [0.0] * n
        for c in self.constraints:
            values = [info.labels.get(c.key) for info in candidates]
            if sizes is not None:
                size = sizes[c.key]
            elif c.key == HOSTNAME:
                size = scored
            else:
                size = len({v or "" for v, skip in zip(values, ignored, strict=True) if not skip})
            if c.key == HOSTNAME:
                get = c.per_node.get
                counts = [get(info.name, 0) for info in candidates]
            else:
                get = c.per_domain.get
                counts = [get(v, 0) if v is not None else 0 for v in values]
            weight = math.log(size + 2)
            base = c.max_skew - 1
            raw = [r + count * weight + base if v is not None else r
                   for r, count, v in zip(raw, counts, values, strict=True)]
        rounded = [-1 if skip else math.floor(r + 0.5) for r, skip in zip(raw, ignored, strict=True)]
        valid = [r for r in rounded if r >= 0]
        if not valid:
            return [0] * n
        low, high = min(valid), max(valid)
        if high == 0:
            return [0 if r < 0 else MAX_NODE_SCORE for r in rounded]
        return [0 if r < 0 else MAX_NODE_SCORE * (high + low - r) // high for r in rounded]


def default_spread_scorer(uid: str, owners: OwnerCounts, zone_counts: Mapping[str, int] | None = None) -> SpreadScorer:
    """The system default constraints over the owner's pods.

    ``zone_counts`` overrides the owner's all-node zone totals when the pod's node affinity
    narrows which nodes count (upstream's nodeAffinityPolicy: Honor).
    """
    per_node = owners.by_node.get(uid, {})
    per_zone = zone_counts if zone_counts is not None else owners.by_zone.get(uid, {})
    return SpreadScorer([SoftConstraint(key, skew, per_node, per_zone if key != HOSTNAME else {})
                         for key, skew in DEFAULT_CONSTRAINTS], require_all=False)


def explicit_spread_scorer(
    pod: Obj,
    constraints: list[Obj],
    nodes: Iterable[NodeInfo],
    placed: Iterable[tuple[Obj, str]],
    node_counts: Callable[[NodeInfo, Obj], bool],
) -> SpreadScorer:
    """The pod's ScheduleAnyway constraints, counting matching pods of its namespace.

    ``node_counts(node, constraint)`` says whether pods on ``node`` count toward its domain
    (the node inclusion policies); ``placed`` is (pod, node name) for every placed pod.
    """
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace", "")
    own_labels = meta.get("labels") or {}
    nodes = list(nodes)
    placed = [(other, node) for other, node in placed  # terminating pods no longer count
              if (other.get("metadata") or {}).get("namespace", "") == namespace
              and not other["metadata"].get("deletionTimestamp")]
    keys = [c.get("topologyKey", "") for c in constraints]
    out: list[SoftConstraint] = []
    for c, key in zip(constraints, keys, strict=True):
        selector = constraint_selector(c, own_labels)
        per_node: dict[str, int] = {}
        if selector is not None:
            for other, node in placed:
                if selector.matches((other.get("metadata") or {}).get("labels") or {}):
                    per_node[node] = per_node.get(node, 0) + 1
        per_domain: dict[str, int] = {}
        if key != HOSTNAME:
            for info in nodes:
                count = per_node.get(info.name)
                if count and all(k in info.labels for k in keys) and node_counts(info, c):
                    per_domain[info.labels[key]] = per_domain.get(info.labels[key], 0) + count
        out.append(SoftConstraint(key, int(c.get("maxSkew") or 1), per_node, per_domain))
    return SpreadScorer(out, require_all=True)
