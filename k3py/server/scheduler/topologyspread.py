"""Pod topology spread constraints, the hard kind (``whenUnsatisfiable: DoNotSchedule``).

For each such constraint the pods matching its ``labelSelector`` in the pod's namespace are
counted per value of ``topologyKey`` over the *eligible* nodes — nodes that carry the key and
(``nodeAffinityPolicy: Honor``, the default) pass the pod's nodeSelector and required node
affinity. Placing the pod on a node in domain ``v`` is allowed when
``count[v] + self - min(count)`` stays within ``maxSkew`` (``self`` is 1 if the pod matches its
own selector; the minimum is 0 while fewer than ``minDomains`` domains exist). Nodes without
the key fail with "(missing required label)". ``ScheduleAnyway`` constraints only steer
scoring upstream and are ignored here. ``matchLabelKeys`` adds the pod's own values of those
labels to the selector, as upstream does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from k3py.api.selectors import SelectorError, label_selector_from_dict

Obj = dict[str, Any]

REASON_SKEW = "node(s) didn't match pod topology spread constraints"
REASON_MISSING = "node(s) didn't match pod topology spread constraints (missing required label)"


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
        selector_dict = dict(c.get("labelSelector") or {})
        match_keys = [k for k in c.get("matchLabelKeys") or () if k in own_labels]
        if match_keys:
            exprs = list(selector_dict.get("matchExpressions") or [])
            exprs += [{"key": k, "operator": "In", "values": [own_labels[k]]} for k in match_keys]
            selector_dict["matchExpressions"] = exprs
        try:
            selector = label_selector_from_dict(selector_dict) if c.get("labelSelector") is not None else None
        except SelectorError:
            selector = None
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
