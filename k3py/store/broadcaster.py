"""In-process fan-out of committed events to watchers (kine's tiny broadcaster).

The writer publishes each committed batch exactly once, in commit order, on the event loop.
Subscribers are grouped by prefix, so a batch is filtered once per distinct prefix rather
than once per watcher: 1,000 watchers of one prefix cost one filter and 1,000 list appends.
A subscription buffers up to MAX_PENDING_EVENTS; past that it drops its buffer and marks
itself overflowed, and the watch layer re-reads the missed revisions from the table — a
stalled consumer costs disk reads later instead of unbounded memory now.
"""

from __future__ import annotations

import asyncio
from collections import deque

from k3py.store.types import Event, StoreClosedError

MAX_PENDING_EVENTS = 100_000


class SubscriptionOverflow(Exception):
    """The consumer fell this far behind; its buffered events were dropped."""


class WatchEnded(Exception):
    """The watcher itself ended its subscription (``aclose`` while a read was pending)."""


class Subscription:
    """One watcher's queue of event batches, in publish order.

    A waiting reader parks on one bare future that ``push`` resolves: with 1,000 watchers
    every event wakes 1,000 readers, so the per-wake cost is kept to a single future.
    """

    __slots__ = ("_batches", "_closed", "_ended", "_overflowed", "_pending", "_waiter", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._batches: deque[list[Event]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._ended = False
        self._overflowed = False
        self._pending = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, events: list[Event]) -> None:
        if self._overflowed:
            return
        self._pending += len(events)
        if self._pending > MAX_PENDING_EVENTS:
            self._overflowed = True
            self._batches.clear()
            self._pending = 0
        else:
            self._batches.append(events)
        self._wake()

    def close(self) -> None:
        """The store is closing: a pending read raises StoreClosedError."""
        self._closed = True
        self._wake()

    def end(self) -> None:
        """The watcher is done: a pending read raises WatchEnded."""
        self._ended = True
        self._wake()

    async def next_events(self) -> list[Event]:
        """Every event published since the last call (waits for at least one)."""
        while not self._batches:
            if self._ended:
                raise WatchEnded
            if self._overflowed:
                raise SubscriptionOverflow
            if self._closed:
                raise StoreClosedError("the store was closed; the watch has ended")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._pending = 0
        if len(self._batches) == 1:
            return self._batches.popleft()
        merged: list[Event] = []
        while self._batches:
            merged.extend(self._batches.popleft())
        return merged


class Broadcaster:
    """Prefix-grouped subscribers; ``publish`` must be called on the event loop thread."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, set[Subscription]] = {}
        self._closed = False

    def subscribe(self, prefix: str) -> Subscription:
        sub = Subscription(prefix)
        if self._closed:
            sub.close()
        else:
            self._by_prefix.setdefault(prefix, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._by_prefix.get(sub.prefix)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_prefix[sub.prefix]

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        for prefix, subs in self._by_prefix.items():
            matched = events if not prefix else [e for e in events if e.kv.key.startswith(prefix)]
            if matched:
                for sub in subs:
                    sub.push(matched)

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._by_prefix.values())

    def close(self) -> None:
        self._closed = True
        for subs in self._by_prefix.values():
            for sub in subs:
                sub.close()
        self._by_prefix.clear()
