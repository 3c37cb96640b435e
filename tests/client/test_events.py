"""The event recorder's spam filter and correlator, driven against the in-memory API.

Upstream's rule: per (source, involved object, type, reason) a bucket of 25 events, refilled
one per 5 minutes; within the recorder's lifetime repeats of one (object, reason, message) are
one Event whose ``count`` grows. The recorder's clock is injected, so refills need no sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from k3py.client.events import SPAM_BURST, SPAM_REFILL_SECONDS, EventRecorder
from k3py.client.interface import EVENTS, Client
from k3py.client.memory import MemoryTransport


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-1", "namespace": "default", "uid": "uid-web-1"}}


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[EventRecorder, MemoryTransport, FakeClock]]:
    transport = MemoryTransport()
    clock = FakeClock()
    rec = EventRecorder(Client(transport), "kubelet", host="node-1", clock=clock)
    rec.start()
    try:
        yield rec, transport, clock
    finally:
        await rec.stop()
        await transport.close()


def events_by_reason(transport: MemoryTransport) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in transport.all(EVENTS, "default"):
        out.setdefault(e["reason"], []).append(e)
    return out


async def test_thirty_identical_events_write_a_burst_of_twenty_five(recorder) -> None:
    rec, transport, _ = recorder
    for _ in range(30):
        rec.record(POD, "Warning", "BackOff", "Back-off restarting failed container")
    await rec.flush()
    (event,) = events_by_reason(transport)["BackOff"]
    assert event["count"] == SPAM_BURST == 25
    assert rec.filtered == 5
    assert event["involvedObject"] == {"kind": "Pod", "namespace": "default", "name": "web-1",
                                       "uid": "uid-web-1", "apiVersion": "v1"}
    assert event["source"] == {"component": "kubelet", "host": "node-1"}
    # 1 create + 24 count increments reached the API, nothing for the 5 filtered ones.
    assert transport.calls["create/events"] == 1
    assert transport.calls["patch/events"] == 24


async def test_bucket_is_per_type_and_reason_not_per_message(recorder) -> None:
    rec, transport, _ = recorder
    for i in range(SPAM_BURST):
        rec.record(POD, "Normal", "Pulling", f"Pulling image busybox:{i}")
    rec.record(POD, "Normal", "Pulling", "Pulling image busybox:over")  # same bucket: dropped
    rec.record(POD, "Normal", "Pulled", "Pulled image busybox")  # another reason: its own bucket
    rec.record(POD, "Warning", "Pulling", "odd but distinct type")  # another type: its own bucket
    other = {**POD, "metadata": {**POD["metadata"], "name": "web-2", "uid": "uid-web-2"}}
    rec.record(other, "Normal", "Pulling", "Pulling image busybox:0")  # another object
    await rec.flush()
    by_reason = events_by_reason(transport)
    assert sum(e.get("count", 1) for e in by_reason["Pulling"]) == SPAM_BURST + 2
    assert "Pulling image busybox:over" not in {e["message"] for e in by_reason["Pulling"]}
    assert {e["message"] for e in by_reason["Pulling"] if e["involvedObject"]["name"] == "web-2"} == {"Pulling image busybox:0"}
    assert [e["type"] for e in by_reason["Pulling"] if e["message"] == "odd but distinct type"] == ["Warning"]
    assert [e["count"] for e in by_reason["Pulled"]] == [1]
    assert rec.filtered == 1


async def test_similar_events_are_combined_after_nine_distinct_messages(recorder) -> None:
    rec, transport, clock = recorder
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid"}}
    for i in range(30):
        rec.record(rs, "Normal", "SuccessfulCreate", f"Created pod: web-{i}")
    await rec.flush()
    events = sorted(events_by_reason(transport)["SuccessfulCreate"], key=lambda e: e["metadata"]["name"])
    singles = [e for e in events if not e["message"].startswith("(combined")]
    (combined,) = [e for e in events if e["message"].startswith("(combined")]
    # Upstream's numbers: 9 distinct messages stand alone, the rest share one Event; the spam
    # filter lets 25 of the 30 through, so the combined Event was written 16 times.
    assert sorted(e["message"] for e in singles) == sorted(f"Created pod: web-{i}" for i in range(9))
    assert all(e["count"] == 1 for e in singles)
    assert combined["count"] == 16
    assert combined["message"] == "(combined from similar events): Created pod: web-24"
    assert transport.calls["create/events"] == 10 and transport.calls["patch/events"] == 15

    # Ten quiet minutes later a new message stands alone again (and a token has come back).
    clock.now += 601
    rec.record(rs, "Normal", "SuccessfulCreate", "Created pod: web-late")
    await rec.flush()
    late = [e for e in events_by_reason(transport)["SuccessfulCreate"] if e["message"] == "Created pod: web-late"]
    assert [e["count"] for e in late] == [1]


async def test_bucket_refills_one_event_per_five_minutes(recorder) -> None:
    rec, transport, clock = recorder
    for _ in range(30):
        rec.record(POD, "Warning", "BackOff", "Back-off")
    await rec.flush()
    assert events_by_reason(transport)["BackOff"][0]["count"] == 25

    clock.now += SPAM_REFILL_SECONDS - 1  # not a whole token yet
    rec.record(POD, "Warning", "BackOff", "Back-off")
    await rec.flush()
    assert events_by_reason(transport)["BackOff"][0]["count"] == 25

    clock.now += 1  # one token now (the refused attempt did not reset the refill)
    rec.record(POD, "Warning", "BackOff", "Back-off")
    rec.record(POD, "Warning", "BackOff", "Back-off")
    await rec.flush()
    assert events_by_reason(transport)["BackOff"][0]["count"] == 26

    clock.now += 3 * SPAM_REFILL_SECONDS  # three more tokens
    for _ in range(5):
        rec.record(POD, "Warning", "BackOff", "Back-off")
    await rec.flush()
    assert events_by_reason(transport)["BackOff"][0]["count"] == 29

    clock.now += 100 * SPAM_REFILL_SECONDS  # the bucket never holds more than the burst
    for _ in range(30):
        rec.record(POD, "Warning", "BackOff", "Back-off")
    await rec.flush()
    assert events_by_reason(transport)["BackOff"][0]["count"] == 29 + SPAM_BURST
