"""A rate-limited, de-duplicating work queue of keys (client-go's workqueue, in asyncio).

Guarantees a controller relies on:

- a key added many times before a worker takes it is processed once (``dirty`` set);
- a key is never handed to two workers at once: adding a key that is being processed only
  marks it dirty, and ``done`` puts it back in the queue afterwards (``processing`` set);
- failures retry with per-key exponential backoff (``base_delay * 2**failures`` capped at
  ``max_delay``), combined with an overall token bucket so a storm of failing keys cannot
  hot-loop — the longer of the two delays wins, as client-go's default limiter does;
- ``forget`` resets a key's failure count after a success.

Keys are usually ``"namespace/name"`` (or ``"name"`` for cluster-scoped objects).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Hashable


class ShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down and drained."""


class TokenBucket:
    """Overall rate limit: ``qps`` tokens a second, ``burst`` at most; returns the wait."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def reserve(self) -> float:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


class WorkQueue:
    """Async work queue; see the module docstring for its guarantees."""

    def __init__(
        self,
        name: str = "",
        *,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
    ) -> None:
        self.name = name
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._delayed: dict[Hashable, asyncio.TimerHandle] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._bucket = TokenBucket(qps, burst)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, key: Hashable) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # re-queued by done()
        self._queue.append(key)
        self._notify()

    def _notify(self) -> None:
        """Wake one waiting worker (futures rather than a Condition keep add() synchronous)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds (an earlier pending add wins)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._delayed.get(key)
        when = loop.time() + delay
        if existing is not None:
            if existing.when() <= when:
                return
            existing.cancel()

        def fire() -> None:
            self._delayed.pop(key, None)
            self.add(key)

        self._delayed[key] = loop.call_at(when, fire)

    def backoff(self, key: Hashable) -> float:
        """The delay the next rate-limited add of ``key`` would get (and counts the failure)."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        per_key = min(self._max_delay, self._base_delay * (2**failures))
        return max(per_key, self._bucket.reserve())

    def add_rate_limited(self, key: Hashable) -> None:
        self.add_after(key, self.backoff(key))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> Hashable:
        """The next key; the caller must call :meth:`done` with it. Raises ShutDown at the end."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass a wake-up we may have consumed on to another worker.
                if waiter.done() and not waiter.cancelled():
                    self._notify()
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._notify()

    def shutdown(self) -> None:
        """Stop accepting keys and wake every waiting worker (they get ShutDown when drained)."""
        self._shutting_down = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
