"""JSON, merge and strategic merge patches, checked against kubectl's own patch code.

`kubectl patch --local` applies a patch with the same Go libraries the API server uses
(evanphx/json-patch, apimachinery's strategicpatch) without talking to a cluster, so every
case here is compared with what it prints — besides the explicit expectations that document
the semantics. kubectl must be installed: these tests fail without it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from k3py.api.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    patch_schema_for,
)


def kubectl_patch(obj: dict, patch_type: str, patch: Any) -> dict | None:
    """What `kubectl patch --local` makes of `obj`; None when kubectl refuses the patch."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is required for the patch tests"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "obj.json"
        path.write_text(json.dumps(obj))
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["KUBECONFIG"] = str(Path(tmp) / "none")
        env["KUBECACHEDIR"] = str(Path(tmp) / "cache")
        proc = subprocess.run(
            [kubectl, "patch", "-f", str(path), "--local", "--type", patch_type,
             "-p", json.dumps(patch), "-o", "json"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def deployment() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"},
                     "finalizers": ["a.example/x", "b.example/y"],
                     "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:1.25", "args": ["-a", "-b"],
                         "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                        {"name": "log", "image": "busybox:1", "command": ["tail", "-f"]},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}],
                },
            },
        },
    }


DEPLOY_SMP = patch_schema_for("apps", "v1", "Deployment")


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


SMP_CASES: dict[str, dict] = {
    "set image keeps order via $setElementOrder": {
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "log"}],
            "containers": [{"name": "log", "image": "busybox:2"}]}}}},
    "set element order reorders containers": {
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "log"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "nginx:2"}]}}}},
    "rollout restart annotation": {
        "spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}},
    "apply removes a container": {
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"$patch": "delete", "name": "log"}]}}}},
    "apply adds a container in the middle": {
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}, {"name": "log"}],
            "containers": [{"name": "side", "image": "envoy"}]}}}},
    "apply removes and changes env vars": {
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "log"}],
            "containers": [{"name": "app",
                            "$setElementOrder/env": [{"name": "Y"}, {"name": "Z"}],
                            "env": [{"$patch": "delete", "name": "X"}, {"name": "Z", "value": "3"}]}]}}}},
    "null deletes fields": {"spec": {"replicas": None, "template": {"metadata": {"labels": {"app": None}}}}},
    "lists without a strategy are replaced": {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["-c"]}]}}}},
    "ports merge by containerPort": {
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 443, "protocol": "TCP"}]}]}}}},
    "retainKeys switches the strategy": {
        "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}},
    "retainKeys swaps a volume source": {
        "spec": {"template": {"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}}]}}}},
    "deleteFromPrimitiveList on finalizers": {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x"]}},
    "primitive merge list adds finalizers as a set": {
        "metadata": {"finalizers": ["c.example/z", "a.example/x"]}},
    "set element order on a primitive list": {
        "metadata": {"$setElementOrder/finalizers": ["b.example/y", "a.example/x"]}},
    "$patch replace on a map": {"spec": {"selector": {"$patch": "replace", "matchLabels": {"app": "web2"}}}},
    "$patch delete on a map": {"spec": {"strategy": {"$patch": "delete"}}},
    "$patch replace inside a merge list": {
        "spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}},
    "new field with nested directives": {
        "spec": {"template": {"spec": {"initContainers": [{"name": "init", "image": "busybox"}]}}}},
    "map replaced by scalar type change": {"spec": {"template": {"metadata": {"labels": {"app": "x", "new": "y"}}}}},
}


@pytest.mark.parametrize("name", list(SMP_CASES))
def test_strategic_merge_matches_kubectl(name: str) -> None:
    assert DEPLOY_SMP is not None
    doc = deployment()
    before = copy.deepcopy(doc)
    patch = SMP_CASES[name]
    patch_before = copy.deepcopy(patch)
    ours = apply_strategic_merge_patch(doc, patch, DEPLOY_SMP)
    assert doc == before and patch == patch_before, "inputs must not be mutated"
    assert ours == kubectl_patch(doc, "strategic", patch)
    _scribble(ours)  # the result shares nothing with the inputs
    assert doc == before and patch == patch_before


def _scribble(value: Any) -> None:
    """Change every container of a JSON value in place."""
    if isinstance(value, dict):
        for v in value.values():
            _scribble(v)
        value["scribbled"] = True
    elif isinstance(value, list):
        for v in value:
            _scribble(v)
        value.append("scribbled")


def test_strategic_merge_semantics_spelled_out() -> None:
    assert DEPLOY_SMP is not None
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["set image keeps order via $setElementOrder"], DEPLOY_SMP)
    assert [(c["name"], c["image"]) for c in containers(out)] == [("app", "nginx:1.25"), ("log", "busybox:2")]
    assert containers(out)[0]["env"] == deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["apply removes a container"], DEPLOY_SMP)
    assert [c["name"] for c in containers(out)] == ["app"]
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["apply adds a container in the middle"], DEPLOY_SMP)
    assert [c["name"] for c in containers(out)] == ["app", "side", "log"]
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["retainKeys switches the strategy"], DEPLOY_SMP)
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["retainKeys swaps a volume source"], DEPLOY_SMP)
    assert out["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "configMap": {"name": "cfg"}}]
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["deleteFromPrimitiveList on finalizers"], DEPLOY_SMP)
    assert out["metadata"]["finalizers"] == ["b.example/y"]
    out = apply_strategic_merge_patch(deployment(), SMP_CASES["lists without a strategy are replaced"], DEPLOY_SMP)
    assert containers(out)[0]["args"] == ["-c"]


def test_three_way_apply_patch_of_a_service() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                              {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}],
                    "selector": {"app": "web"}, "clusterIP": "10.43.0.5", "type": "ClusterIP"}}
    patch = {"spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 8443}],
                      "ports": [{"port": 80, "$patch": "delete"},
                                {"name": "alt", "port": 8443, "protocol": "TCP", "targetPort": 9443}]}}
    schema = patch_schema_for("", "v1", "Service")
    assert schema is not None
    ours = apply_strategic_merge_patch(svc, patch, schema)
    assert [p["port"] for p in ours["spec"]["ports"]] == [443, 8443]
    assert ours == kubectl_patch(svc, "strategic", patch)


def test_strategic_merge_errors() -> None:
    assert DEPLOY_SMP is not None
    bad = [
        {"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}},
        {"spec": {"strategy": {"$patch": "explode"}}},
        {"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}},
    ]
    for patch in bad:
        with pytest.raises(PatchError):
            apply_strategic_merge_patch(deployment(), patch, DEPLOY_SMP)
        assert kubectl_patch(deployment(), "strategic", patch) is None, patch


def test_patch_schema_lookup() -> None:
    assert patch_schema_for("example.com", "v1", "Widget") is None
    pod = patch_schema_for("", "v1", "Pod")
    assert pod is not None
    spec, _ = pod.field("spec")
    _, meta = spec.field("containers")
    assert (meta.strategy, meta.merge_key, meta.list_map_keys) == ("merge", "name", ("name",))
    _, meta = spec.field("volumes")
    assert meta.strategies == ("merge", "retainKeys")
    _, meta = spec.field("nonexistent")
    assert meta.strategy == ""


def test_smp_on_configmap_behaves_as_merge_patch() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    schema = patch_schema_for("", "v1", "ConfigMap")
    assert schema is not None
    patch = {"data": {"a": None, "c": "3"}}
    assert apply_strategic_merge_patch(cm, patch, schema) == apply_merge_patch(cm, patch) == {
        **cm, "data": {"b": "2", "c": "3"}}


# --- merge patch ----------------------------------------------------------------------------

MERGE_CASES: list[Any] = [
    {"spec": {"replicas": 5}},
    {"metadata": {"labels": {"tier": None, "new": "x"}}},
    {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}},
    {"spec": {"strategy": None}},
]


@pytest.mark.parametrize("patch", MERGE_CASES)
def test_merge_patch_matches_kubectl(patch: Any) -> None:
    doc = deployment()
    ours = apply_merge_patch(doc, patch)
    assert doc == deployment()
    assert ours == kubectl_patch(doc, "merge", patch)
    _scribble(ours)
    assert doc == deployment()


def test_merge_patch_rfc7386_examples() -> None:
    doc = {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
           "tags": ["example", "sample"], "content": "This will be unchanged"}
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890",
             "author": {"familyName": None}, "tags": ["example"]}
    assert apply_merge_patch(doc, patch) == {
        "title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
        "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"}
    assert apply_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert apply_merge_patch({"a": [1]}, {"a": {"b": None}}) == {"a": {}}
    with pytest.raises(PatchError):
        apply_merge_patch({}, ["not", "an", "object"])  # type: ignore[arg-type]


# --- JSON patch -----------------------------------------------------------------------------

JSON_CASES: list[list[dict]] = [
    [{"op": "replace", "path": "/spec/replicas", "value": 7}],
    [{"op": "add", "path": "/metadata/labels/new~1key", "value": "v"}],
    [{"op": "remove", "path": "/metadata/labels/tier"}],
    [{"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "c", "image": "i"}}],
    [{"op": "add", "path": "/spec/template/spec/containers/0", "value": {"name": "c", "image": "i"}}],
    [{"op": "remove", "path": "/spec/template/spec/containers/-1"}],
    [{"op": "test", "path": "/spec/replicas", "value": 2},
     {"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata/labels"}],
    [{"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/level"}],
    # rollout undo: replace the template and the annotations
    [{"op": "replace", "path": "/spec/template",
      "value": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.24"}]}}},
     {"op": "replace", "path": "/metadata/annotations",
      "value": {"deployment.kubernetes.io/revision": "3"}}],
    # failures
    [{"op": "test", "path": "/spec/replicas", "value": 3}],
    [{"op": "remove", "path": "/metadata/nope"}],
    [{"op": "replace", "path": "/spec/paused", "value": True}],
    [{"op": "add", "path": "/spec/template/spec/containers/-3", "value": {"name": "z", "image": "z"}}],
    [{"op": "add", "path": "/spec/template/spec/containers/-4", "value": {"name": "z", "image": "z"}}],
    [{"op": "remove", "path": "/spec/paused"}],
    [{"op": "test", "path": "/spec/paused", "value": None}],
    [{"op": "test", "path": "/spec/replicas", "value": None}],
    [{"op": "move", "from": "/spec", "path": "/spec/template/x"}],
    [{"op": "add", "path": "/metadata/finalizers/01", "value": "z"}],
    [{"op": "replace", "path": "", "value": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "q"}}}],
    [{"op": "add", "path": "/no/such/parent", "value": 1}],
    [{"op": "add", "path": "/spec/template/spec/containers/5", "value": {}}],
    [{"op": "frobnicate", "path": "/spec"}],
]


@pytest.mark.parametrize("ops", JSON_CASES)
def test_json_patch_matches_kubectl(ops: list[dict]) -> None:
    doc = deployment()
    expected = kubectl_patch(doc, "json", ops)
    if expected is None:
        with pytest.raises(PatchError):
            apply_json_patch(doc, ops)
    else:
        ours = apply_json_patch(doc, ops)
        assert ours == expected
        _scribble(ours)
    assert doc == deployment()


def test_json_patch_errors_are_clear() -> None:
    with pytest.raises(PatchError, match="missing path"):
        apply_json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])
    with pytest.raises(PatchError, match="test failed"):
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(PatchError) as err:
        apply_json_patch({"a": 1}, {"op": "add"})  # type: ignore[arg-type]
    assert err.value.code == 400
    with pytest.raises(PatchError) as err:
        apply_json_patch({}, [{"op": "add", "path": "/a", "value": 1}] * 10001)
    assert err.value.code == 413
    assert apply_json_patch({"a": [1, 2]}, [{"op": "test", "path": "/a", "value": [1, 2.0]}]) == {"a": [1, 2]}


# --- randomized comparison with kubectl -----------------------------------------------------


def _random_patch(rng: Any) -> dict:
    """A strategic merge patch of the deployment() fixture mixing the directives kubectl sends."""
    names = ["app", "log", "side"]
    env_names = ["X", "Y", "Z"]
    container_patches: list[dict] = []
    for name in rng.sample(names, rng.randint(0, 3)):
        roll = rng.random()
        if roll < 0.2:
            container_patches.append({"$patch": "delete", "name": name})
            continue
        c: dict[str, Any] = {"name": name}
        if rng.random() < 0.5 or name == "side":
            c["image"] = rng.choice(["nginx:2", "busybox:3", "envoy"])
        # Directives only inside containers the object has: for a new one upstream stores the
        # raw patch item, directives and all (kubectl never sends that; the typed decoding of
        # a real server would then drop them).
        if rng.random() < 0.5 and name != "side":
            env: list[dict] = []
            for e in rng.sample(env_names, rng.randint(1, 3)):
                env.append({"$patch": "delete", "name": e} if rng.random() < 0.3
                           else {"name": e, "value": str(rng.randint(0, 9))})
            c["env"] = env
            if rng.random() < 0.5:
                c["$setElementOrder/env"] = [{"name": e["name"]} for e in env if "$patch" not in e]
        if rng.random() < 0.3:
            c["ports"] = [{"containerPort": rng.choice([80, 443, 8080]), "protocol": "TCP"}]
        if rng.random() < 0.2 and name != "side":
            c["args"] = None
        container_patches.append(c)
    spec: dict[str, Any] = {}
    if container_patches:
        spec["containers"] = container_patches
        if rng.random() < 0.6:
            keep = [c["name"] for c in container_patches if "$patch" not in c]
            others = [n for n in ["app", "log"] if n not in keep and
                      not any(c.get("name") == n and c.get("$patch") for c in container_patches)]
            order = keep + others
            rng.shuffle(order)
            spec["$setElementOrder/containers"] = [{"name": n} for n in order]
    if rng.random() < 0.3:
        spec["volumes"] = [{"name": "data", "$retainKeys": ["name", "hostPath"],
                            "hostPath": {"path": "/tmp"}}]
    patch: dict[str, Any] = {"spec": {"template": {"spec": spec}}}
    if rng.random() < 0.4:
        patch["metadata"] = {"finalizers": rng.sample(["a.example/x", "c.example/z"], rng.randint(1, 2))}
        if rng.random() < 0.5:
            patch["metadata"]["$deleteFromPrimitiveList/finalizers"] = ["b.example/y"]
    if rng.random() < 0.3:
        patch["spec"]["replicas"] = rng.choice([None, 4])
    return patch


@pytest.mark.parametrize("seed", range(30))
def test_random_strategic_patches_match_kubectl(seed: int) -> None:
    import random

    assert DEPLOY_SMP is not None
    patch = _random_patch(random.Random(seed))
    expected = kubectl_patch(deployment(), "strategic", patch)
    if expected is None:
        with pytest.raises(PatchError):
            apply_strategic_merge_patch(deployment(), patch, DEPLOY_SMP)
    else:
        assert apply_strategic_merge_patch(deployment(), patch, DEPLOY_SMP) == expected, json.dumps(patch)


def pod() -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": True},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u2"}]},
        "spec": {
            "containers": [{"name": "app", "image": "nginx", "volumeMounts": [
                {"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "reg1"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
        },
    }


POD_SMP_CASES: dict[str, dict] = {
    "volume source swapped with retainKeys": {"spec": {"volumes": [
        {"name": "data", "$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}}]}},
    "tolerations have no strategy: replaced": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}},
    "imagePullSecrets merge by name": {"spec": {"imagePullSecrets": [{"name": "reg2"}]}},
    "ownerReferences merge by uid, delete one": {"metadata": {"ownerReferences": [
        {"$patch": "delete", "uid": "u2"}, {"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u3"}]}},
    "volumeMounts merge by mountPath": {"spec": {"containers": [{"name": "app", "volumeMounts": [
        {"name": "data2", "mountPath": "/data"}]}]}},
    "topology constraints merge by key": {"spec": {"topologySpreadConstraints": [
        {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "DoNotSchedule"}]}},
    "whole list replaced with $patch replace": {"spec": {"volumes": [
        {"$patch": "replace"}, {"name": "only", "emptyDir": {}}]}},
    "delete a list element that is not there": {"spec": {"volumes": [{"$patch": "delete", "name": "nope"}]}},
    "null on a map field": {"spec": {"containers": [{"name": "app", "volumeMounts": None}]}},
}


@pytest.mark.parametrize("name", list(POD_SMP_CASES))
def test_pod_strategic_merge_matches_kubectl(name: str) -> None:
    schema = patch_schema_for("", "v1", "Pod")
    assert schema is not None
    patch = POD_SMP_CASES[name]
    assert apply_strategic_merge_patch(pod(), patch, schema) == kubectl_patch(pod(), "strategic", patch)


def test_absurdly_deep_patches_are_refused_cleanly() -> None:
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    schema = patch_schema_for("", "v1", "ConfigMap")
    assert schema is not None
    for apply in (
        lambda: apply_merge_patch({}, deep),
        lambda: apply_strategic_merge_patch({}, deep, schema),
        lambda: apply_json_patch(deep, [{"op": "add", "path": "/b", "value": 1}]),
    ):
        with pytest.raises(PatchError, match="nested too deeply"):
            apply()


OTHER_KIND_CASES: list[tuple[dict, dict]] = [
    # PodDisruptionBudget.spec.selector has patch strategy "replace": the map is replaced whole
    ({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
      "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "1", "b": "2"}}}},
     {"spec": {"selector": {"matchLabels": {"c": "3"}}}}),
    # Node.spec.podCIDRs is a merged list of scalars
    ({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
      "spec": {"podCIDRs": ["10.42.0.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]}},
     {"spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "j", "effect": "NoExecute"}]}}),
    # Service ports merge by port (even when two ports share a number: upstream's known quirk)
    ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
      "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                         {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
     {"spec": {"ports": [{"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353}]}}),
    # ServiceAccount secrets merge by name
    ({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}, "secrets": [{"name": "a"}]},
     {"secrets": [{"name": "b"}], "automountServiceAccountToken": False}),
]


@pytest.mark.parametrize("case", range(len(OTHER_KIND_CASES)))
def test_other_kinds_strategic_merge_match_kubectl(case: int) -> None:
    obj, patch = OTHER_KIND_CASES[case]
    group, _, version = obj["apiVersion"].rpartition("/")
    schema = patch_schema_for(group, version, obj["kind"])
    assert schema is not None
    assert apply_strategic_merge_patch(obj, patch, schema) == kubectl_patch(obj, "strategic", patch)


def test_long_lists_merge_in_linear_time() -> None:
    """A patch with tens of thousands of list items must not stall the server (no O(n²))."""
    import time

    schema = patch_schema_for("", "v1", "Pod")
    assert schema is not None
    n = 20000
    doc = {"metadata": {"finalizers": [f"f{i}" for i in range(n)]},
           "spec": {"containers": [{"name": f"c{i}", "image": "x"} for i in range(n)]}}
    patch = {"metadata": {"finalizers": [f"g{i}" for i in range(n)]},
             "spec": {"containers": [{"name": f"c{i}", "image": "y"} for i in range(0, n, 2)],
                      "$setElementOrder/containers": [{"name": f"c{i}"} for i in range(n)]}}
    start = time.monotonic()
    out = apply_strategic_merge_patch(doc, patch, schema)
    elapsed = time.monotonic() - start
    assert len(out["metadata"]["finalizers"]) == 2 * n
    assert [c["image"] for c in out["spec"]["containers"][:4]] == ["y", "x", "y", "x"]
    # quadratic matching would take minutes here; linear takes well under a second unloaded
    assert elapsed < 20, elapsed
