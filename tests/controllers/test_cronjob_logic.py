"""Cron schedule parsing and the CronJob controller (in-memory API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from k3py.client.interface import CRONJOBS, JOBS
from k3py.server.controllers.cron import CronError, parse_schedule
from k3py.server.controllers.cronjob import SCHEDULED_ANNOTATION, CronJobController
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
    requeue = await controller.reconcile("default/tick")
    assert plane.transport.all(JOBS, "default") == []
    assert requeue is not None and 0 < requeue <= 61  # woken for the next minute
    await plane.client.patch(CRONJOBS, "tick", {"spec": {"suspend": False, "concurrencyPolicy": "Forbid"}}, "default")
    await plane.until(lambda: len(plane.transport.all(JOBS, "default")) == 1, what="first run")
    # The Job never finishes here (no job controller): Forbid keeps a second run from starting.
    cj = plane.transport.peek(CRONJOBS, "default", "tick")
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await plane.client.update_status(CRONJOBS, {**cj, "status": {**cj["status"], "lastScheduleTime": earlier}})
    await plane.until(lambda: controller.cronjobs.cache.get("default/tick")["status"]["lastScheduleTime"] == earlier)
    await controller.reconcile("default/tick")
    assert len(plane.transport.all(JOBS, "default")) == 1
