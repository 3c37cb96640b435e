"""The Pod status the kubelet reports, computed from what the runtime says about each container.

Pure: ``statuswriter`` gathers a ``ContainerView`` per container (the runtime's current and
previous container of that name, restart count, probe results, a waiting reason such as
``CrashLoopBackOff``) and ``pod_status`` turns them into the status kubectl and Helm read:

- phase: Failed with a reason when the kubelet failed the pod (DeadlineExceeded); otherwise
  Pending until the init containers have completed and every container has been
  started once; Succeeded when every container has exited 0 and none will restart; Failed
  when every container has exited, one of them non-zero, and restartPolicy Never keeps them
  down (or an init container failed under Never); Running otherwise.
- conditions PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled
  with transition times kept while a condition holds;
- containerStatuses/initContainerStatuses: state (waiting / running / terminated with reason
  Completed, Error or OOMKilled), lastState, ready, started, restartCount, image, imageID,
  containerID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from k3py.api.meta import now_rfc3339
from k3py.runtime.spec import ContainerStatus

Obj = dict[str, Any]

RUNTIME_SCHEME = "k3py"


@dataclass
class ContainerView:
    name: str
    image: str
    current: ContainerStatus | None = None
    previous: ContainerStatus | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    waiting_reason: str = ""  # overrides the state: ContainerCreating, CrashLoopBackOff, ...
    waiting_message: str = ""


def rfc3339_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ns else ""


def terminated_reason(status: ContainerStatus) -> str:
    if status.oom_killed or status.reason == "OOMKilled":
        return "OOMKilled"
    if status.reason in ("StartError", "ContainerCannotRun"):
        return "StartError"
    return "Completed" if status.exit_code == 0 else "Error"


def _terminated(status: ContainerStatus) -> Obj:
    state: Obj = {
        "exitCode": status.exit_code if status.exit_code is not None else 255,
        "reason": terminated_reason(status),
        "startedAt": rfc3339_ns(status.started_at or status.created_at) or None,
        "finishedAt": rfc3339_ns(status.finished_at) or None,
        "containerID": f"{RUNTIME_SCHEME}://{status.id}",
    }
    if status.message:
        state["message"] = status.message
    return state


def container_status(view: ContainerView) -> Obj:
    current = view.current
    out: Obj = {
        "name": view.name,
        "image": view.image,
        "imageID": current.image_id if current else "",
        "ready": view.ready,
        "restartCount": view.restart_count,
        "started": view.started,
        "state": {},
        "lastState": {},
    }
    if current is not None:
        out["containerID"] = f"{RUNTIME_SCHEME}://{current.id}"
    if view.waiting_reason:
        waiting: Obj = {"reason": view.waiting_reason}
        if view.waiting_message:
            waiting["message"] = view.waiting_message
        out["state"] = {"waiting": waiting}
        if current is not None and current.state == "exited":
            out["lastState"] = {"terminated": _terminated(current)}
        elif view.previous is not None:
            out["lastState"] = {"terminated": _terminated(view.previous)}
        return out
    if current is None:
        out["state"] = {"waiting": {"reason": "ContainerCreating"}}
    elif current.state == "running":
        out["state"] = {"running": {"startedAt": rfc3339_ns(current.started_at or current.created_at)}}
    elif current.state == "exited":
        out["state"] = {"terminated": _terminated(current)}
    else:
        out["state"] = {"waiting": {"reason": "ContainerCreating"}}
    if view.previous is not None:
        out["lastState"] = {"terminated": _terminated(view.previous)}
    return out


def _condition(kind: str, ok: bool, previous: dict[str, Obj], reason: str = "", message: str = "") -> Obj:
    status = "True" if ok else "False"
    old = previous.get(kind) or {}
    condition: Obj = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == status else now_rfc3339(),
    }
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def _exited(view: ContainerView) -> bool:
    return view.current is not None and view.current.state == "exited" and not view.waiting_reason


def pod_phase(pod: Obj, init_views: list[ContainerView], views: list[ContainerView], init_failed: bool) -> str:
    policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    if init_failed and policy == "Never":
        return "Failed"
    if any(not (v.current and v.current.state == "exited" and v.current.exit_code == 0) for v in init_views):
        return "Pending"
    if any(v.current is None and v.restart_count == 0 for v in views):
        return "Pending"
    if views and all(_exited(v) for v in views):
        codes = [v.current.exit_code for v in views if v.current is not None]
        if all(code == 0 for code in codes) and policy != "Always":
            return "Succeeded"
        if policy == "Never":
            return "Failed"
    return "Running"


def pod_status(
    pod: Obj,
    *,
    init_views: list[ContainerView],
    views: list[ContainerView],
    pod_ip: str,
    host_ip: str,
    start_time: str,
    sandbox_ready: bool,
    init_failed: bool = False,
    failure: tuple[str, str] | None = None,
) -> Obj:
    """The full status object to write (see the module docstring)."""
    old = pod.get("status") or {}
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    phase = "Failed" if failure is not None else pod_phase(pod, init_views, views, init_failed)
    incomplete_init = [
        v.name for v in init_views if not (v.current and v.current.state == "exited" and v.current.exit_code == 0)
    ]
    unready = [v.name for v in views if not v.ready]
    terminal = phase in ("Succeeded", "Failed")
    conditions = [
        _condition("PodReadyToStartContainers", sandbox_ready and not terminal, previous),
        _condition(
            "Initialized", not incomplete_init, previous, "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete_init)}]",
        ),
    ]
    if terminal:
        conditions.append(_condition("ContainersReady", False, previous, "PodCompleted"))
        conditions.append(_condition("Ready", False, previous, "PodCompleted"))
    else:
        message = f"containers with unready status: [{' '.join(unready)}]"
        conditions.append(_condition("ContainersReady", not unready, previous, "ContainersNotReady", message))
        conditions.append(_condition("Ready", not unready, previous, "ContainersNotReady", message))
    scheduled = previous.get("PodScheduled") or {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                                 "lastTransitionTime": start_time}
    conditions.append(scheduled)
    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "podIP": pod_ip or None,
        "podIPs": [{"ip": pod_ip}] if pod_ip else None,
        "startTime": start_time,
        "containerStatuses": [container_status(v) for v in views],
        "initContainerStatuses": [container_status(v) for v in init_views] if init_views else None,
        "qosClass": old.get("qosClass"),
        "reason": failure[0] if failure else None,
        "message": failure[1] if failure else None,
    }
    return status
