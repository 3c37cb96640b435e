"""Required inter-pod affinity and anti-affinity (upstream's InterPodAffinity filter).

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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from k3py.api.selectors import SelectorError, label_selector_from_dict

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
