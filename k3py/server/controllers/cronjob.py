"""The CronJob controller: create a Job at each scheduled time.

For each CronJob (batch/v1): find the latest scheduled time at or before now that has not
run yet (counting from ``status.lastScheduleTime`` or, first, the creation time, and never
from further back than ``startingDeadlineSeconds``; more than 100 missed times are reported as
a ``TooManyMissedTimes`` warning and only the latest is run, as upstream); if there is one, start a Job named
``<cronjob>-<scheduled time in minutes since the epoch>`` from ``spec.jobTemplate`` (owned by
the CronJob, annotated ``batch.kubernetes.io/cronjob-scheduled-timestamp``) — unless the
CronJob is suspended, or ``concurrencyPolicy`` is Forbid and a Job is still running (event
``JobAlreadyActive``); Replace deletes the running Jobs first (``SuccessfulDelete``). Status lists the active Jobs and the last schedule and
success times; finished Jobs beyond ``successfulJobsHistoryLimit`` (3) and
``failedJobsHistoryLimit`` (1) are deleted. The controller asks to be woken at the next
scheduled time. An invalid schedule is reported once as an ``UnparseableSchedule`` warning
event and an unknown ``timeZone`` as ``UnknownTimeZone``; neither runs anything.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from k3py.api.errors import ApiError
from k3py.api.meta import parse_rfc3339
from k3py.client.controller import Controller
from k3py.client.informer import OWNER_UID_INDEX, InformerFactory, index_by_owner_uid
from k3py.client.interface import CRONJOBS, JOBS, Client
from k3py.server.controllers.common import (
    Obj,
    controller_ref,
    get_condition,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    timestamp_of,
    uid_of,
)
from k3py.server.controllers.cron import CronError, Schedule, parse_schedule

log = logging.getLogger("k3py.controllers.cronjob")

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAX_MISSED = 100


def _job_finished(job: Obj) -> str | None:
    for cond_type in ("Complete", "Failed"):
        cond = get_condition(job, cond_type)
        if cond is not None and cond.get("status") == "True":
            return cond_type
    return None


def job_reference(job: Obj) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name_of(job), "namespace": namespace_of(job),
            "uid": uid_of(job), "resourceVersion": meta(job).get("resourceVersion", "")}


def job_from_template(cj: Obj, scheduled: datetime) -> Obj:
    template = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
    tmeta = template.get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[SCHEDULED_ANNOTATION] = scheduled.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name_of(cj)}-{int(scheduled.timestamp()) // 60}",
            "namespace": namespace_of(cj),
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [owner_reference(cj, "batch/v1", "CronJob")],
        },
        "spec": template.get("spec") or {},
    }


def known_time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def most_recent_due(schedule: Schedule, earliest: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The latest firing time in ``(earliest, now]`` (None if there is none) and how many there
    are, counted up to ``MAX_MISSED + 1``.

    Upstream starts only the most recent of several missed runs. Past ``MAX_MISSED`` it stops
    counting and searches back from ``now`` instead (windows doubling from a minute), so a
    CronJob whose last run is years old costs a few dozen steps, not one per missed minute.
    """
    latest: datetime | None = None
    t = earliest
    for count in range(MAX_MISSED + 1):
        nxt = schedule.next_after(t)
        if nxt > now:
            return latest, count
        latest = t = nxt
    span = timedelta(minutes=1)
    while True:
        start = max(now - span, t)
        nxt = schedule.next_after(start)
        if nxt <= now:
            break
        if start == t:
            return t, MAX_MISSED + 1  # t itself is the most recent
        span *= 2
    while (later := schedule.next_after(nxt)) <= now:
        nxt = later
    return nxt, MAX_MISSED + 1


class CronJobController(Controller):
    """See the module docstring."""

    name = "cronjob"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.cronjobs = informers.informer(CRONJOBS)
        self.jobs = informers.informer(JOBS, {OWNER_UID_INDEX: index_by_owner_uid})
        self.cronjobs.add_handler(self.enqueue, lambda _o, n: self.enqueue(n))
        self.jobs.add_handler(self._job_changed, lambda _o, n: self._job_changed(n), self._job_changed)
        self._reported_bad: set[str] = set()

    def _job_changed(self, job: Obj) -> None:
        ref = controller_ref(job)
        if ref is not None and ref.get("kind") == "CronJob":
            self.queue.add(f"{namespace_of(job)}/{ref.get('name')}")

    async def reconcile(self, key: Hashable) -> float | None:
        cached = self.cronjobs.cache.get(str(key))
        if cached is None or meta(cached).get("deletionTimestamp"):
            return None
        cj = copy.deepcopy(cached)
        spec = cj.get("spec") or {}
        status = copy.deepcopy(cj.get("status") or {})
        jobs = [j for j in self.jobs.cache.by_index(OWNER_UID_INDEX, uid_of(cj))
                if (controller_ref(j) or {}).get("uid") == uid_of(cj)]
        active = [j for j in jobs if _job_finished(j) is None and not meta(j).get("deletionTimestamp")]
        finished = [j for j in jobs if _job_finished(j) is not None]
        successes = [j for j in finished if _job_finished(j) == "Complete"]
        if successes:
            times = [(j.get("status") or {}).get("completionTime") or "" for j in successes]
            latest = max(times)
            if latest and latest > (status.get("lastSuccessfulTime") or ""):
                status["lastSuccessfulTime"] = latest
        await self._prune(finished, spec)

        zone = spec.get("timeZone")
        if zone is not None and not known_time_zone(str(zone)):
            # Upstream's check comes first and has its own reason; nothing runs until it is fixed.
            self._warn(cj, "UnknownTimeZone", f'invalid timeZone: "{zone}": unknown time zone {zone}')
            await self._write_status(cj, status, active)
            return None
        try:
            schedule = parse_schedule(str(spec.get("schedule", "")), spec.get("timeZone"))
        except CronError as e:
            if uid_of(cj) not in self._reported_bad:
                self._reported_bad.add(uid_of(cj))
                self.recorder.record(cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {spec.get('schedule')!r} : {e}",
                                     kind="CronJob", api_version="batch/v1")
            await self._write_status(cj, status, active)
            return None

        now = datetime.now(UTC)
        requeue = max(0.05, (schedule.next_after(now) - now).total_seconds() + 0.05)
        if spec.get("suspend"):
            await self._write_status(cj, status, active)
            return requeue
        earliest_text = status.get("lastScheduleTime") or timestamp_of(cj)
        earliest = parse_rfc3339(earliest_text) if earliest_text else now
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            # Nothing older than the deadline will be started: do not even look at it.
            earliest = max(earliest, now - timedelta(seconds=int(deadline)))
        due, missed = most_recent_due(schedule, earliest, now)
        if missed > MAX_MISSED:
            self._warn(cj, "TooManyMissedTimes", f"too many missed start times: more than {MAX_MISSED}. "
                       "Set or decrease .spec.startingDeadlineSeconds or check clock skew")
        if due is not None and not self._already_started(cj, status, active, due):
            policy = spec.get("concurrencyPolicy") or "Allow"
            if policy == "Forbid" and active:
                self.recorder.record(cj, "Normal", "JobAlreadyActive",
                                     "Not starting job because prior execution is running and concurrency policy is Forbid",
                                     kind="CronJob", api_version="batch/v1")
            else:
                if policy == "Replace":
                    for job in active:
                        await self._delete_job(job)
                        self.recorder.record(cj, "Normal", "SuccessfulDelete", f"Deleted job {name_of(job)}",
                                             kind="CronJob", api_version="batch/v1")
                    active = []
                job = job_from_template(cj, due)
                try:
                    created = await self.client.create(JOBS, job, namespace_of(cj))
                    active.append(created)
                    self.recorder.record(cj, "Normal", "SuccessfulCreate", f"Created job {name_of(created)}",
                                         kind="CronJob", api_version="batch/v1")
                except ApiError as e:
                    if e.code != 409:  # already created for this time
                        raise
                status["lastScheduleTime"] = due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self._write_status(cj, status, active)
        return requeue

    def _warn(self, cj: Obj, reason: str, message: str) -> None:
        self.recorder.record(cj, "Warning", reason, message, kind="CronJob", api_version="batch/v1")

    @staticmethod
    def _already_started(cj: Obj, status: Obj, active: list[Obj], due: datetime) -> bool:
        name = f"{name_of(cj)}-{int(due.timestamp()) // 60}"
        last = status.get("lastScheduleTime")
        return any(name_of(j) == name for j in active) or (
            bool(last) and parse_rfc3339(last) == due.astimezone(UTC).replace(second=0, microsecond=0))

    async def _write_status(self, cj: Obj, status: Obj, active: list[Obj]) -> None:
        if active:
            status["active"] = [job_reference(j) for j in sorted(active, key=name_of)]
        else:
            status.pop("active", None)
        old = cj.get("status") or {}
        # References carry resourceVersions that change constantly; compare names only.
        def names(s: Obj) -> list[str]:
            return [r.get("name", "") for r in s.get("active") or []]

        same = names(old) == names(status) and {k: v for k, v in old.items() if k != "active"} == {
            k: v for k, v in status.items() if k != "active"}
        if not same:
            await self.write_status(CRONJOBS, cj, status)

    async def _prune(self, finished: list[Obj], spec: Obj) -> None:
        limits = {"Complete": spec.get("successfulJobsHistoryLimit", 3), "Failed": spec.get("failedJobsHistoryLimit", 1)}
        for outcome, limit in limits.items():
            limit = 3 if limit is None and outcome == "Complete" else (1 if limit is None else int(limit))
            done = sorted((j for j in finished if _job_finished(j) == outcome),
                          key=lambda j: (j.get("status") or {}).get("startTime") or timestamp_of(j))
            for job in done[: max(0, len(done) - limit)]:
                await self._delete_job(job)

    async def _delete_job(self, job: Obj) -> None:
        try:
            await self.client.delete(JOBS, name_of(job), namespace_of(job), propagation_policy="Background",
                                     preconditions={"uid": uid_of(job)})
        except ApiError as e:
            if e.code not in (404, 409):
                raise
