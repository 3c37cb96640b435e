"""changed_fields on a status write: only what the write changed, equal sub-trees skipped."""

from __future__ import annotations

import copy

from k3py.api.apply import _shape_for, changed_fields

OLD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
    "spec": {"containers": [{"name": "c", "image": "i"}]},
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "c", "ready": False, "restartCount": 0}],
    },
}  # fmt: skip


def test_only_changed_fields_of_a_status_write() -> None:
    new = copy.deepcopy(OLD)
    new["status"]["phase"] = "Running"
    new["status"]["conditions"][1]["status"] = "True"
    changed = changed_fields(new, OLD, _shape_for("", "v1", "Pod"), subresource="status")
    assert changed == {
        ("f:status", "f:phase"),
        ("f:status", "f:conditions", 'k:{"type":"Ready"}'),
        ("f:status", "f:conditions", 'k:{"type":"Ready"}', "f:status"),
    }


def test_an_unchanged_object_changes_nothing_and_a_new_one_everything() -> None:
    shape = _shape_for("", "v1", "Pod")
    assert changed_fields(copy.deepcopy(OLD), OLD, shape, subresource="status") == set()
    assert ("f:status", "f:containerStatuses") in changed_fields(OLD, None, shape, subresource="status")
