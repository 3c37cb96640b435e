"""Conversion between versions that share stored objects.

Two pairs of served resources keep their objects under one storage key (ResourceInfo's
`storage_resource`), as upstream stores each in one version whichever API wrote it:

* HorizontalPodAutoscaler autoscaling/v1 and autoscaling/v2. v1 knows a single CPU
  utilization target; everything else v2 holds (other metrics, behavior, conditions, current
  metrics) rides along in annotations when an object is shown as v1, so a v1 read-modify-write
  loses nothing — the annotations upstream uses for this
  (`autoscaling.alpha.kubernetes.io/metrics`, `.../current-metrics`, `.../conditions`,
  `.../behavior`), here holding the v2 form of those fields as JSON.
* Event core/v1 and events.k8s.io/v1: the same fields under other names (message/note,
  involvedObject/regarding, source/deprecatedSource, count/deprecatedCount, ...).

`convert_object(obj, info)` returns `obj` as `info`'s version shows it; objects of kinds
without a conversion just get the apiVersion. Inputs are never mutated.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from k3py.api.resources import ResourceInfo

HPA_METRICS = "autoscaling.alpha.kubernetes.io/metrics"
HPA_CURRENT_METRICS = "autoscaling.alpha.kubernetes.io/current-metrics"
HPA_CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
HPA_BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"

# core/v1 Event field → events.k8s.io/v1 Event field
_EVENT_RENAMES = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}


def _version_of(obj: dict) -> str:
    return str(obj.get("apiVersion") or "")


def _event_to_new(obj: dict) -> dict:
    return {_EVENT_RENAMES.get(k, k): copy.deepcopy(v) for k, v in obj.items()}


def _event_to_core(obj: dict) -> dict:
    back = {new: old for old, new in _EVENT_RENAMES.items()}
    return {back.get(k, k): copy.deepcopy(v) for k, v in obj.items()}


def _is_cpu_utilization(metric: Any) -> bool:
    return (
        isinstance(metric, dict)
        and metric.get("type") == "Resource"
        and (metric.get("resource") or {}).get("name") == "cpu"
        and ((metric.get("resource") or {}).get("target") or {}).get("type") == "Utilization"
    )


def _annotations(obj: dict) -> dict:
    meta = obj.setdefault("metadata", {})
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
        meta["annotations"] = annotations
    return annotations


def _hpa_v2_to_v1(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    spec = out.get("spec") if isinstance(out.get("spec"), dict) else {}
    status = out.get("status") if isinstance(out.get("status"), dict) else None
    metrics = spec.pop("metrics", None) or []
    behavior = spec.pop("behavior", None)
    others = []
    for metric in metrics:
        if _is_cpu_utilization(metric) and "targetCPUUtilizationPercentage" not in spec:
            target = metric["resource"]["target"].get("averageUtilization")
            if isinstance(target, int):
                spec["targetCPUUtilizationPercentage"] = target
                continue
        others.append(metric)
    if others:
        _annotations(out)[HPA_METRICS] = json.dumps(others, separators=(",", ":"))
    if behavior is not None:
        _annotations(out)[HPA_BEHAVIOR] = json.dumps(behavior, separators=(",", ":"))
    if status is not None:
        current = status.pop("currentMetrics", None) or []
        conditions = status.pop("conditions", None)
        rest = []
        for metric in current:
            res = metric.get("resource") if isinstance(metric, dict) else None
            util = ((res or {}).get("current") or {}).get("averageUtilization")
            if metric.get("type") == "Resource" and (res or {}).get("name") == "cpu" and isinstance(util, int):
                status["currentCPUUtilizationPercentage"] = util
            else:
                rest.append(metric)
        if rest:
            _annotations(out)[HPA_CURRENT_METRICS] = json.dumps(rest, separators=(",", ":"))
        if conditions:
            _annotations(out)[HPA_CONDITIONS] = json.dumps(conditions, separators=(",", ":"))
    return out


def _load_annotation(obj: dict, key: str) -> Any:
    annotations = (obj.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict) or key not in annotations:
        return None
    raw = annotations.pop(key)
    if not annotations:
        obj["metadata"].pop("annotations", None)
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None  # a hand-edited annotation that is not JSON carries nothing


def _hpa_v1_to_v2(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    spec = out.setdefault("spec", {}) if isinstance(out.get("spec", {}), dict) else {}
    metrics: list = []
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if isinstance(target, int):
        metrics.append(
            {"type": "Resource",
             "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}
        )  # fmt: skip
    extra = _load_annotation(out, HPA_METRICS)
    if isinstance(extra, list):
        metrics.extend(m for m in extra if not _is_cpu_utilization(m) or not isinstance(target, int))
    if metrics:
        spec["metrics"] = metrics
    behavior = _load_annotation(out, HPA_BEHAVIOR)
    if isinstance(behavior, dict):
        spec["behavior"] = behavior
    current_extra = _load_annotation(out, HPA_CURRENT_METRICS)
    conditions = _load_annotation(out, HPA_CONDITIONS)
    status = out.get("status")
    if isinstance(status, dict):
        current: list = []
        util = status.pop("currentCPUUtilizationPercentage", None)
        if isinstance(util, int):
            current.append(
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": util}}}
            )
        if isinstance(current_extra, list):
            current.extend(current_extra)
        if current:
            status["currentMetrics"] = current
        if isinstance(conditions, list):
            status["conditions"] = conditions
    return out


def convert_object(obj: dict, info: ResourceInfo) -> dict:
    """`obj` (of any version sharing `info`'s storage) as `info`'s version shows it."""
    source = _version_of(obj)
    target = info.api_version
    out: dict
    if info.kind == "Event" and info.group in ("", "events.k8s.io"):
        is_new = source == "events.k8s.io/v1"
        if info.group == "events.k8s.io" and not is_new:
            out = _event_to_new(obj)
        elif info.group == "" and is_new:
            out = _event_to_core(obj)
        else:
            out = copy.deepcopy(obj)
    elif info.kind == "HorizontalPodAutoscaler" and info.group == "autoscaling":
        if target == "autoscaling/v1" and source == "autoscaling/v2":
            out = _hpa_v2_to_v1(obj)
        elif target == "autoscaling/v2" and source == "autoscaling/v1":
            out = _hpa_v1_to_v2(obj)
        else:
            out = copy.deepcopy(obj)
    else:
        out = copy.deepcopy(obj)
    out["apiVersion"] = target
    out["kind"] = info.kind
    return out
