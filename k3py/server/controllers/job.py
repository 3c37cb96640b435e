"""The Job controller: run pods until enough succeed, within a retry and time budget.

For each Job (batch/v1) it claims pods by selector (the API server gives every Job a
``batch.kubernetes.io/controller-uid`` selector and template labels), then:

- counts active (not finished, not deleting), ready, succeeded and failed pods — succeeded
  and failed never go down, even when finished pods are deleted;
- fails the Job when failures exceed ``backoffLimit`` — with restartPolicy OnFailure, when the
  container restarts in its active pods reach it — (reason BackoffLimitExceeded) or it has
  been active longer than ``activeDeadlineSeconds`` (DeadlineExceeded), deleting its active
  pods; conditions FailureTarget then Failed, as upstream 1.31+;
- completes it when ``completions`` pods succeeded (or, without completions, when one pod
  succeeded and none is active): SuccessCriteriaMet then Complete, with completionTime;
- otherwise keeps ``min(parallelism, completions - succeeded)`` pods active — replacing failed
  pods only after upstream's back-off (10 s doubled per failure since the last success, at
  most 6 minutes, counted from the last failure's finish) — 0 while ``suspend`` (condition
  Suspended); surplus pods go in upstream's ActivePods order. ``completionMode: Indexed``
  gives each pod an index (annotation and label ``batch.kubernetes.io/job-completion-index``,
  env JOB_COMPLETION_INDEX, hostname ``<job>-<index>``) and tracks ``completedIndexes``;
- deletes a finished Job ``ttlSecondsAfterFinished`` after it finished.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from datetime import datetime, timedelta
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339, parse_rfc3339
from k3py.client.informer import OWNER_UID_INDEX, InformerFactory
from k3py.client.interface import JOBS, Client
from k3py.server.controllers.common import (
    Obj,
    get_condition,
    is_deleting,
    is_pod_ready,
    meta,
    name_of,
    namespace_of,
    pod_phase,
    uid_of,
    utcnow,
)
from k3py.server.controllers.podowner import PodOwnerController, pod_from_template, sort_active_pods

log = logging.getLogger("k3py.controllers.job")

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
FAILURE_BACKOFF_SECONDS = 10.0
MAX_FAILURE_BACKOFF_SECONDS = 360.0


def _pod_index(pod: Obj) -> int | None:
    value = (meta(pod).get("annotations") or {}).get(INDEX_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def format_indexes(indexes: set[int]) -> str:
    """``0-2,5`` — completedIndexes as upstream writes intervals."""
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_indexes(text: str) -> set[int]:
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return out


def restarts_past_backoff_limit(spec: Obj, active: list[Obj], backoff_limit: int) -> bool:
    """With restartPolicy OnFailure a failing container restarts in its pod instead of failing
    it, so upstream counts the restarts of the running and pending pods against backoffLimit."""
    if (((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")) != "OnFailure":
        return False
    restarts = 0
    for pod in active:
        if pod_phase(pod) not in ("Running", "Pending"):
            continue
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]:
            restarts += int(cs.get("restartCount") or 0)
    return restarts > 0 if backoff_limit == 0 else restarts >= backoff_limit


def finished_at(pod: Obj) -> datetime | None:
    """When a finished pod's last container stopped; else when it stopped being Ready, was
    deleted or, as a stable last resort, created (never "now": the back-off must run out)."""
    status = pod.get("status") or {}
    stamps = [((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")
              for cs in status.get("containerStatuses") or ()]
    if not any(stamps):
        stamps = [c.get("lastTransitionTime") for c in status.get("conditions") or ()
                  if c.get("type") == "Ready" and c.get("status") == "False"]
    if not any(stamps):
        stamps = [meta(pod).get("deletionTimestamp") or meta(pod).get("creationTimestamp")]
    parsed = []
    for stamp in stamps:
        if not stamp:
            continue
        try:
            parsed.append(parse_rfc3339(stamp))
        except ValueError:
            continue
    return max(parsed) if parsed else None


def failure_backoff_left(pods: list[Obj], base: float, cap: float, now: datetime) -> float:
    """Seconds until a failed pod may be replaced: ``base`` doubled for each failure since the
    last success, capped, from the latest failure (upstream's pod failure back-off)."""
    successes = [t for p in pods if pod_phase(p) == "Succeeded" and (t := finished_at(p)) is not None]
    last_success = max(successes) if successes else None
    failed = [finished_at(p) or now for p in pods if pod_phase(p) == "Failed"]
    failures = sorted(t for t in failed if last_success is None or t > last_success)
    if not failures:
        return 0.0
    delay = min(cap, base * 2 ** (len(failures) - 1))
    return max(0.0, (failures[-1] - now).total_seconds() + delay)


def _finished(job: Obj) -> str | None:
    for cond_type in ("Complete", "Failed"):
        cond = get_condition(job, cond_type)
        if cond is not None and cond.get("status") == "True":
            return cond_type
    return None


class JobController(PodOwnerController):
    """See the module docstring."""

    name = "job"
    workers = 4
    owner_resource = JOBS
    owner_kind = "Job"

    def __init__(self, client: Client, informers: InformerFactory, failure_backoff: float = FAILURE_BACKOFF_SECONDS,
                 max_failure_backoff: float = MAX_FAILURE_BACKOFF_SECONDS) -> None:
        super().__init__(client, informers)
        self.failure_backoff = failure_backoff
        self.max_failure_backoff = max_failure_backoff

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        job = self.live_owner(key)
        if job is None:
            return None
        finished = _finished(job)
        if finished is not None:
            # A reconcile that read the Job just before it finished may have started a pod:
            # a finished Job keeps none running.
            stragglers = [p for p in self.pods.cache.by_index(OWNER_UID_INDEX, uid_of(job))
                          if pod_phase(p) not in ("Succeeded", "Failed") and not is_deleting(p)]
            if stragglers and self.expectations.satisfied(key):
                await self.delete_pods(key, stragglers)
            return await self._ttl(job)
        spec = job.get("spec") or {}
        status = copy.deepcopy(job.get("status") or {})
        pods = await self.claim_pods(job)
        active = [p for p in pods if pod_phase(p) not in ("Succeeded", "Failed") and not is_deleting(p)]
        succeeded_pods = [p for p in pods if pod_phase(p) == "Succeeded"]
        failed_pods = [p for p in pods if pod_phase(p) == "Failed"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1) if spec.get("parallelism") is not None else 1)
        backoff_limit = int(spec.get("backoffLimit", 6) if spec.get("backoffLimit") is not None else 6)
        suspended = bool(spec.get("suspend"))

        completed_indexes = parse_indexes(status.get("completedIndexes", "")) if indexed else set()
        if indexed:
            completed_indexes |= {i for p in succeeded_pods if (i := _pod_index(p)) is not None}
            succeeded = len(completed_indexes)
        else:
            succeeded = max(int(status.get("succeeded") or 0), len(succeeded_pods))
        failed = max(int(status.get("failed") or 0), len(failed_pods))
        now = utcnow()
        requeue: float | None = None

        if not suspended and not status.get("startTime"):
            status["startTime"] = now_rfc3339()
        failure: tuple[str, str] | None = None
        if failed > backoff_limit or restarts_past_backoff_limit(spec, active, backoff_limit):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        if failure is None and deadline is not None and status.get("startTime") and not suspended:
            elapsed = (now - parse_rfc3339(status["startTime"])).total_seconds()
            if elapsed >= int(deadline):
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                requeue = int(deadline) - elapsed + 0.05

        complete = False
        if failure is None:
            if completions is not None:
                complete = succeeded >= int(completions)
            else:
                complete = succeeded > 0 and not active

        if failure is not None or complete:
            if active:
                await self.delete_pods(key, active)
            stamp = now_rfc3339()
            conditions = [c for c in status.get("conditions") or [] if c.get("type") not in ("Suspended",)]
            if failure is not None:
                reason, message = failure
                conditions += [
                    {"type": "FailureTarget", "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp, "reason": reason, "message": message},
                    {"type": "Failed", "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp, "reason": reason, "message": message},
                ]
            else:
                conditions += [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp,
                     "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
                    {"type": "Complete", "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp,
                     "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
                ]
                status["completionTime"] = stamp
            status["conditions"] = conditions
            active = []
        elif self.expectations.satisfied(key):
            backoff = failure_backoff_left(pods, self.failure_backoff, self.max_failure_backoff, now)
            wait = await self._manage(key, job, active, succeeded, completed_indexes, indexed, completions, parallelism,
                                      suspended, status, backoff)
            if wait:
                requeue = wait if requeue is None else min(requeue, wait)

        status.update({
            "active": len(active),
            "ready": sum(1 for p in active if is_pod_ready(p)),
            "succeeded": succeeded,
            "failed": failed,
            "terminating": sum(1 for p in pods if is_deleting(p) and pod_phase(p) not in ("Succeeded", "Failed")),
            "uncountedTerminatedPods": {},
        })
        if indexed:
            status["completedIndexes"] = format_indexes(completed_indexes)
        for zero in ("active", "succeeded", "failed", "terminating"):
            if not status.get(zero):
                status.pop(zero, None)
        await self.write_status(JOBS, job, status)
        return requeue

    async def _manage(self, key: str, job: Obj, active: list[Obj], succeeded: int, completed_indexes: set[int],
                      indexed: bool, completions: Any, parallelism: int, suspended: bool, status: Obj,
                      backoff: float) -> float | None:
        """Create or delete pods towards the wanted count; returns when to look again while a
        failure back-off holds creations back."""
        if suspended:
            want = 0
            if get_condition({"status": status}, "Suspended") is None:
                stamp = now_rfc3339()
                status.setdefault("conditions", []).append(
                    {"type": "Suspended", "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp,
                     "reason": "JobSuspended", "message": "Job suspended"})
        else:
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"] or None
            if status["conditions"] is None:
                status.pop("conditions")
            if completions is not None:
                want = max(0, min(parallelism, int(completions) - succeeded))
            else:
                want = 0 if succeeded > 0 else parallelism
        if len(active) > want:
            await self.delete_pods(key, sort_active_pods(active)[:len(active) - want])
            return None
        missing = want - len(active)
        if missing <= 0:
            return None
        if backoff > 0:
            return backoff + 0.01
        if not indexed:
            await self.create_pods(key, job, missing)
            return None
        running = {i for p in active if (i := _pod_index(p)) is not None}
        free = [i for i in range(int(completions or 0)) if i not in completed_indexes and i not in running][:missing]
        await self.create_pods(key, job, [indexed_pod(job, index) for index in free])
        return None

    async def _ttl(self, job: Obj) -> float | None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        finished_at = (job.get("status") or {}).get("completionTime")
        if not finished_at:
            cond = get_condition(job, "Failed") or get_condition(job, "Complete") or {}
            finished_at = cond.get("lastTransitionTime")
        if not finished_at:
            return None
        due = parse_rfc3339(finished_at) + timedelta(seconds=int(ttl))
        wait = (due - utcnow()).total_seconds()
        if wait > 0:
            return wait + 0.05
        try:
            await self.client.delete(JOBS, name_of(job), namespace_of(job), propagation_policy="Background",
                                     preconditions={"uid": uid_of(job)})
        except ApiError as e:
            if e.code not in (404, 409):
                raise
        return None


def indexed_pod(job: Obj, index: int) -> Obj:
    pod = pod_from_template(job, "batch/v1", "Job")
    pod["metadata"]["generateName"] = f"{name_of(job)}-{index}-"
    pod["metadata"].setdefault("annotations", {})[INDEX_KEY] = str(index)
    pod["metadata"]["labels"][INDEX_KEY] = str(index)
    spec = copy.deepcopy(pod["spec"])
    spec.setdefault("hostname", f"{name_of(job)}-{index}")
    for container in spec.get("containers") or []:
        env = [e for e in container.get("env") or [] if e.get("name") != "JOB_COMPLETION_INDEX"]
        env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}})
        container["env"] = env
    pod["spec"] = spec
    return pod
