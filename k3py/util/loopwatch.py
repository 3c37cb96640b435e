"""A watchdog for the one event loop: say when, for how long and by what it was blocked.

The API server, the controllers and the kubelet share one asyncio loop, so a callback that
blocks (a lock wait, a synchronous read, a long computation) stops the whole process. asyncio's
debug mode logs slow callbacks, but it costs on every call and it measures wall time, which on a
busy machine also counts the time the kernel simply did not run us. This watchdog is cheap
enough to stay on:

- on the loop, a heartbeat every ``interval`` seconds measures how late it ran, minus the time
  the loop thread spent runnable but waiting for a CPU (``run_delay`` in
  ``/proc/thread-self/schedstat``): what remains is time the loop was held by our own code;
- a thread notices a heartbeat that is overdue and takes the loop thread's Python stack once
  per stall, so the warning names the blocking call, not only the fact.

A stall of more than ``threshold`` seconds is logged as one WARNING line ("event loop blocked
for N ms ...") followed by the stack. Tests run servers with a 100 ms threshold and fail on
such lines; production uses a higher one (``K3PY_LOOP_WATCHDOG_MS``, default 1000, 0 = off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator

log = logging.getLogger(__name__)

ENV_THRESHOLD = "K3PY_LOOP_WATCHDOG_MS"
DEFAULT_THRESHOLD_MS = 1000
STALL_MESSAGE = "event loop blocked for"


def _run_delay_reader() -> tuple[int, object]:
    """A callable returning the calling thread's cumulative runqueue wait in seconds (0.0 when
    the kernel does not expose it), and the descriptor to close."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return -1, lambda: 0.0

    def read() -> float:
        try:
            return int(os.pread(fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    return fd, read


class LoopWatchdog:
    """Start with ``start()`` from the loop's thread; ``stop()`` at shutdown."""

    def __init__(self, threshold: float, interval: float | None = None) -> None:
        self.threshold = threshold
        self.interval = interval if interval is not None else min(0.05, threshold / 2)
        self.stalls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._last_delay = 0.0
        self._stack: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._schedstat_fd = -1
        self._run_delay = lambda: 0.0

    @classmethod
    def from_environment(cls) -> LoopWatchdog | None:
        raw = os.environ.get(ENV_THRESHOLD, str(DEFAULT_THRESHOLD_MS))
        try:
            threshold_ms = int(raw)
        except ValueError:
            log.warning("ignoring %s=%r: not a number of milliseconds", ENV_THRESHOLD, raw)
            threshold_ms = DEFAULT_THRESHOLD_MS
        return cls(threshold_ms / 1000) if threshold_ms > 0 else None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._schedstat_fd, self._run_delay = _run_delay_reader()  # type: ignore[assignment]
        self._last_delay = self._run_delay()
        self._schedule()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if self._schedstat_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._schedstat_fd)
            self._schedstat_fd = -1

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = time.monotonic() + self.interval
        self._timer = self._loop.call_later(self.interval, self._beat)

    def _beat(self) -> None:
        now = time.monotonic()
        delay = self._run_delay()
        waited_for_cpu = max(0.0, delay - self._last_delay)
        self._last_delay = delay
        held = now - self._due - waited_for_cpu
        if held > self.threshold:
            self.stalls += 1
            stack, self._stack = self._stack, None
            log.warning(
                "%s %d ms (%d ms late, %d ms of it waiting for a CPU)%s",
                STALL_MESSAGE,
                held * 1000,
                (now - self._due) * 1000,
                waited_for_cpu * 1000,
                f"; the loop was in:\n{stack}" if stack else "",
            )
        self._stack = None
        if not self._stop.is_set():
            self._schedule()

    def _watch(self) -> None:
        step = max(0.01, self.interval / 2)
        while not self._stop.wait(step):
            overdue = time.monotonic() - self._due
            if overdue > self.threshold / 2 and self._stack is None:
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    self._stack = "".join(traceback.format_stack(frame, limit=25))


@contextlib.contextmanager
def watching_the_loop() -> Iterator[LoopWatchdog | None]:
    """Run the body (in a coroutine on the loop) under the watchdog the environment asks for."""
    watchdog = LoopWatchdog.from_environment()
    if watchdog is not None:
        watchdog.start()
    try:
        yield watchdog
    finally:
        if watchdog is not None:
            watchdog.stop()
