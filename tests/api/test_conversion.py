"""Objects shared between versions read back the same whichever version wrote them."""

from __future__ import annotations

import copy

from k3py.api.conversion import HPA_METRICS, convert_object
from k3py.api.resources import builtin_resources

TABLE = builtin_resources()
HPA_V1 = TABLE.lookup("autoscaling", "v1", "horizontalpodautoscalers")
HPA_V2 = TABLE.lookup("autoscaling", "v2", "horizontalpodautoscalers")
EV_CORE = TABLE.lookup("", "v1", "events")
EV_NEW = TABLE.lookup("events.k8s.io", "v1", "events")
assert HPA_V1 and HPA_V2 and EV_CORE and EV_NEW


def hpa_v2() -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
        },
        "status": {
            "currentReplicas": 2, "desiredReplicas": 2,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}],
            "conditions": [{"type": "AbleToScale", "status": "True"}],
        },
    }


def test_hpa_v2_reads_as_v1_and_back() -> None:
    original = hpa_v2()
    v1 = convert_object(original, HPA_V1)
    assert original == hpa_v2(), "input must not be mutated"
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 60
    assert "metrics" not in v1["spec"] and "behavior" not in v1["spec"]
    assert v1["status"]["currentCPUUtilizationPercentage"] == 12
    assert HPA_METRICS in v1["metadata"]["annotations"]
    back = convert_object(v1, HPA_V2)
    assert back == original


def test_hpa_v1_object_reads_as_v2() -> None:
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
          "metadata": {"name": "h"},
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                   "targetCPUUtilizationPercentage": 50},
          "status": {"currentReplicas": 1, "currentCPUUtilizationPercentage": 20}}
    v2 = convert_object(v1, HPA_V2)
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    assert v2["status"]["currentMetrics"][0]["resource"]["current"] == {"averageUtilization": 20}
    assert "targetCPUUtilizationPercentage" not in v2["spec"]
    assert convert_object(v2, HPA_V1) == v1
    # a broken annotation carries nothing but does not fail the read
    bad = copy.deepcopy(v1)
    bad["metadata"]["annotations"] = {HPA_METRICS: "{not json"}
    assert "annotations" not in convert_object(bad, HPA_V2)["metadata"]


def test_events_convert_both_ways() -> None:
    core = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started", "message": "Started container",
            "source": {"component": "kubelet", "host": "n1"}, "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:01:00Z", "count": 2, "type": "Normal",
            "reportingComponent": "kubelet", "reportingInstance": "n1"}
    new = convert_object(core, EV_NEW)
    assert new["apiVersion"] == "events.k8s.io/v1"
    assert new["regarding"] == {"kind": "Pod", "name": "p"} and new["note"] == "Started container"
    assert new["deprecatedCount"] == 2 and new["reportingController"] == "kubelet"
    assert "message" not in new and "involvedObject" not in new
    assert convert_object(new, EV_CORE) == core
    assert convert_object(core, EV_CORE) == core


def test_other_kinds_only_get_the_api_version() -> None:
    deploy = TABLE.lookup("apps", "v1", "deployments")
    assert deploy is not None
    obj = {"metadata": {"name": "x"}, "spec": {"replicas": 1}}
    assert convert_object(obj, deploy) == {**obj, "apiVersion": "apps/v1", "kind": "Deployment"}
