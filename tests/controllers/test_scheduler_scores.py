"""Scheduler scoring: which node wins, and why, with upstream's default plugins and weights.

Each test builds a real :class:`Scheduler` over the in-memory API (as test_scheduler_logic
does) and makes decisions the way its loop does (find_node, then assume the pod on the node).
Where least-allocated alone would pick differently, the test shows that too, so the plugin
under test is what moved the pod. Pure and fast: no tasks, no sleeps.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from k3py.server.scheduler.nodeinfo import NodeInfo, pod_requests
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.scheduler.scoring import normalize_by_max
from k3py.server.scheduler.topologyspread import (
    HOSTNAME,
    OwnerCounts,
    SoftConstraint,
    SpreadScorer,
    owner_uid,
)
from tests.controllers.test_scheduler_logic import node, scheduler

ZONE = "topology.kubernetes.io/zone"


def make_pod(name: str, labels: dict[str, str] | None = None, cpu: str = "100m", owner: str = "",
             **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": f"uid-{owner}", "controller": True}]
    container = {"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
    return {"metadata": meta, "spec": {"containers": [container], **spec}}


def schedule(s: Scheduler, p: dict[str, Any]) -> str | None:
    """One decision, then the assume step, as Scheduler.reconcile does it."""
    s.pod_informer.cache.upsert(p)
    name, _ = s.find_node(p)
    if name is not None:
        s._place(f"default/{p['metadata']['name']}", name, pod_requests(p), frozenset())
    return name


def busy(s: Scheduler, node_name: str, cpu: str) -> None:
    """An unrelated running pod using ``cpu`` on ``node_name``: least-allocated now avoids it."""
    filler = make_pod(f"filler-{node_name}", cpu=cpu)
    schedule_on = f"default/{filler['metadata']['name']}"
    s.pod_informer.cache.upsert(filler)
    s._place(schedule_on, node_name, pod_requests(filler), frozenset())


def preferred_node(weight: int, key: str, value: str) -> dict[str, Any]:
    return {"weight": weight, "preference": {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}}


def pod_term(weight: int, labels: dict[str, str], key: str = HOSTNAME) -> dict[str, Any]:
    return {"weight": weight, "podAffinityTerm": {"labelSelector": {"matchLabels": labels}, "topologyKey": key}}


# -- NodeAffinity (weight 2) --------------------------------------------------------------


def test_preferred_node_affinity_beats_least_allocated() -> None:
    s = scheduler(node(1, cpu="4", labels={"disk": "ssd"}), node(2, cpu="4"))
    busy(s, "n1", "1")
    assert schedule(s, make_pod("plain")) == "n2", "least-allocated alone picks the idle node"
    prefers_ssd = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [preferred_node(1, "disk", "ssd")]}}
    # n1 is 25% busier (about 12 least-allocated points) but matches the only term: its
    # normalised NodeAffinity score is 100, times weight 2.
    assert schedule(s, make_pod("ssd", affinity=prefers_ssd)) == "n1"


def test_heavier_preferred_term_wins_and_weights_add_up() -> None:
    s = scheduler(node(1, labels={"disk": "ssd"}), node(2, labels={"gpu": "yes"}), node(3))
    terms = [preferred_node(10, "disk", "ssd"), preferred_node(50, "gpu", "yes")]
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}
    assert schedule(s, make_pod("a", affinity=affinity)) == "n2"  # 50 > 10 > 0
    both = scheduler(node(1, labels={"disk": "ssd"}), node(2, labels={"gpu": "yes"}),
                     node(3, labels={"disk": "ssd", "gpu": "yes"}))
    busy(both, "n3", "1")  # the busiest node still wins: it matches both terms (60)
    assert schedule(both, make_pod("b", affinity=affinity)) == "n3"


def test_normalize_by_max_matches_upstream_integer_scaling() -> None:
    assert normalize_by_max([0, 10, 30]) == [0, 33, 100]
    assert normalize_by_max([0, 0]) == [0, 0]
    assert normalize_by_max([0, 1, 2], reverse=True) == [100, 50, 0]
    assert normalize_by_max([0, 0], reverse=True) == [100, 100]


# -- InterPodAffinity (weight 2) ----------------------------------------------------------


def test_preferred_anti_affinity_spreads_replicas_over_hostnames() -> None:
    # n1 is huge: least-allocated alone stacks every pod there.
    shapes = (node(1, cpu="64", memory="256Gi"), node(2), node(3))
    stacked = scheduler(*shapes)
    assert [schedule(stacked, make_pod(f"p{i}", {"app": "web"})) for i in range(3)] == ["n1", "n1", "n1"]
    s = scheduler(*shapes)
    apart = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [pod_term(100, {"app": "web"})]}}
    placed = [schedule(s, make_pod(f"w{i}", {"app": "web"}, affinity=apart)) for i in range(3)]
    assert placed[0] == "n1" and sorted(placed) == ["n1", "n2", "n3"]
    # Every hostname now holds one: anti-affinity is equal everywhere, least-allocated decides.
    assert schedule(s, make_pod("w3", {"app": "web"}, affinity=apart)) == "n1"


def test_preferred_affinity_colocates_with_a_labelled_pod() -> None:
    s = scheduler(node(1), node(2), node(3))
    busy(s, "n2", "1")
    s.pod_informer.cache.upsert(cache := make_pod("cache", {"app": "cache"}))
    s._place("default/cache", "n2", pod_requests(cache), frozenset())
    assert schedule(s, make_pod("loner")) != "n2"
    near = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [pod_term(10, {"app": "cache"})]}}
    assert schedule(s, make_pod("web", {"app": "web"}, affinity=near)) == "n2"


def test_preferred_affinity_follows_a_zone_not_just_a_host() -> None:
    s = scheduler(node(1, labels={ZONE: "a"}), node(2, labels={ZONE: "b"}), node(3, labels={ZONE: "b"}))
    s.pod_informer.cache.upsert(db := make_pod("db", {"app": "db"}))
    s._place("default/db", "n2", pod_requests(db), frozenset())
    busy(s, "n2", "1")
    near = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [pod_term(5, {"app": "db"}, ZONE)]}}
    assert schedule(s, make_pod("api", affinity=near)) == "n3"  # zone b, and n3 is emptier than n2


def test_existing_pods_preferred_anti_affinity_repels_the_incoming_pod() -> None:
    s = scheduler(node(1), node(2))
    shy = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [pod_term(50, {"noisy": "true"})]}}
    s.pod_informer.cache.upsert(quiet := make_pod("quiet", {"app": "quiet"}, affinity=shy))
    s._place("default/quiet", "n2", pod_requests(quiet), frozenset())
    busy(s, "n1", "1")
    assert schedule(s, make_pod("calm")) == "n2", "least-allocated: n2 is emptier"
    assert schedule(s, make_pod("loud", {"noisy": "true"})) == "n1"  # kept off the quiet pod's node


def test_preferred_terms_in_other_namespaces_do_not_count() -> None:
    s = scheduler(node(1), node(2))
    other = make_pod("cache", {"app": "cache"})
    other["metadata"]["namespace"] = "elsewhere"
    s.pod_informer.cache.upsert(other)
    s._place("elsewhere/cache", "n2", pod_requests(other), frozenset())
    busy(s, "n2", "1")
    near = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [pod_term(10, {"app": "cache"})]}}
    assert schedule(s, make_pod("web", affinity=near)) == "n1"  # the term looks in its own namespace


# -- PodTopologySpread (weight 2): system defaults by owner, and ScheduleAnyway ------------


def test_replicas_of_one_replicaset_spread_evenly_despite_least_allocated() -> None:
    s = scheduler(*(node(i, cpu="4", memory="8Gi") for i in range(1, 5)))
    busy(s, "n1", "1")  # least-allocated alone would give n1 fewer pods
    placed = Counter(schedule(s, make_pod(f"web-{i}", {"app": "web"}, owner="web-rs")) for i in range(12))
    assert placed == {"n1": 3, "n2": 3, "n3": 3, "n4": 3}
    bare = scheduler(*(node(i, cpu="4", memory="8Gi") for i in range(1, 5)))
    busy(bare, "n1", "1")
    unowned = Counter(schedule(bare, make_pod(f"bare-{i}", {"app": "web"})) for i in range(12))
    assert unowned["n1"] < 3, "without an owner there is no default spreading"


def test_two_replicasets_spread_independently() -> None:
    s = scheduler(node(1), node(2))
    first = [schedule(s, make_pod(f"a{i}", owner="a")) for i in range(2)]
    second = [schedule(s, make_pod(f"b{i}", owner="b")) for i in range(2)]
    assert sorted(first) == ["n1", "n2"] and sorted(second) == ["n1", "n2"]


def test_replicas_spread_over_zones_as_well_as_hosts() -> None:
    # Zone a has three nodes, zone b one. By hostname alone n4 would get an even 2 of 8; the
    # zone constraint (maxSkew 3, weight ln(2 zones + 2)) pulls zone b's lone node above that.
    zoned = scheduler(node(1, labels={ZONE: "a"}), node(2, labels={ZONE: "a"}), node(3, labels={ZONE: "a"}),
                      node(4, labels={ZONE: "b"}))
    placed = [schedule(zoned, make_pod(f"r{i}", owner="rs")) for i in range(8)]
    # Second pod: zone b is empty (raw 9 vs 12 -> normalised 100 vs 75), so n4 at once.
    assert placed[:2] == ["n1", "n4"]
    assert Counter(placed) == {"n4": 3, "n1": 2, "n2": 2, "n3": 1}
    assert Counter("b" if n == "n4" else "a" for n in placed) == {"a": 5, "b": 3}
    flat = scheduler(*(node(i) for i in range(1, 5)))
    assert Counter(schedule(flat, make_pod(f"f{i}", owner="rs")) for i in range(8))["n4"] == 2


def test_explicit_schedule_anyway_constraint_steers_but_never_refuses() -> None:
    s = scheduler(node(1, labels={ZONE: "a"}), node(2, labels={ZONE: "a"}), node(3, labels={ZONE: "b"}))
    busy(s, "n3", "1")
    soft = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}}}]
    placed = [schedule(s, make_pod(f"w{i}", {"app": "web"}, topologySpreadConstraints=soft)) for i in range(4)]
    assert Counter("b" if n == "n3" else "a" for n in placed) == {"a": 2, "b": 2}
    # Only zone b's node has room left: the soft constraint yields (a hard one would refuse).
    s.nodes["n1"].alloc_pods = s.nodes["n1"].pod_count
    s.nodes["n2"].alloc_pods = s.nodes["n2"].pod_count
    assert schedule(s, make_pod("w4", {"app": "web"}, topologySpreadConstraints=soft)) == "n3"


def test_explicit_constraints_replace_the_owner_defaults() -> None:
    # A pod with any constraint of its own gets no default spreading; here a hard constraint on
    # a key no node has matters only as a filter, so least-allocated alone stacks on big n1.
    s = scheduler(node(1, cpu="64", memory="256Gi", labels={"rack": "r1"}), node(2, labels={"rack": "r1"}))
    hard = [{"maxSkew": 10, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "x"}}}]
    assert [schedule(s, make_pod(f"x{i}", {"app": "x"}, owner="x", topologySpreadConstraints=hard))
            for i in range(3)] == ["n1", "n1", "n1"]
    owned = scheduler(node(1, cpu="64", memory="256Gi"), node(2))
    assert sorted(schedule(owned, make_pod(f"y{i}", owner="y")) for i in range(2)) == ["n1", "n2"]


def test_spread_scorer_formula_matches_upstream() -> None:
    nodes = [NodeInfo(f"n{i}", labels={HOSTNAME: f"n{i}", ZONE: z}) for i, z in enumerate("aab")]
    per_node = {"n0": 2, "n1": 1}
    scorer = SpreadScorer([SoftConstraint(ZONE, 3, per_node, {"a": 3}),
                           SoftConstraint(HOSTNAME, 5, per_node, {})], require_all=False)
    # raw = count(zone)*ln(2 zones + 2) + 2 + count(host)*ln(3 nodes + 2) + 4, rounded
    zone_w, host_w = math.log(4), math.log(5)
    raw = [round(3 * zone_w + 2 + 2 * host_w + 4), round(3 * zone_w + 2 + host_w + 4), 6]
    assert raw == [13, 12, 6]
    assert scorer.scores(nodes) == [100 * (13 + 6 - r) // 13 for r in raw] == [46, 53, 100]


def test_owner_counts_follow_zone_relabels_and_removal() -> None:
    counts = OwnerCounts()
    counts.add("ns/a", "u", "n1", "a")
    counts.add("ns/b", "u", "n1", "a")
    counts.set_zone("ns/a", "b")
    assert counts.by_node == {"u": {"n1": 2}} and counts.by_zone == {"u": {"a": 1, "b": 1}}
    counts.remove("ns/a")
    counts.remove("ns/b")
    assert counts.by_node == {} and counts.by_zone == {}


def test_scheduler_rezones_owner_counts_when_a_node_label_changes() -> None:
    s = scheduler(node(1, labels={ZONE: "a"}), node(2, labels={ZONE: "b"}))
    schedule(s, make_pod("r0", owner="rs"))
    where = next(iter(s._owners.by_node["uid-rs"]))
    relabelled = node(int(where[1:]), labels={ZONE: "c"})
    s._node_updated(s.nodes[where].node, relabelled)
    assert s._owners.by_zone["uid-rs"] == {"c": 1}


# -- TaintToleration (weight 3) -----------------------------------------------------------


def test_prefer_no_schedule_taint_is_avoided_unless_tolerated() -> None:
    soft_taint = [{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}]
    s = scheduler(node(1, cpu="64", memory="256Gi", spec__taints=soft_taint), node(2))
    assert schedule(s, make_pod("a")) == "n2"  # n1 is far emptier, but tainted
    tolerant = [{"key": "spot", "operator": "Exists", "effect": "PreferNoSchedule"}]
    assert schedule(s, make_pod("b", tolerations=tolerant)) == "n1"


def _oracle_totals(s: Scheduler, placed: list[tuple[str, str]], owner: str, cpu_m: int,
                   anti_weight: int = 0) -> dict[str, float]:
    """Upstream's arithmetic written out independently: least-allocated + 2 x default spreading
    (+ 2 x inter-pod affinity when every pod prefers ``anti_weight`` away from its owner's pods
    by hostname)."""
    infos = list(s.nodes.values())
    mine = Counter(name for o, name in placed if o == owner)
    zone_of = {i.name: i.labels.get(ZONE) for i in infos}
    per_zone = Counter(zone_of[name] for name in mine.elements() if zone_of[name] is not None)
    zone_w, host_w = math.log(len({z or "" for z in zone_of.values()}) + 2), math.log(len(infos) + 2)
    raw = {}
    for i in infos:
        r = mine[i.name] * host_w + 4
        if zone_of[i.name] is not None:
            r += per_zone[zone_of[i.name]] * zone_w + 2
        raw[i.name] = math.floor(r + 0.5)
    high, low = max(raw.values()), min(raw.values())
    totals = {}
    for i in infos:
        free_cpu = max(0.0, (i.alloc_cpu - i.score_cpu - cpu_m) / i.alloc_cpu)
        free_mem = max(0.0, (i.alloc_memory - i.score_memory - 64 * 2**20) / i.alloc_memory)
        spread = 100 if high == 0 else 100 * (high + low - raw[i.name]) // high
        totals[i.name] = 50 * (free_cpu + free_mem) + 2 * spread
    if anti_weight:
        # Both directions count: the incoming pod's term and each placed pod's identical term.
        inter = {i.name: -2 * anti_weight * mine[i.name] for i in infos}
        top, bottom = max(inter.values()), min(inter.values())
        for name, value in inter.items():
            totals[name] += 2 * (int(100 * (value - bottom) / (top - bottom)) if top > bottom else 0)
    return totals


@pytest.mark.parametrize("anti_weight", [0, 30])
def test_owner_fast_path_picks_a_best_node_by_the_full_formula(anti_weight: int) -> None:
    # Unequal nodes, some zoned and some not, other load, three interleaved ReplicaSets (with
    # or without preferred anti-affinity to their own kind): every decision of the folded fast
    # path must score as high as the best node by the formula.
    for zones in ("", "aab-b-c", "aaaaaaa"):
        s = scheduler(*(node(i, cpu=str(2 + i % 3), labels={ZONE: zones[i - 1]} if zones and zones[i - 1] != "-" else {})
                        for i in range(1, 8)))
        busy(s, "n2", "1")
        placed: list[tuple[str, str]] = []
        for i in range(30):
            owner = "abc"[i % 3]
            cpu_m = 100 * (1 + i % 2)
            totals = _oracle_totals(s, placed, owner, cpu_m, anti_weight)
            apart = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                pod_term(anti_weight, {"app": owner})]}} if anti_weight else {}
            name = schedule(s, make_pod(f"{owner}{i}", {"app": owner}, owner=owner, cpu=f"{cpu_m}m", affinity=apart))
            assert name is not None
            assert totals[name] == max(totals.values()), (zones, i, name, totals)
            placed.append((owner, name))


def test_default_zone_counts_honor_the_pods_node_selector() -> None:
    # Zone a: n1 (ssd) and n2 (no ssd, already holding 3 replicas); zone b: n3 (ssd, busier).
    # The pod may only use ssd nodes, so n2's replicas do not count against zone a
    # (nodeAffinityPolicy Honor): both zones look empty and least-allocated picks n1.
    s = scheduler(node(1, labels={ZONE: "a", "disk": "ssd"}), node(2, labels={ZONE: "a"}),
                  node(3, labels={ZONE: "b", "disk": "ssd"}))
    for i in range(3):
        s.pod_informer.cache.upsert(p := make_pod(f"old{i}", owner="rs"))
        s._place(f"default/old{i}", "n2", pod_requests(p), frozenset())
    busy(s, "n3", "200m")
    assert schedule(s, make_pod("new", owner="rs", nodeSelector={"disk": "ssd"})) == "n1"
    # The same pod without the selector counts zone a's 3 replicas and goes to zone b.
    assert schedule(s, make_pod("free", owner="rs")) == "n3"


def test_relabelled_or_adopted_pods_are_refiled_for_scoring() -> None:
    s = scheduler(node(1), node(2))
    s.pod_informer.cache.upsert(cache := make_pod("cache", {"app": "cache"}))
    cache["spec"]["nodeName"] = "n2"
    s._pod_added(cache)
    busy(s, "n2", "1")
    near = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [pod_term(10, {"app": "cache"})]}}
    assert s.find_node(make_pod("web", affinity=near))[0] == "n2"
    relabelled = {**cache, "metadata": {**cache["metadata"], "labels": {"app": "retired"}}}
    s.pod_informer.cache.upsert(relabelled)
    s._pod_updated(cache, relabelled)
    assert s.find_node(make_pod("web", affinity=near))[0] == "n1"  # nothing to follow: least-allocated
    # Adoption by a ReplicaSet (an ownerReference added) makes the pod count for its spreading.
    adopted = make_pod("cache", {"app": "retired"}, owner="rs")
    adopted["spec"]["nodeName"] = "n2"
    s.pod_informer.cache.upsert(adopted)
    s._pod_updated(relabelled, adopted)
    assert s._owners.by_node == {"uid-rs": {"n2": 1}}


def test_explicit_constraint_ranks_nodes_without_its_key_last() -> None:
    # Upstream ignores such nodes when scoring (score 0) rather than refusing them.
    s = scheduler(node(1, labels={ZONE: "a"}), node(2))
    busy(s, "n1", "1")
    soft = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}}}]
    assert schedule(s, make_pod("plain", {"app": "web"})) == "n2"
    assert schedule(s, make_pod("spread", {"app": "web"}, topologySpreadConstraints=soft)) == "n1"
    s.nodes["n1"].alloc_pods = s.nodes["n1"].pod_count  # full: the unlabelled node still serves
    assert schedule(s, make_pod("more", {"app": "web"}, topologySpreadConstraints=soft)) == "n2"


def test_default_spreading_groups_by_the_controller_owner() -> None:
    pod = make_pod("p")
    assert owner_uid(pod) is None
    pod["metadata"]["ownerReferences"] = [{"kind": "ConfigMap", "name": "x", "uid": "cm"},
                                          {"kind": "ReplicaSet", "name": "rs", "uid": "rs", "controller": True}]
    assert owner_uid(pod) == "rs"
    pod["metadata"]["ownerReferences"] = [{"kind": "ConfigMap", "name": "x", "uid": "cm"}]
    assert owner_uid(pod) == "cm"
