"""Scoring: rank the feasible nodes for one pod, as upstream's default profile does.

Each score plugin gives every candidate node 0..100 after its own normalisation; the node
with the highest weighted sum wins (the first found among equals — the scheduler rotates
where it starts looking). Plugins and weights are upstream's defaults:

========================  ======  ========================================================
plugin                    weight  raw score -> normalised
========================  ======  ========================================================
TaintToleration           3       untolerated ``PreferNoSchedule`` taints; reversed, by max
NodeAffinity              2       sum of weights of matching preferred terms; scaled by max
PodTopologySpread         2       :mod:`~k3py.server.scheduler.topologyspread` (soft/default)
InterPodAffinity          2       :mod:`~k3py.server.scheduler.podaffinity`; scaled min..max
NodeResourcesFit          1       least allocated: mean free cpu/memory % after placing
========================  ======  ========================================================

Least-allocated is kept as a float (upstream truncates to an integer), so among nodes that
upstream would tie, the emptier one wins instead of a random one. BalancedAllocation and
ImageLocality are not implemented.

A plugin whose scores are equal on every candidate cannot change the winner, so the
scheduler builds a :class:`ScorePlan` only when some plugin besides least-allocated can
differ (:meth:`ScorePlan.active`); plain pods keep the inlined least-allocated loop. When the
only other plugins are default owner spreading and inter-pod affinity (a Deployment's pod,
perhaps with preferred anti-affinity), candidates outside the inter-pod table's domains that
hold as many of the owner's pods and share a zone score the same except for least-allocated,
so the scheduler keeps just the emptiest node of each such class (``foldable``) and passes
the real domain counts as ``spread_sizes``: a handful of candidates instead of hundreds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k3py.server.scheduler.nodeinfo import NodeInfo
from k3py.server.scheduler.podaffinity import inter_pod_scores
from k3py.server.scheduler.predicates import matches_node_selector_term, tolerates
from k3py.server.scheduler.topologyspread import SpreadScorer

Obj = dict[str, Any]

MAX_NODE_SCORE = 100
WEIGHT_TAINT_TOLERATION = 3
WEIGHT_NODE_AFFINITY = 2
WEIGHT_POD_TOPOLOGY_SPREAD = 2
WEIGHT_INTER_POD_AFFINITY = 2
WEIGHT_NODE_RESOURCES_FIT = 1


def normalize_by_max(raw: list[int], reverse: bool = False) -> list[int]:
    """Upstream's DefaultNormalizeScore: ``100 * s // max`` (reversed: 100 minus that)."""
    high = max(raw, default=0)
    if high == 0:
        return [MAX_NODE_SCORE if reverse else 0] * len(raw)
    if reverse:
        return [MAX_NODE_SCORE - MAX_NODE_SCORE * r // high for r in raw]
    return [MAX_NODE_SCORE * r // high for r in raw]


def preferred_node_terms(pod: Obj) -> list[tuple[int, Obj]]:
    """(weight, nodeSelectorTerm) pairs; zero weights and empty terms never match upstream."""
    affinity = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
    out = []
    for term in affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ():
        weight = int(term.get("weight") or 0)
        preference = term.get("preference") or {}
        if weight and (preference.get("matchExpressions") or preference.get("matchFields")):
            out.append((weight, preference))
    return out


def node_affinity_raw(terms: list[tuple[int, Obj]], node: NodeInfo) -> int:
    return sum(weight for weight, term in terms if matches_node_selector_term(term, node))


def untolerated_prefer_no_schedule(tolerations: list[Obj], node: NodeInfo) -> int:
    """How many of the node's PreferNoSchedule taints the pod does not tolerate."""
    usable = [t for t in tolerations if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"]
    return sum(1 for taint in node.taints if taint.effect == "PreferNoSchedule"
               and not any(tolerates(t, taint) for t in usable))


class ScorePlan:
    """The non-trivial plugins for one pod; :meth:`pick` chooses among the candidates."""

    __slots__ = ("foldable", "inter_pod", "node_terms", "owner_nodes", "prefer_taints", "spread", "tolerations")

    def __init__(self, pod: Obj, node_terms: list[tuple[int, Obj]], prefer_taints: bool,
                 spread: SpreadScorer | None, inter_pod: dict[str, dict[str, int]] | None) -> None:
        self.node_terms = node_terms
        self.prefer_taints = prefer_taints
        self.tolerations: list[Obj] = list((pod.get("spec") or {}).get("tolerations") or ())
        self.spread = spread
        self.inter_pod = inter_pod or None
        # Set by the scheduler: the owner's pods per node (default spreading), and whether
        # nodes outside inter-pod domains may be folded into one per (zone, owner pods) class.
        self.owner_nodes: Mapping[str, int] | None = None
        self.foldable = False

    @property
    def active(self) -> bool:
        return bool(self.node_terms or self.prefer_taints or self.spread is not None or self.inter_pod)

    def totals(self, candidates: list[NodeInfo], least_allocated: list[float],
               spread_sizes: Mapping[str, int] | None = None) -> list[float]:
        """Weighted sum per candidate; ``least_allocated`` is 0..100 per candidate."""
        totals = list(least_allocated)  # NodeResourcesFit, weight 1
        if self.prefer_taints:
            raw = [untolerated_prefer_no_schedule(self.tolerations, n) for n in candidates]
            self._add(totals, normalize_by_max(raw, reverse=True), WEIGHT_TAINT_TOLERATION)
        if self.node_terms:
            raw = [node_affinity_raw(self.node_terms, n) for n in candidates]
            self._add(totals, normalize_by_max(raw), WEIGHT_NODE_AFFINITY)
        if self.spread is not None:
            self._add(totals, self.spread.scores(candidates, spread_sizes), WEIGHT_POD_TOPOLOGY_SPREAD)
        if self.inter_pod:
            self._add(totals, inter_pod_scores(self.inter_pod, [n.labels for n in candidates]),
                      WEIGHT_INTER_POD_AFFINITY)
        return totals

    @staticmethod
    def _add(totals: list[float], scores: list[int], weight: int) -> None:
        for i, score in enumerate(scores):
            totals[i] += weight * score

    def pick(self, candidates: list[NodeInfo], least_allocated: list[float],
             spread_sizes: Mapping[str, int] | None = None) -> NodeInfo | None:
        if not candidates:
            return None
        totals = self.totals(candidates, least_allocated, spread_sizes)
        best = max(range(len(totals)), key=totals.__getitem__)  # first of equals
        return candidates[best]
