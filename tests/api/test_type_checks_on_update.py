"""Type checks on updates walk only what the write brought: shared parts of the stored object
are skipped by identity, never by equality (``True == 1`` in Python, not in Kubernetes)."""

from __future__ import annotations

import copy

from k3py.api.proto.structure import check_structure, type_causes_against
from k3py.api.resources import builtin_resources
from k3py.api.validation import type_causes, validate_object

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p", "namespace": "d", "labels": {"a": "1"}},
    "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}], "priority": 1},
    "status": {"phase": "Pending"},
}  # fmt: skip


def _pods():  # type: ignore[no-untyped-def]
    info = builtin_resources().lookup("", "v1", "pods")
    assert info is not None
    return info


def test_parts_shared_with_the_old_object_are_skipped_and_new_parts_checked() -> None:
    old = copy.deepcopy(POD)
    new = {**old, "metadata": dict(old["metadata"]), "status": {"phase": 3, "podIP": "10.0.0.1"}}
    report = type_causes_against("v1", "Pod", new, old)
    assert [c["field"] for c in report.type_causes] == ["status.phase"]
    # The shared spec is trusted: the very same object was checked when it was stored.
    old["spec"]["priority"] = "not checked again"
    assert [c["field"] for c in type_causes_against("v1", "Pod", new, old).type_causes] == ["status.phase"]
    assert "spec.priority" in [c["field"] for c in check_structure("v1", "Pod", new).type_causes]


def test_equal_but_not_identical_values_are_still_checked() -> None:
    old = copy.deepcopy(POD)
    new = copy.deepcopy(POD)
    new["spec"]["priority"] = True  # == 1, but a boolean where an integer belongs
    new["spec"]["containers"][0]["ports"][0]["containerPort"] = 80.0
    fields = sorted(c["field"] for c in type_causes_against("v1", "Pod", new, old).type_causes)
    assert fields == ["spec.containers[0].ports[0].containerPort", "spec.priority"]
    assert sorted(c["field"] for c in type_causes(_pods(), new, old)) == fields


def test_list_items_are_matched_by_position() -> None:
    old = copy.deepcopy(POD)
    containers = [old["spec"]["containers"][0], {"name": "d", "image": 5}]
    new = {**old, "spec": {**old["spec"], "containers": containers}}
    causes = type_causes_against("v1", "Pod", new, old).type_causes
    assert [c["field"] for c in causes] == ["spec.containers[1].image"]


def test_a_status_write_with_the_same_spec_passes_and_a_spec_change_is_still_forbidden() -> None:
    pods = _pods()
    old = copy.deepcopy(POD)
    old["spec"]["nodeName"] = "n1"
    same_spec = {**old, "status": {"phase": "Running"}}
    assert validate_object(pods, same_spec, old) == []
    changed = copy.deepcopy(same_spec)
    changed["spec"]["containers"][0]["name"] = "renamed"
    causes = validate_object(pods, changed, old)
    assert any(c["field"] == "spec" and "Forbidden" in c["message"] for c in causes)
    image_only = copy.deepcopy(same_spec)
    image_only["spec"]["containers"][0]["image"] = "i:2"  # images may change
    assert validate_object(pods, image_only, old) == []
