"""Job controller logic with the scheduler and simulated nodes, on the in-memory API."""

from __future__ import annotations

from typing import Any

from k3py.client.interface import JOBS, PODS
from k3py.server.controllers.job import JobController, format_indexes, parse_indexes
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import EXIT_CODE, RUN_SECONDS, SimulatedNodes


def job(name: str = "work", annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-name": name}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": annotations or {}},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
            **spec,
        },
    }


def condition(obj: dict[str, Any] | None, cond_type: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == cond_type), None)


async def start(plane) -> None:
    await plane.start(JobController, Scheduler, lambda c, i: SimulatedNodes(c, i, 2))


def test_index_intervals() -> None:
    assert format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert format_indexes(set()) == ""


async def test_job_runs_to_completion_with_parallelism(plane) -> None:
    await start(plane)
    await plane.client.create(JOBS, job(completions=5, parallelism=2), "default")
    done = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Complete") and j,
                             what="job complete")
    assert done["status"]["succeeded"] == 5
    assert "active" not in done["status"]
    assert done["status"]["completionTime"] and done["status"]["startTime"]
    assert condition(done, "SuccessCriteriaMet")["status"] == "True"
    assert len([p for p in plane.pods() if p["status"]["phase"] == "Succeeded"]) == 5


async def test_failing_pods_hit_backoff_limit(plane) -> None:
    await start(plane)
    await plane.client.create(JOBS, job(annotations={EXIT_CODE: "1"}, backoffLimit=2), "default")
    failed = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Failed") and j,
                               what="job failed")
    cond = condition(failed, "Failed")
    assert cond["reason"] == "BackoffLimitExceeded"
    assert cond["message"] == "Job has reached the specified backoff limit"
    assert failed["status"]["failed"] == 3


async def test_active_deadline_fails_and_stops_pods(plane) -> None:
    await start(plane)
    await plane.client.create(JOBS, job(annotations={RUN_SECONDS: "60"}, activeDeadlineSeconds=1), "default")
    await plane.until(lambda: any(p["status"].get("phase") == "Running" for p in plane.pods()), what="pod running")
    failed = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Failed") and j,
                               timeout=5, what="deadline")
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    await plane.until(lambda: not [p for p in plane.pods() if p["status"].get("phase") == "Running"], what="pods stopped")


async def test_indexed_job_runs_each_index_once(plane) -> None:
    await start(plane)
    await plane.client.create(JOBS, job(completions=3, parallelism=3, completionMode="Indexed"), "default")
    done = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Complete") and j)
    assert done["status"]["completedIndexes"] == "0-2"
    pods = plane.transport.all(PODS, "default")
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1", "2"]
    assert {p["spec"]["hostname"] for p in pods} == {"work-0", "work-1", "work-2"}


async def test_suspended_job_creates_nothing_until_resumed(plane) -> None:
    await start(plane)
    await plane.client.create(JOBS, job(suspend=True), "default")
    await plane.until(lambda: condition(plane.transport.peek(JOBS, "default", "work"), "Suspended"))
    assert plane.pods() == []
    await plane.client.patch(JOBS, "work", {"spec": {"suspend": False}}, "default")
    await plane.until(lambda: condition(plane.transport.peek(JOBS, "default", "work"), "Complete"))


async def test_ttl_after_finished_deletes_the_job(plane) -> None:
    await start(plane)
    await plane.client.create(JOBS, job(ttlSecondsAfterFinished=0), "default")
    await plane.until(lambda: plane.transport.peek(JOBS, "default", "work") is None, what="job deleted by TTL")
