"""Helpers the workload controllers share: pod state, owner references, conditions, expectations.

Pod readiness and availability follow upstream's definitions exactly, because ``kubectl
rollout status`` and ``helm --wait`` compare the counts controllers derive from them:
a pod is *active* while it is neither Succeeded, Failed nor being deleted; *ready* when its
``Ready`` condition is True; *available* once it has been ready for ``minReadySeconds``.

:class:`Expectations` is the guard that makes level-triggered controllers safe on a lagging
cache: after creating or deleting pods a controller records how many adds/deletes it expects
to observe, and does not act on that owner again until its informer has seen them (or a
timeout passes) — otherwise a second reconcile would create the same pods twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from k3py.api.meta import now_rfc3339, parse_rfc3339
from k3py.api.selectors import LabelSelector, SelectorError, label_selector_from_dict

Obj = dict[str, Any]


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace", ""))


def uid_of(obj: Obj) -> str:
    return str(meta(obj).get("uid", ""))


def is_deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def selector_of(obj: Obj) -> LabelSelector | None:
    """The object's ``spec.selector`` as a selector; None when it is invalid (match nothing)."""
    try:
        return label_selector_from_dict((obj.get("spec") or {}).get("selector"))
    except SelectorError:
        return None


def controller_ref(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    """A controller ownerReference to ``owner`` that blocks its foreground deletion."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


# -- pods ------------------------------------------------------------------------------------


def pod_phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_pod_active(pod: Obj) -> bool:
    return pod_phase(pod) not in ("Succeeded", "Failed") and not is_deleting(pod)


def get_condition(obj: Obj, cond_type: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == cond_type:
            return cond
    return None


def is_pod_ready(pod: Obj) -> bool:
    cond = get_condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: Obj) -> datetime | None:
    cond = get_condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    stamp = cond.get("lastTransitionTime")
    try:
        return parse_rfc3339(stamp) if stamp else None
    except ValueError:
        return None


def available_in(pod: Obj, min_ready_seconds: int, now: datetime) -> float | None:
    """0 when available now, seconds until it becomes available, or None when not ready."""
    if not is_pod_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = ready_since(pod)
    if since is None:
        return 0.0
    remaining = min_ready_seconds - (now - since).total_seconds()
    return max(0.0, remaining)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- conditions ------------------------------------------------------------------------------


def set_condition(
    status: Obj, cond_type: str, value: str, reason: str, message: str, *,
    with_update_time: bool = False, refresh: bool = False,
) -> None:
    """Set a condition in ``status`` as upstream's SetDeploymentCondition does.

    A condition with the same status and reason is left alone (so reconciling a steady
    object writes nothing) unless ``refresh`` — progress that must move lastUpdateTime.
    lastTransitionTime moves only when the status flips.
    """
    now = now_rfc3339()
    conditions: list[Obj] = status.setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == cond_type:
            if cond.get("status") == value and cond.get("reason") == reason and not refresh:
                return
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now
            cond["status"] = value
            if with_update_time:
                cond["lastUpdateTime"] = now
            cond["reason"] = reason
            cond["message"] = message
            return
    cond = {"type": cond_type, "status": value}
    if with_update_time:
        cond["lastUpdateTime"] = now
    cond.update({"lastTransitionTime": now, "reason": reason, "message": message})
    conditions.append(cond)


# -- expectations ----------------------------------------------------------------------------


class Expectations:
    """Pending creates/deletes per owner key, lowered as the informer observes them."""

    TIMEOUT = 300.0

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, int, float]] = {}

    def expect(self, key: str, adds: int = 0, deletes: int = 0) -> None:
        old_adds, old_deletes, _ = self._pending.get(key, (0, 0, 0.0))
        self._pending[key] = (old_adds + adds, old_deletes + deletes, time.monotonic())

    def observed_add(self, key: str) -> None:
        self._lower(key, 1, 0)

    def observed_delete(self, key: str) -> None:
        self._lower(key, 0, 1)

    def _lower(self, key: str, adds: int, deletes: int) -> None:
        entry = self._pending.get(key)
        if entry is not None:
            self._pending[key] = (entry[0] - adds, entry[1] - deletes, entry[2])

    def satisfied(self, key: str) -> bool:
        entry = self._pending.get(key)
        if entry is None:
            return True
        adds, deletes, stamp = entry
        if (adds <= 0 and deletes <= 0) or time.monotonic() - stamp > self.TIMEOUT:
            del self._pending[key]
            return True
        return False

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """Resolve an IntOrString such as ``2`` or ``"25%"`` against ``total``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            pct = int(text[:-1])
        except ValueError:
            return 0
        scaled = pct * total
        return -(-scaled // 100) if round_up else scaled // 100
    try:
        return int(text)
    except ValueError:
        return 0


def timestamp_of(obj: Obj) -> str:
    return str(meta(obj).get("creationTimestamp") or "")
