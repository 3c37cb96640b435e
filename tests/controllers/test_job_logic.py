"""Job controller logic with the scheduler and simulated nodes, on the in-memory API."""

from __future__ import annotations

import asyncio
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


def fast_jobs(c: Any, i: Any) -> JobController:
    """A Job controller whose failure back-off is 50 ms instead of upstream's 10 s."""
    return JobController(c, i, failure_backoff=0.05)


async def start(plane) -> None:
    await plane.start(fast_jobs, Scheduler, lambda c, i: SimulatedNodes(c, i, 2))


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


# -- without simulated nodes: the test plays kubelet and decides when each pod finishes.


async def finish(plane, pod: dict[str, Any], phase: str) -> None:
    current = plane.transport.peek(PODS, "default", pod["metadata"]["name"])
    current["status"] = {"phase": phase}
    await plane.client.update_status(PODS, current)


def running(plane) -> list[dict[str, Any]]:
    return sorted((p for p in plane.pods() if p["status"].get("phase") not in ("Succeeded", "Failed")),
                  key=lambda p: p["metadata"]["name"])


async def test_parallelism_caps_active_pods_and_completions_count_successes(plane) -> None:
    (controller,) = await plane.start(fast_jobs)
    await plane.client.create(JOBS, job(completions=5, parallelism=2), "default")
    # Rounds of min(parallelism, completions - succeeded) pods: 2, 2, then 1.
    for round_size, succeeded_before in ((2, 0), (2, 2), (1, 4)):
        pods = await plane.until(lambda n=round_size: len(r := running(plane)) == n and r, what=f"{round_size} active pods")
        st = await plane.until(lambda n=round_size: (s := plane.transport.peek(JOBS, "default", "work").get("status") or {}).get("active") == n and s)
        assert st.get("succeeded", 0) == succeeded_before
        await plane.reconcile(controller, "default/work")  # a further pass adds nothing while they run
        assert len(running(plane)) == round_size
        for pod in pods:
            await finish(plane, pod, "Succeeded")
    done = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Complete") and j)
    assert done["status"]["succeeded"] == 5 and len(plane.pods()) == 5


async def test_indexed_pods_carry_their_index_and_a_failed_index_is_retried(plane) -> None:
    await plane.start(fast_jobs)
    await plane.client.create(JOBS, job(completions=3, parallelism=2, completionMode="Indexed"), "default")
    key = "batch.kubernetes.io/job-completion-index"

    def by_index() -> dict[str, dict[str, Any]]:
        return {p["metadata"]["annotations"][key]: p for p in running(plane)}

    first = await plane.until(lambda: set(b := by_index()) == {"0", "1"} and b, what="indexes 0 and 1")
    pod = first["1"]
    assert pod["metadata"]["labels"][key] == "1"
    assert pod["metadata"]["name"].startswith("work-1-")
    assert pod["spec"]["hostname"] == "work-1"
    (env,) = [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{key}']"
    # Index 1 fails: a new pod takes index 1 again; index 0 succeeds: index 2 starts.
    await finish(plane, first["1"], "Failed")
    await finish(plane, first["0"], "Succeeded")
    second = await plane.until(lambda: set(b := by_index()) == {"1", "2"} and b, what="index 1 retried, index 2 started")
    assert second["1"]["metadata"]["name"] != first["1"]["metadata"]["name"]
    st = await plane.until(lambda: (s := plane.transport.peek(JOBS, "default", "work").get("status") or {}).get("completedIndexes") == "0" and s)
    assert st["failed"] == 1
    for pod in second.values():
        await finish(plane, pod, "Succeeded")
    done = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Complete") and j)
    assert done["status"]["completedIndexes"] == "0-2" and done["status"]["succeeded"] == 3 and done["status"]["failed"] == 1


async def test_ttl_counts_from_the_finish_time(plane) -> None:
    (controller,) = await plane.start(fast_jobs)
    await plane.client.create(JOBS, job(ttlSecondsAfterFinished=60), "default")
    (pod,) = await plane.until(lambda: running(plane), what="job pod")
    await finish(plane, pod, "Succeeded")
    done = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Complete") and j)
    assert done["status"]["completionTime"]
    # Finished just now with a 60 s TTL: kept, and the controller asks to come back in ~60 s.
    wait = await plane.reconcile(controller, "default/work")
    assert wait is not None and 55 < wait <= 61
    assert plane.transport.peek(JOBS, "default", "work") is not None


async def test_on_failure_restarts_count_against_the_backoff_limit(plane) -> None:
    await plane.start(fast_jobs)
    spec = job(backoffLimit=3)
    spec["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    await plane.client.create(JOBS, spec, "default")
    (pod,) = await plane.until(lambda: running(plane), what="job pod")

    async def restarted(count: int) -> None:
        current = plane.transport.peek(PODS, "default", pod["metadata"]["name"])
        current["status"] = {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": count}]}
        await plane.client.update_status(PODS, current)

    await restarted(2)  # the container failed twice and was restarted in place
    await plane.until(lambda: (plane.transport.peek(JOBS, "default", "work").get("status") or {}).get("active") == 1)
    assert condition(plane.transport.peek(JOBS, "default", "work"), "Failed") is None
    await restarted(3)
    failed = await plane.until(lambda: condition(j := plane.transport.peek(JOBS, "default", "work"), "Failed") and j,
                               what="job failed on restarts")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    await plane.until(lambda: not running(plane) or all(p["metadata"].get("deletionTimestamp") for p in running(plane)),
                      what="the restarting pod stopped")


async def test_failed_pods_are_replaced_after_a_doubling_back_off(plane) -> None:
    from k3py.api.meta import now_rfc3339_micro

    await plane.start(lambda c, i: JobController(c, i, failure_backoff=0.4))
    await plane.client.create(JOBS, job(backoffLimit=5), "default")
    loop = asyncio.get_running_loop()

    async def fail(pod: dict[str, Any]) -> float:
        current = plane.transport.peek(PODS, "default", pod["metadata"]["name"])
        current["status"] = {"phase": "Failed", "containerStatuses": [{"name": "c", "state": {"terminated": {
            "exitCode": 1, "reason": "Error", "finishedAt": now_rfc3339_micro()}}}]}
        await plane.client.update_status(PODS, current)
        return loop.time()

    (first,) = await plane.until(lambda: running(plane), what="first pod")
    failed_at = await fail(first)
    (second,) = await plane.until(lambda: running(plane), what="replacement after one failure")
    assert loop.time() - failed_at >= 0.35  # 0.4 s after the first failure
    failed_at = await fail(second)
    await plane.until(lambda: running(plane), what="replacement after two failures")
    assert loop.time() - failed_at >= 0.75  # doubled: 0.8 s
    st = plane.transport.peek(JOBS, "default", "work")["status"]
    assert st["failed"] == 2 and condition(plane.transport.peek(JOBS, "default", "work"), "Failed") is None
