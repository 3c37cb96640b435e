"""Inter-pod affinity and anti-affinity: required terms filter, preferred terms score.

A term — ``labelSelector``, ``namespaces`` (default: the pod's own), ``topologyKey`` — names
a set of existing pods and a node label. For the incoming pod:

- ``podAntiAffinity`` (required): a node is refused when a matching pod already runs on a node
  with the same value of ``topologyKey`` (for ``kubernetes.io/hostname``: the same node);
- ``podAffinity`` (required): a node is accepted only when a matching pod runs on a node with
  the same ``topologyKey`` value — except that the very first pod of a group whose term matches
  itself may go anywhere the key exists (upstream's special case, or no group could start);
- symmetry: an existing pod's required anti-affinity also keeps the incoming pod away if the
  incoming pod matches that term.

Rules are built once per scheduling attempt from the pods already placed (the scheduler's own
bookkeeping, including pods it has assumed but not yet seen bound), so each node check is a
set lookup. ``namespaceSelector`` is approximated: present means every namespace.

Scoring (upstream's InterPodAffinity score plugin) sums weights into a per-topology-domain
table: for every placed pod on a node carrying the term's ``topologyKey``, the incoming pod's
preferred affinity terms that match it add their weight to that domain and its preferred
anti-affinity terms subtract theirs; in the other direction, the placed pod's preferred
affinity (+weight), preferred anti-affinity (-weight) and required affinity (+1, upstream's
hardPodAffinityWeight) terms that match the incoming pod count too. A node scores the sum over
the table's keys of its domain's entry; scores are scaled min..max to 0..100. When the
incoming pod has no preferred terms only placed pods holding such terms can contribute, so the
scheduler passes just those, with their terms parsed once when they were placed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from k3py.api.selectors import LabelSelector, SelectorError, label_selector_from_dict

Obj = dict[str, Any]

REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"


def required_terms(pod: Obj, kind: str) -> list[Obj]:
    section = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return list(section.get("requiredDuringSchedulingIgnoredDuringExecution") or [])


def has_required_anti_affinity(pod: Obj) -> bool:
    return bool(required_terms(pod, "podAntiAffinity"))


def _term_matches(term: Obj, owner_namespace: str, pod: Obj) -> bool:
    """Does ``pod`` fall under ``term`` (declared by a pod in ``owner_namespace``)?"""
    meta = pod.get("metadata") or {}
    if "namespaceSelector" not in term:
        namespaces = term.get("namespaces") or [owner_namespace]
        if meta.get("namespace", "") not in namespaces:
            return False
    try:
        selector = label_selector_from_dict(term.get("labelSelector"))
    except SelectorError:
        return False
    return selector.matches(meta.get("labels") or {})


@dataclass
class PodAffinityRules:
    """Per-topology-key value sets a node's labels are checked against."""

    forbidden: list[tuple[str, set[str]]] = field(default_factory=list)
    required: list[tuple[str, set[str] | None]] = field(default_factory=list)

    def check(self, labels: dict[str, str]) -> str | None:
        for key, values in self.forbidden:
            value = labels.get(key)
            if value is not None and value in values:
                return REASON_ANTI_AFFINITY
        for key, allowed in self.required:
            value = labels.get(key)
            if value is None or (allowed is not None and value not in allowed):
                return REASON_AFFINITY
        return None


def build_rules(pod: Obj, placed: Iterable[tuple[Obj, dict[str, str]]],
                anti_holders: Iterable[tuple[Obj, dict[str, str]]]) -> PodAffinityRules | None:
    """The rules for ``pod`` given ``placed`` (pod, its node's labels) pairs, or None if none apply.

    ``anti_holders`` are the placed pods that declare required anti-affinity (for symmetry).
    """
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    anti = required_terms(pod, "podAntiAffinity")
    affinity = required_terms(pod, "podAffinity")
    rules = PodAffinityRules()
    if anti or affinity:
        placed = list(placed)
        for term in anti:
            key = term.get("topologyKey", "")
            values = {labels[key] for other, labels in placed if key in labels and _term_matches(term, namespace, other)}
            rules.forbidden.append((key, values))
        for term in affinity:
            key = term.get("topologyKey", "")
            values = {labels[key] for other, labels in placed if key in labels and _term_matches(term, namespace, other)}
            if not values and _term_matches(term, namespace, pod):
                rules.required.append((key, None))  # first of its group: any node with the key
            else:
                rules.required.append((key, values))
    for holder, labels in anti_holders:
        holder_ns = (holder.get("metadata") or {}).get("namespace", "")
        for term in required_terms(holder, "podAntiAffinity"):
            key = term.get("topologyKey", "")
            if key in labels and _term_matches(term, holder_ns, pod):
                rules.forbidden.append((key, {labels[key]}))
    return rules if (rules.forbidden or rules.required) else None


HARD_POD_AFFINITY_WEIGHT = 1  # upstream's default for existing pods' required affinity terms
MAX_NODE_SCORE = 100


@dataclass(frozen=True)
class WeightedTerm:
    """A scoring term, parsed once: which pods it selects and what a match is worth."""

    weight: int  # negative for anti-affinity
    topology_key: str
    selector: LabelSelector
    namespaces: frozenset[str] | None  # None: every namespace (a namespaceSelector is present)

    def matches(self, pod: Obj) -> bool:
        meta = pod.get("metadata") or {}
        return self.matches_labels(meta.get("namespace", ""), meta.get("labels") or {})

    def matches_labels(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return self.selector.matches(labels)


def preferred_terms(pod: Obj, kind: str) -> list[Obj]:
    section = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return list(section.get("preferredDuringSchedulingIgnoredDuringExecution") or [])


def has_preferred_terms(pod: Obj) -> bool:
    """Does the incoming pod ask for preferred (anti-)affinity toward other pods?"""
    return bool(preferred_terms(pod, "podAffinity") or preferred_terms(pod, "podAntiAffinity"))


def _parse(term: Obj, weight: int, namespace: str) -> WeightedTerm | None:
    key = term.get("topologyKey") or ""
    if not weight or not key:
        return None
    try:
        selector = label_selector_from_dict(term.get("labelSelector"))
    except SelectorError:
        return None
    namespaces = None if "namespaceSelector" in term else frozenset(term.get("namespaces") or [namespace])
    return WeightedTerm(weight, key, selector, namespaces)


def own_scoring_terms(pod: Obj) -> list[WeightedTerm]:
    """The pod's preferred affinity (+weight) and anti-affinity (-weight) terms."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    out = []
    for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1)):
        for term in preferred_terms(pod, kind):
            parsed = _parse(term.get("podAffinityTerm") or {}, sign * int(term.get("weight") or 0), namespace)
            if parsed is not None:
                out.append(parsed)
    return out


def holder_scoring_terms(pod: Obj) -> list[WeightedTerm]:
    """What a placed pod contributes to others' scores: its preferred terms and, at upstream's
    hardPodAffinityWeight, its required affinity terms (empty for most pods)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    out = own_scoring_terms(pod)
    for term in required_terms(pod, "podAffinity"):
        parsed = _parse(term, HARD_POD_AFFINITY_WEIGHT, namespace)
        if parsed is not None:
            out.append(parsed)
    return out


class PlacedPods:
    """Placed pods grouped the way scoring reads them, kept one pod at a time.

    Replicas share labels and terms, so scoring walks groups rather than pods: one selector
    evaluation per distinct (namespace, labels) for the incoming pod's terms, one per distinct
    term list for the placed pods' terms, then the group's per-node pod counts.
    """

    __slots__ = ("_by_labels", "_by_terms", "_entries")

    def __init__(self) -> None:
        # (namespace, labels) -> node -> pods; (namespace, terms) -> node -> pods
        self._by_labels: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, int]] = {}
        self._by_terms: dict[tuple[WeightedTerm, ...], dict[str, int]] = {}
        self._entries: dict[str, tuple[tuple[str, frozenset[tuple[str, str]]], tuple[WeightedTerm, ...], str]] = {}

    @property
    def has_terms(self) -> bool:
        """Does any placed pod hold terms that can sway where other pods score?"""
        return bool(self._by_terms)

    def add(self, key: str, pod: Obj, node: str) -> None:
        self.remove(key)
        meta = pod.get("metadata") or {}
        label_key = (meta.get("namespace", ""), frozenset((meta.get("labels") or {}).items()))
        terms = tuple(holder_scoring_terms(pod))
        self._entries[key] = (label_key, terms, node)
        _count(self._by_labels.setdefault(label_key, {}), node, 1)
        if terms:
            _count(self._by_terms.setdefault(terms, {}), node, 1)

    def remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        label_key, terms, node = entry
        if not _count(self._by_labels[label_key], node, -1):
            del self._by_labels[label_key]
        if terms and not _count(self._by_terms[terms], node, -1):
            del self._by_terms[terms]

    def topology_scores(self, pod: Obj, node_labels: Callable[[str], dict[str, str] | None]) -> dict[str, dict[str, int]]:
        """topologyKey -> domain value -> summed weight (see the module docstring).

        ``node_labels(name)`` gives a node's labels (None for a node not known yet).
        """
        meta = pod.get("metadata") or {}
        namespace, labels = meta.get("namespace", ""), meta.get("labels") or {}
        table: dict[str, dict[str, int]] = {}

        def add(nodes: dict[str, int], key: str, weight: int) -> None:
            domains = table.setdefault(key, {})
            for node, count in nodes.items():
                value = (node_labels(node) or {}).get(key)
                if value is not None:
                    domains[value] = domains.get(value, 0) + weight * count

        own = own_scoring_terms(pod)
        if own:
            for (other_ns, other_labels), nodes in self._by_labels.items():
                other = dict(other_labels)
                for term in own:
                    if term.matches_labels(other_ns, other):
                        add(nodes, term.topology_key, term.weight)
        for terms, nodes in self._by_terms.items():
            for term in terms:
                if term.matches_labels(namespace, labels):
                    add(nodes, term.topology_key, term.weight)
        return {key: domains for key, domains in table.items() if domains}


def _count(counts: dict[str, int], node: str, delta: int) -> int:
    """Adjust ``counts[node]`` by ``delta`` (dropping zeros); the number of nodes left."""
    left = counts.get(node, 0) + delta
    if left:
        counts[node] = left
    else:
        counts.pop(node, None)
    return len(counts)


def inter_pod_scores(table: dict[str, dict[str, int]], node_labels: list[dict[str, str]]) -> list[int]:
    """Each node's domain sum from ``table``, scaled so the lowest is 0 and the highest 100."""
    raw = [0] * len(node_labels)
    for key, domains in table.items():  # usually one key: a column at a time is cheapest
        get = domains.get
        raw = [r + get(labels.get(key), 0) for r, labels in zip(raw, node_labels, strict=True)]
    if not raw:
        return raw
    low, high = min(raw), max(raw)
    if high == low:
        return [0] * len(raw)
    return [int(MAX_NODE_SCORE * (r - low) / (high - low)) for r in raw]
