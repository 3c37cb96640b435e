"""The ReplicaSet controller's status-wakeup coalescing (STATUS_SYNC_INTERVAL, 100 ms).

Pod updates only change what the status counts, so they wake their owner at most once per
interval: a burst of them within one interval ends in a single status write carrying the final
counts. Status writes are observed the way clients see them — through a watch on the
ReplicaSet over the in-memory API — not by instrumenting the controller.
"""

from __future__ import annotations

import asyncio
from typing import Any

from k3py.client.interface import REPLICASETS
from k3py.server.controllers.podowner import STATUS_SYNC_INTERVAL
from k3py.server.controllers.replicaset import ReplicaSetController
from tests.controllers.test_replicaset_logic import replicaset


class StatusWrites:
    """Every change of the ReplicaSet's status, with the loop time it was seen."""

    def __init__(self, plane, name: str) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._plane = plane
        self._name = name

    def start(self, rs: dict[str, Any]) -> None:
        """Record status changes after ``rs`` (the ReplicaSet as last read)."""
        async def loop() -> None:
            last = rs.get("status") or {}
            async for event in self._plane.client.watch(REPLICASETS, "default", resource_version=rs["metadata"]["resourceVersion"],
                                                        bookmarks=False):
                obj = event["object"]
                if obj["metadata"]["name"] != self._name:
                    continue
                status = obj.get("status") or {}
                if status != last:
                    self.seen.append((asyncio.get_running_loop().time(), status))
                last = status

        self._plane.tasks.append(asyncio.create_task(loop()))


def final_counts(n: int) -> dict[str, int]:
    return {"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": n, "availableReplicas": n}


def counts(status: dict[str, Any]) -> dict[str, int]:
    return {k: status.get(k, 0) for k in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")}


async def settled_replicaset(plane, replicas: int) -> tuple[StatusWrites, list[dict[str, Any]]]:
    """A ReplicaSet whose pods exist and whose status counts them (none Ready yet), with a
    watch recording its status writes from then on."""
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=replicas), "default")
    pods = await plane.until(lambda: len(plane.pods()) == replicas and plane.pods(), what="pods")
    rs = await plane.until(lambda: (r := plane.transport.peek(REPLICASETS, "default", "web"))
                           and (r.get("status") or {}).get("replicas") == replicas and r, what="status.replicas")
    writes = StatusWrites(plane, "web")
    writes.start(rs)
    # Let one interval pass with nothing changing: the next pod update is the first of a burst.
    await asyncio.sleep(STATUS_SYNC_INTERVAL * 1.5)
    return writes, pods


async def test_burst_within_the_window_is_one_write_with_final_counts(plane) -> None:
    writes, pods = await settled_replicaset(plane, 10)
    loop = asyncio.get_running_loop()
    # A lone update after a quiet interval is written at once...
    await plane.mark_ready(pods[0])
    await plane.until(lambda: writes.seen, what="the first status write")
    assert counts(writes.seen[0][1])["readyReplicas"] == 1
    # ...and the nine that follow inside the interval wait for its end and share one write.
    burst_start = loop.time()
    for pod in pods[1:]:
        await plane.mark_ready(pod)
        await asyncio.sleep(0)  # let the informer and workers run between updates
    burst_took = loop.time() - burst_start
    await plane.until(lambda: counts(writes.seen[-1][1]) == final_counts(10), what="final counts written")
    after_first = writes.seen[1:]
    # One write when the burst fits in the window (it takes a few ms); should the host stall
    # us past the window, one more write per interval crossed.
    assert len(after_first) <= 1 + int(burst_took / STATUS_SYNC_INTERVAL), [counts(s) for _, s in after_first]
    assert counts(after_first[-1][1]) == final_counts(10)
    assert counts(plane.transport.peek(REPLICASETS, "default", "web")["status"]) == final_counts(10)


async def test_updates_spread_over_time_write_at_most_once_per_interval(plane) -> None:
    writes, pods = await settled_replicaset(plane, 20)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for pod in pods:  # one update every ~10 ms: 20 updates over about two intervals
        await plane.mark_ready(pod)
        await asyncio.sleep(STATUS_SYNC_INTERVAL / 10)
    spread = loop.time() - start
    await plane.until(lambda: writes.seen and counts(writes.seen[-1][1]) == final_counts(20), what="final counts written")
    # Without coalescing every update would be its own write (20); with it, one per interval
    # the updates span plus the immediate first one and the trailing coalesced one.
    assert len(writes.seen) <= int(spread / STATUS_SYNC_INTERVAL) + 2, (len(writes.seen), spread)
    assert len(writes.seen) < 20
    ready_seen = [counts(s)["readyReplicas"] for _, s in writes.seen]
    assert ready_seen == sorted(ready_seen), "counts only grow while pods only become Ready"
