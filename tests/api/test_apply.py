"""Server-side apply: merge, field ownership, removal of dropped fields, conflicts, force."""

from __future__ import annotations

import copy

import pytest

from k3py.api.apply import (
    ApplyConflict,
    field_set,
    from_fields_v1,
    server_side_apply,
    to_fields_v1,
    track_update,
)
from k3py.api.patch import PatchError

NOW = "2026-01-01T00:00:00Z"
GVK = {"group": "apps", "version": "v1", "kind": "Deployment"}


def manifest(replicas: int = 2, labels: dict | None = None, containers: list | None = None) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels if labels is not None else {"app": "web", "tier": "fe"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers if containers is not None else [
                {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "log", "image": "busybox"},
            ]}},
        },
    }


def managers(obj: dict) -> dict[tuple[str, str], set]:
    return {(e["manager"], e["operation"]): from_fields_v1(e["fieldsV1"]) for e in obj["metadata"]["managedFields"]}


def test_first_apply_creates_and_records_ownership() -> None:
    obj = server_side_apply(None, manifest(), "kubectl", now=NOW, **GVK)
    assert obj["spec"]["replicas"] == 2 and obj["apiVersion"] == "apps/v1"
    [entry] = obj["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["apiVersion"], entry["fieldsType"]) == (
        "kubectl", "Apply", "apps/v1", "FieldsV1")
    fields = entry["fieldsV1"]
    assert fields["f:spec"]["f:replicas"] == {}
    assert fields["f:spec"]["f:selector"] == {}  # LabelSelector is an atomic map
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name":"app"}']["."] == {}
    assert containers['k:{"name":"app"}']["f:image"] == {}
    assert containers['k:{"name":"app"}']["f:env"]['k:{"name":"A"}']["f:value"] == {}
    assert "f:name" not in fields["f:metadata"] and fields["f:metadata"]["f:labels"]["f:tier"] == {}


def test_reapply_removes_what_the_manager_dropped() -> None:
    live = server_side_apply(None, manifest(), "kubectl", now=NOW, **GVK)
    smaller = manifest(labels={"app": "web"}, containers=[{"name": "app", "image": "nginx:2"}])
    out = server_side_apply(live, smaller, "kubectl", now=NOW, **GVK)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "nginx:2"}]
    assert live["metadata"]["labels"] == {"app": "web", "tier": "fe"}, "input must not change"


def test_fields_shared_with_another_manager_survive() -> None:
    live = server_side_apply(None, manifest(), "alice", now=NOW, **GVK)
    live = server_side_apply(live, manifest(labels={"tier": "fe"}, containers=[]), "bob", now=NOW, **GVK)
    out = server_side_apply(live, manifest(labels={"app": "web"}), "alice", now=NOW, **GVK)
    assert out["metadata"]["labels"] == {"app": "web", "tier": "fe"}  # bob still applies tier


def test_conflict_with_kubectl_scale_and_force() -> None:
    live = server_side_apply(None, manifest(), "kubectl", now=NOW, **GVK)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    track_update(live, scaled, "kubectl-scale", now=NOW, **GVK)
    assert ("f:spec", "f:replicas") in managers(scaled)[("kubectl-scale", "Update")]
    assert ("f:spec", "f:replicas") not in managers(scaled)[("kubectl", "Apply")]
    with pytest.raises(ApplyConflict) as err:
        server_side_apply(scaled, manifest(replicas=3), "kubectl", now=NOW, **GVK)
    assert err.value.code == 409
    assert str(err.value) == (
        f'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1 at {NOW}: .spec.replicas')
    assert err.value.causes() == [{"type": "FieldManagerConflict",
                                   "message": f'conflict with "kubectl-scale" using apps/v1 at {NOW}',
                                   "field": ".spec.replicas"}]
    # applying the value the field already has is no conflict
    same = server_side_apply(scaled, manifest(replicas=5), "kubectl", now=NOW, **GVK)
    assert same["spec"]["replicas"] == 5
    forced = server_side_apply(scaled, manifest(replicas=3), "kubectl", now=NOW, force=True, **GVK)
    assert forced["spec"]["replicas"] == 3
    assert ("kubectl-scale", "Update") not in managers(forced)  # it owned nothing else
    assert ("f:spec", "f:replicas") in managers(forced)[("kubectl", "Apply")]


def test_track_update_on_create_owns_everything() -> None:
    obj = manifest()
    track_update(None, obj, "kubectl-create", now=NOW, **GVK)
    owned = managers(obj)[("kubectl-create", "Update")]
    assert owned == field_set(manifest(), _deploy_shape())


def _deploy_shape():  # type: ignore[no-untyped-def]
    from k3py.api.apply import _shape_for

    return _shape_for("apps", "v1", "Deployment")


def test_fields_v1_round_trip_and_sets() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a", "b"]},
          "data": {"x": "1"}}
    obj = server_side_apply(None, cm, "m", group="", version="v1", kind="ConfigMap", now=NOW)
    fields = obj["metadata"]["managedFields"][0]["fieldsV1"]
    assert fields == {"f:data": {"f:x": {}}, "f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"b"': {}}}}
    assert to_fields_v1(from_fields_v1(fields)) == fields
    shrunk = server_side_apply(obj, {**cm, "metadata": {"name": "c", "finalizers": ["b"]}}, "m",
                               group="", version="v1", kind="ConfigMap", now=NOW)
    assert shrunk["metadata"]["finalizers"] == ["b"] and shrunk["data"] == {"x": "1"}


def test_bad_apply_requests() -> None:
    with pytest.raises(PatchError):
        server_side_apply(None, ["not", "an", "object"], "m", now=NOW, **GVK)  # type: ignore[arg-type]
    with pytest.raises(PatchError):
        server_side_apply(None, manifest(), "", now=NOW, **GVK)


def test_custom_resources_apply_without_a_schema() -> None:
    cr = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
          "spec": {"size": 1, "tags": ["a"], "nested": {"x": 1, "y": 2}}}
    obj = server_side_apply(None, cr, "m", group="example.com", version="v1", kind="Widget", now=NOW)
    out = server_side_apply(obj, {**cr, "spec": {"size": 2, "nested": {"x": 1}}}, "m",
                            group="example.com", version="v1", kind="Widget", now=NOW)
    assert out["spec"] == {"size": 2, "nested": {"x": 1}}


def test_an_item_keeps_fields_other_managers_own() -> None:
    live = server_side_apply(None, manifest(), "kubectl", now=NOW, **GVK)
    edited = copy.deepcopy(live)
    edited["spec"]["template"]["spec"]["containers"][1]["image"] = "busybox:2"
    track_update(live, edited, "kubectl-edit", now=NOW, **GVK)
    out = server_side_apply(edited, manifest(containers=[{"name": "app", "image": "nginx:1"}]),
                            "kubectl", now=NOW, **GVK)
    names = [c["name"] for c in out["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "log"]  # the edited image keeps "log" alive
    assert out["spec"]["template"]["spec"]["containers"][1]["image"] == "busybox:2"


def test_conflicts_between_appliers_are_listed_per_manager() -> None:
    live = server_side_apply(None, manifest(), "alice", now=NOW, **GVK)
    changed = manifest(replicas=9, containers=[{"name": "app", "image": "nginx:9"}])
    with pytest.raises(ApplyConflict) as err:
        server_side_apply(live, changed, "bob", now=NOW, **GVK)
    assert str(err.value) == (
        'Apply failed with 2 conflicts: conflicts with "alice":\n'
        '- .spec.replicas\n'
        '- .spec.template.spec.containers[name="app"].image')


def test_custom_resource_list_map_keys_from_its_schema() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"ports": {
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port"],
        "items": {"type": "object", "properties": {"port": {"type": "integer"}, "name": {"type": "string"}}}}}}}}
    cr = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
          "spec": {"ports": [{"port": 80, "name": "http"}]}}
    gvk = {"group": "example.com", "version": "v1", "kind": "Widget"}
    live = server_side_apply(None, cr, "a", now=NOW, schema=schema, **gvk)
    theirs = {**cr, "spec": {"ports": [{"port": 443, "name": "https"}]}}
    out = server_side_apply(live, theirs, "b", now=NOW, schema=schema, **gvk)
    assert out["spec"]["ports"] == [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]
    fields = {e["manager"]: e["fieldsV1"] for e in out["metadata"]["managedFields"]}
    assert 'k:{"port":443}' in fields["b"]["f:spec"]["f:ports"]


def test_status_subresource_apply_touches_only_status() -> None:
    live = server_side_apply(None, manifest(), "kubectl", now=NOW, **GVK)
    status_apply = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                    "spec": {"replicas": 99}, "status": {"replicas": 2, "readyReplicas": 1}}
    out = server_side_apply(live, status_apply, "controller", now=NOW, subresource="status", **GVK)
    assert out["status"] == {"replicas": 2, "readyReplicas": 1}
    assert out["spec"]["replicas"] == 2  # spec is not written through /status
    entry = next(e for e in out["metadata"]["managedFields"] if e["manager"] == "controller")
    assert entry["subresource"] == "status" and set(entry["fieldsV1"]) == {"f:status"}
    # a main-resource apply neither writes nor claims status
    again = server_side_apply(out, {**manifest(), "status": {"replicas": 7}}, "kubectl", now=NOW, **GVK)
    assert again["status"] == {"replicas": 2, "readyReplicas": 1}


def test_list_order_follows_the_applied_order() -> None:
    from k3py.api.apply import _merge_ordered

    def merge(live: list[str], applied: list[str]) -> list[str]:
        return _merge_ordered(live, applied, lambda x: x, lambda _old, new: new)

    assert merge(["a", "b"], ["a", "c", "b"]) == ["a", "c", "b"]  # new item where applied puts it
    assert merge(["a", "b", "c"], ["c", "a"]) == ["b", "c", "a"]  # shared items in applied order
    assert merge(["x", "a", "y", "b"], ["b", "a"]) == ["x", "y", "b", "a"]  # live-only items stay
    assert merge([], ["a", "b"]) == ["a", "b"] and merge(["a", "b"], []) == ["a", "b"]
    live = server_side_apply(None, manifest(), "kubectl", now=NOW, **GVK)
    reordered = manifest(containers=[{"name": "log", "image": "busybox"}, {"name": "side", "image": "envoy"},
                                     {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}])
    out = server_side_apply(live, reordered, "kubectl", now=NOW, **GVK)
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["log", "side", "app"]


def test_a_status_write_keeps_the_spec_owners_and_a_spec_write_keeps_the_status_owner() -> None:
    # As upstream: each endpoint re-assigns only the fields it writes; entries for the other
    # part of the object (and the subresource column) stay as they were.
    created = manifest()
    track_update(None, created, "kubectl-create", now=NOW, **GVK)
    with_status = copy.deepcopy(created)
    with_status["status"] = {"replicas": 2, "observedGeneration": 1}
    track_update(created, with_status, "kube-controller-manager", now=NOW, subresource="status", **GVK)
    owners = {(e["manager"], e.get("subresource", "")): from_fields_v1(e["fieldsV1"])
              for e in with_status["metadata"]["managedFields"]}
    assert owners[("kubectl-create", "")] == field_set(manifest(), _deploy_shape())
    assert owners[("kube-controller-manager", "status")] >= {("f:status", "f:replicas"), ("f:status", "f:observedGeneration")}
    scaled = copy.deepcopy(with_status)
    scaled["spec"]["replicas"] = 5
    track_update(with_status, scaled, "kubectl-scale", now=NOW, **GVK)
    owners = {(e["manager"], e.get("subresource", "")): from_fields_v1(e["fieldsV1"])
              for e in scaled["metadata"]["managedFields"]}
    assert owners[("kube-controller-manager", "status")] >= {("f:status", "f:replicas"), ("f:status", "f:observedGeneration")}
    assert owners[("kubectl-scale", "")] == {("f:spec", "f:replicas")}
    assert ("f:spec", "f:replicas") not in owners[("kubectl-create", "")]
