"""Cron schedule parsing and the CronJob controller (in-memory API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from k3py.client.interface import CRONJOBS, JOBS
from k3py.server.controllers.cron import CronError, parse_schedule
from k3py.server.controllers.cronjob import (
    SCHEDULED_ANNOTATION,
    CronJobController,
    job_from_template,
)
from k3py.server.controllers.job import JobController
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import SimulatedNodes

T0 = datetime(2024, 3, 15, 10, 7, 30, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(("spec", "expected"), [
    ("* * * * *", datetime(2024, 3, 15, 10, 8, tzinfo=UTC)),
    ("*/15 * * * *", datetime(2024, 3, 15, 10, 15, tzinfo=UTC)),
    ("0 9-17/4 * * *", datetime(2024, 3, 15, 13, 0, tzinfo=UTC)),
    ("@hourly", datetime(2024, 3, 15, 11, 0, tzinfo=UTC)),
    ("@daily", datetime(2024, 3, 16, 0, 0, tzinfo=UTC)),
    ("30 2 * * mon", datetime(2024, 3, 18, 2, 30, tzinfo=UTC)),
    ("0 0 1 jan,jul *", datetime(2024, 7, 1, 0, 0, tzinfo=UTC)),
    ("0 0 13 * 5", datetime(2024, 3, 22, 0, 0, tzinfo=UTC)),  # dom OR dow: next Friday
    ("0 12 * * 7", datetime(2024, 3, 17, 12, 0, tzinfo=UTC)),  # 7 is Sunday
    ("@weekly", datetime(2024, 3, 17, 0, 0, tzinfo=UTC)),  # Sunday midnight
    ("@monthly", datetime(2024, 4, 1, 0, 0, tzinfo=UTC)),
    ("@yearly", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
    ("@annually", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
    ("@midnight", datetime(2024, 3, 16, 0, 0, tzinfo=UTC)),
    ("@HOURLY", datetime(2024, 3, 15, 11, 0, tzinfo=UTC)),
])
def test_next_firing_time(spec: str, expected: datetime) -> None:
    assert parse_schedule(spec).next_after(T0) == expected


def test_time_zone() -> None:
    sched = parse_schedule("0 9 * * *", "Europe/Berlin")
    assert sched.next_after(T0) == datetime(2024, 3, 16, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert parse_schedule("CRON_TZ=America/New_York 0 9 * * *").next_after(T0) == datetime(2024, 3, 15, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize("spec", ["* * * *", "61 * * * *", "* * * * mon-", "*/0 * * * *", "bogus", "0 0 * * *x"])
def test_invalid_schedules(spec: str) -> None:
    with pytest.raises(CronError):
        parse_schedule(spec)


def cronjob(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {
                # The in-memory API does not generate Job selectors as the server does.
                "manualSelector": True, "selector": {"matchLabels": {"app": "tick"}},
                "template": {"metadata": {"labels": {"app": "tick"}},
                             "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}},
                     **spec}}


async def overdue(plane, **spec: Any) -> None:
    created = await plane.client.create(CRONJOBS, cronjob(**spec), "default")
    past = (datetime.now(UTC) - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await plane.client.update_status(CRONJOBS, {**created, "status": {"lastScheduleTime": past}})


async def test_due_cronjob_starts_a_job_that_completes(plane) -> None:
    await overdue(plane)
    await plane.start(CronJobController, JobController, Scheduler, lambda c, i: SimulatedNodes(c, i, 1))
    (job,) = await plane.until(lambda: plane.transport.all(JOBS, "default"), what="job created")
    scheduled = datetime.now(UTC).replace(second=0, microsecond=0)
    assert job["metadata"]["name"] in (f"tick-{int(scheduled.timestamp()) // 60}", f"tick-{int(scheduled.timestamp()) // 60 - 1}")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION].endswith(":00Z")
    cj = await plane.until(lambda: (c := plane.transport.peek(CRONJOBS, "default", "tick"))["status"].get("lastSuccessfulTime") and c,
                           what="last successful time")
    assert "active" not in cj["status"]
    assert len(plane.transport.all(JOBS, "default")) == 1, "one run per scheduled time"


async def test_suspended_or_forbidden_runs_are_skipped(plane) -> None:
    await overdue(plane, suspend=True)
    (controller,) = await plane.start(CronJobController)
    requeue = await plane.reconcile(controller, "default/tick")
    assert plane.transport.all(JOBS, "default") == []
    assert requeue is not None and 0 < requeue <= 61  # woken for the next minute
    await plane.client.patch(CRONJOBS, "tick", {"spec": {"suspend": False, "concurrencyPolicy": "Forbid"}}, "default")
    await plane.until(lambda: len(plane.transport.all(JOBS, "default")) == 1, what="first run")
    # The Job never finishes here (no job controller): Forbid keeps a second run from starting.
    cj = plane.transport.peek(CRONJOBS, "default", "tick")
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await plane.client.update_status(CRONJOBS, {**cj, "status": {**cj["status"], "lastScheduleTime": earlier}})
    await plane.until(lambda: controller.cronjobs.cache.get("default/tick")["status"]["lastScheduleTime"] == earlier)
    await plane.reconcile(controller, "default/tick")
    assert len(plane.transport.all(JOBS, "default")) == 1


# -- the controller's scheduling decisions. Without a Job controller here the Jobs it starts
# never finish, which is what concurrency policies are about; "overdue" moves
# status.lastScheduleTime back so the next run is already due.


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def with_running_job(plane, **spec: Any) -> tuple[str, str]:
    """A CronJob whose run of 5 minutes ago is still going (a Job without a finish condition)
    and whose next run is due now; returns (running job name, lastScheduleTime)."""
    cj = await plane.client.create(CRONJOBS, cronjob(**spec), "default")
    started = (datetime.now(UTC) - timedelta(minutes=5)).replace(second=0, microsecond=0)
    job = job_from_template(cj, started)
    job["status"] = {"startTime": stamp(started)}
    running = await plane.client.create(JOBS, job, "default")
    last = stamp(started)
    await plane.client.update_status(CRONJOBS, {**cj, "status": {"lastScheduleTime": last}})
    return running["metadata"]["name"], last


def job_names(plane) -> list[str]:
    return sorted(j["metadata"]["name"] for j in plane.transport.all(JOBS, "default") if not j["metadata"].get("deletionTimestamp"))


def events(plane, reason: str) -> list[dict[str, Any]]:
    from k3py.client.interface import EVENTS

    return [e for e in plane.transport.all(EVENTS, "default") if e["reason"] == reason]


def active_names(plane) -> list[str]:
    return sorted(r["name"] for r in plane.transport.peek(CRONJOBS, "default", "tick")["status"].get("active") or [])


async def test_allow_runs_jobs_side_by_side(plane) -> None:
    running, _ = await with_running_job(plane)  # concurrencyPolicy defaults to Allow
    await plane.start(CronJobController)
    both = await plane.until(lambda: len(names := job_names(plane)) == 2 and names, what="second run")
    assert running in both
    await plane.until(lambda: active_names(plane) == both, what="both jobs active in status")


async def test_replace_deletes_the_running_job_first(plane) -> None:
    running, _ = await with_running_job(plane, concurrencyPolicy="Replace")
    await plane.start(CronJobController)
    (second,) = await plane.until(lambda: (names := job_names(plane)) and running not in names and names, what="replacement")
    await plane.until(lambda: active_names(plane) == [second], what="status.active is the replacement")
    await plane.until(lambda: events(plane, "SuccessfulDelete"), what="SuccessfulDelete event")
    assert events(plane, "SuccessfulDelete")[0]["message"] == f"Deleted job {running}"


async def test_forbid_records_job_already_active(plane) -> None:
    running, last = await with_running_job(plane, concurrencyPolicy="Forbid")
    (controller,) = await plane.start(CronJobController)
    await plane.until(lambda: events(plane, "JobAlreadyActive"), what="JobAlreadyActive event")
    await plane.reconcile(controller, "default/tick")
    assert job_names(plane) == [running]
    cj = plane.transport.peek(CRONJOBS, "default", "tick")
    assert cj["status"]["lastScheduleTime"] == last  # the due run is not consumed
    assert [r["name"] for r in cj["status"]["active"]] == [running]


def finished_job(cj: dict[str, Any], name: str, outcome: str, started: datetime) -> dict[str, Any]:
    ref = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick", "uid": cj["metadata"]["uid"],
           "controller": True, "blockOwnerDeletion": True}
    t = stamp(started)
    status: dict[str, Any] = {"startTime": t, "conditions": [{"type": outcome, "status": "True", "lastTransitionTime": t}]}
    if outcome == "Complete":
        status["completionTime"] = stamp(started + timedelta(seconds=5))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "ownerReferences": [ref]},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}, "status": status}


async def test_history_limits_keep_the_newest_finished_jobs(plane) -> None:
    cj = await plane.client.create(CRONJOBS, cronjob(suspend=True, successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1), "default")
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(4):
        await plane.client.create(JOBS, finished_job(cj, f"ok-{i}", "Complete", base + timedelta(minutes=i)), "default")
    for i in range(3):
        await plane.client.create(JOBS, finished_job(cj, f"bad-{i}", "Failed", base + timedelta(minutes=i)), "default")
    await plane.start(CronJobController)
    await plane.until(lambda: job_names(plane) == ["bad-2", "ok-2", "ok-3"], what="pruned history")
    got = await plane.until(lambda: (c := plane.transport.peek(CRONJOBS, "default", "tick"))["status"].get("lastSuccessfulTime") and c)
    assert got["status"]["lastSuccessfulTime"] == stamp(base + timedelta(minutes=3, seconds=5))
    # Zero keeps none.
    await plane.client.patch(CRONJOBS, "tick", {"spec": {"successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 0}}, "default")
    await plane.until(lambda: job_names(plane) == [], what="history emptied")


def hourly_at(minutes_ago: int) -> tuple[str, datetime]:
    """An hourly schedule whose latest firing time was about ``minutes_ago`` minutes ago."""
    fired = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    return f"{fired.minute} * * * *", fired


async def test_starting_deadline_skips_runs_missed_by_more_than_it(plane) -> None:
    schedule, fired = hourly_at(10)
    created = await plane.client.create(CRONJOBS, cronjob(schedule=schedule, startingDeadlineSeconds=120), "default")
    last = stamp(fired - timedelta(hours=3))
    await plane.client.update_status(CRONJOBS, {**created, "status": {"lastScheduleTime": last}})
    (controller,) = await plane.start(CronJobController)
    requeue = await plane.reconcile(controller, "default/tick")
    # The latest run was 10 minutes ago, beyond the 2-minute deadline: nothing starts, the
    # CronJob waits for the next hour, and its lastScheduleTime is left alone (as upstream).
    assert job_names(plane) == []
    assert plane.transport.peek(CRONJOBS, "default", "tick")["status"]["lastScheduleTime"] == last
    assert requeue is not None and 45 * 60 < requeue <= 51 * 60
    await plane.client.patch(CRONJOBS, "tick", {"spec": {"startingDeadlineSeconds": 15 * 60}}, "default")
    (job,) = await plane.until(lambda: plane.transport.all(JOBS, "default"), what="late run within the deadline")
    assert job["metadata"]["name"] == f"tick-{int(fired.timestamp()) // 60}"
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == stamp(fired)


async def test_too_many_missed_runs_start_only_the_latest(plane) -> None:
    created = await plane.client.create(CRONJOBS, cronjob(), "default")  # every minute
    await plane.client.update_status(CRONJOBS, {**created, "status": {"lastScheduleTime": stamp(datetime.now(UTC) - timedelta(days=2))}})
    await plane.start(CronJobController)
    (job,) = await plane.until(lambda: plane.transport.all(JOBS, "default"), what="one job")
    latest = datetime.now(UTC).replace(second=0, microsecond=0)
    scheduled = job["metadata"]["annotations"][SCHEDULED_ANNOTATION]
    assert scheduled in (stamp(latest), stamp(latest - timedelta(minutes=1)))  # a minute may tick over
    warning = await plane.until(lambda: events(plane, "TooManyMissedTimes"), what="TooManyMissedTimes event")
    assert warning[0]["type"] == "Warning"
    assert warning[0]["message"].startswith("too many missed start times")
    assert len(plane.transport.all(JOBS, "default")) == 1


async def test_time_zone_decides_when_a_run_is_due(plane) -> None:
    from zoneinfo import ZoneInfo

    fired = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    local = fired.astimezone(ZoneInfo("Asia/Kolkata"))  # UTC+05:30: never the same wall time as UTC
    created = await plane.client.create(CRONJOBS, cronjob(schedule=f"{local.minute} {local.hour} * * *", timeZone="Asia/Kolkata"), "default")
    await plane.client.update_status(CRONJOBS, {**created, "status": {"lastScheduleTime": stamp(fired - timedelta(hours=20))}})
    await plane.start(CronJobController)
    (job,) = await plane.until(lambda: plane.transport.all(JOBS, "default"), what="job for the zone's wall time")
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == stamp(fired)


def test_most_recent_due_searches_back_past_many_missed() -> None:
    from k3py.server.controllers.cronjob import MAX_MISSED, most_recent_due

    every_minute = parse_schedule("* * * * *")
    now = datetime(2024, 3, 15, 10, 7, 30, tzinfo=UTC)
    assert most_recent_due(every_minute, now - timedelta(minutes=3), now) == (datetime(2024, 3, 15, 10, 7, tzinfo=UTC), 3)
    assert most_recent_due(every_minute, datetime(2020, 1, 1, tzinfo=UTC), now) == (datetime(2024, 3, 15, 10, 7, tzinfo=UTC), MAX_MISSED + 1)
    assert most_recent_due(every_minute, now - timedelta(seconds=20), now) == (None, 0)
    # Sparse: weekdays at 09:00, last run years ago.
    weekdays = parse_schedule("0 9 * * 1-5")
    assert most_recent_due(weekdays, datetime(2020, 1, 1, tzinfo=UTC), now) == (datetime(2024, 3, 15, 9, 0, tzinfo=UTC), MAX_MISSED + 1)
    sunday = datetime(2024, 3, 17, 12, 0, tzinfo=UTC)
    assert most_recent_due(weekdays, datetime(2020, 1, 1, tzinfo=UTC), sunday)[0] == datetime(2024, 3, 15, 9, 0, tzinfo=UTC)


async def test_unknown_time_zone_is_reported_and_nothing_runs(plane) -> None:
    await overdue(plane, timeZone="Mars/Olympus_Mons")
    (controller,) = await plane.start(CronJobController)
    await plane.until(lambda: events(plane, "UnknownTimeZone"), what="UnknownTimeZone event")
    assert events(plane, "UnknownTimeZone")[0]["message"] == 'invalid timeZone: "Mars/Olympus_Mons": unknown time zone Mars/Olympus_Mons'
    assert await plane.reconcile(controller, "default/tick") is None
    assert plane.transport.all(JOBS, "default") == []
