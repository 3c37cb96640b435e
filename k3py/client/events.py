"""Recording core/v1 Events (what ``kubectl describe`` and ``kubectl get events`` show).

Components report things like ``Scheduled`` or ``FailedScheduling`` without waiting for the
write: :meth:`EventRecorder.record` queues the event and one background task posts them, so a
hot loop (the scheduler binding hundreds of pods a second) never blocks on event writes. A
bounded queue drops events rather than growing without limit when the API server is slow —
events are best-effort in Kubernetes too.

Upstream's correlator, in its order:

- *aggregation*: per (involved object, type, reason), once ``AGGREGATE_MAX_EVENTS`` (10)
  distinct messages have been seen within ``AGGREGATE_INTERVAL_SECONDS`` (10 minutes) of each
  other, further ones go to one Event whose message is "(combined from similar events): "
  and the latest message;
- *deduplication*: a repeat of an (object, reason, message) — or of the combined event — is
  folded into the existing Event, whose ``count`` and ``lastTimestamp`` grow;
- *spam filter*: each (involved object, type, reason) has a token bucket of ``SPAM_BURST``
  (25) events refilled at one per ``SPAM_REFILL_SECONDS`` (5 minutes); events beyond it are
  dropped when recorded, before any API write.

A 2,000-replica ReplicaSet thus writes 9 "Created pod" Events and one combined Event counted
16 times — 25 writes, the view ``kubectl describe`` gives on upstream — instead of 2,000; 30
identical events make one Event with count 25. Time comes from the recorder's ``clock``
(``time.monotonic`` unless injected), which is how tests drive refills and windows without
sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339
from k3py.client.interface import EVENTS, Client

log = logging.getLogger("k3py.client.events")

SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
SPAM_KEYS_KEPT = 4096  # least recently used buckets beyond this are forgotten (upstream's LRU size)
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL_SECONDS = 600.0
COMBINED_PREFIX = "(combined from similar events): "


def object_reference(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    ref = {
        "kind": obj.get("kind", ""),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": obj.get("apiVersion", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    return {k: v for k, v in ref.items() if v}


class EventRecorder:
    """Queue-and-post recorder for one component (``source.component``)."""

    def __init__(self, client: Client, component: str, host: str = "", max_pending: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock  # seconds, monotonic: the spam filter's refill time base
        self.component = component
        self.host = host
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue(max_pending)
        self._seen: dict[tuple[str, ...], dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        # spam key -> (tokens left, monotonic time they were counted); insertion order = LRU
        self._spam: dict[tuple[str, ...], tuple[float, float]] = {}
        self.filtered = 0
        # aggregation key -> (distinct messages seen, clock time of the last one); LRU order
        self._similar: dict[tuple[str, ...], tuple[set[str], float]] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"events-{self.component}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str, *,
               kind: str = "", api_version: str = "") -> None:
        """Report ``reason``/``message`` about ``obj`` ("Normal" or "Warning"); never blocks.

        ``kind``/``api_version`` fill in what list items lack (only watch events carry them).
        """
        if (kind and not obj.get("kind")) or (api_version and not obj.get("apiVersion")):
            obj = {**obj, "kind": obj.get("kind") or kind, "apiVersion": obj.get("apiVersion") or api_version}
        if not self._allow(obj, event_type, reason):
            self.filtered += 1
            return
        try:
            self._queue.put_nowait((obj, event_type, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1

    def _allow(self, obj: dict[str, Any], event_type: str, reason: str) -> bool:
        """Take a token from this event's spam bucket; False when it is empty."""
        meta = obj.get("metadata") or {}
        key = (str(obj.get("kind", "")), str(obj.get("apiVersion", "")), str(meta.get("namespace", "")),
               str(meta.get("name", "")), str(meta.get("uid", "")), event_type, reason)
        now = self.clock()
        tokens, since = self._spam.pop(key, (float(SPAM_BURST), now))
        tokens = min(float(SPAM_BURST), tokens + (now - since) / SPAM_REFILL_SECONDS)
        allowed = tokens >= 1.0
        self._spam[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._spam) > SPAM_KEYS_KEPT:
            self._spam.pop(next(iter(self._spam)))
        return allowed

    async def flush(self) -> None:
        """Wait until every queued event has been posted (tests and shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            obj, event_type, reason, message = await self._queue.get()
            try:
                await self._post(obj, event_type, reason, message)
            except ApiError as e:
                log.debug("event %s for %s not recorded: %s", reason, (obj.get("metadata") or {}).get("name"), e.message)
            except Exception:
                log.exception("event recording failed")
            finally:
                self._queue.task_done()

    def _aggregate(self, ref: dict[str, Any], event_type: str, reason: str, message: str) -> tuple[tuple[str, ...], str]:
        """(deduplication key, message) after upstream's aggregation of similar events."""
        object_key = ref.get("uid", "") or ref.get("name", "")
        similar_key = (ref.get("kind", ""), ref.get("apiVersion", ""), ref.get("namespace", ""), ref.get("name", ""),
                       object_key, event_type, reason)
        now = self.clock()
        messages, last = self._similar.pop(similar_key, (set(), now))
        if now - last > AGGREGATE_INTERVAL_SECONDS:
            messages = set()
        messages.add(message)
        self._similar[similar_key] = (messages, now)
        if len(self._similar) > SPAM_KEYS_KEPT:
            self._similar.pop(next(iter(self._similar)))
        if len(messages) < AGGREGATE_MAX_EVENTS:
            return (object_key, reason, message), message
        messages.pop()  # the set never grows past the limit (upstream's PopAny)
        return ("combined", *similar_key), COMBINED_PREFIX + message

    async def _post(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        ref = object_reference(obj)
        namespace = ref.get("namespace") or "default"
        key, message = self._aggregate(ref, event_type, reason, message)
        now = now_rfc3339()
        previous = self._seen.get(key)
        if previous is not None:
            previous["count"] = int(previous.get("count", 1)) + 1
            previous["lastTimestamp"] = now
            previous["message"] = message
            try:
                self._seen[key] = await self.client.patch(
                    EVENTS, previous["metadata"]["name"],
                    {"count": previous["count"], "lastTimestamp": now, "message": message}, namespace)
                return
            except ApiError as e:
                if e.code != 404:
                    raise
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.get('name', 'unknown')}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._seen[key] = await self.client.create(EVENTS, event, namespace)
        if len(self._seen) > 4096:
            self._seen.pop(next(iter(self._seen)))
