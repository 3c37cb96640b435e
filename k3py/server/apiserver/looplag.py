"""How late the event loop runs: the measure of "nothing blocks the loop".

One asyncio loop serves the API, the controllers and the kubelet, so any callback that runs
long delays all of them. ``LoopLagMonitor`` sleeps ``INTERVAL`` at a time and records how much
later than asked it woke up — the time the loop spent on something else — in a cumulative
histogram (Prometheus' shape, served on ``/metrics`` as ``k3py_event_loop_lag_seconds``), and
logs stalls longer than ``REPORT_SECONDS`` once a minute with a count. A stall of several
seconds shows up as one sample of several seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging

from k3py.util.logsummary import LogSummary

log = logging.getLogger("k3py.apiserver.looplag")

INTERVAL = 0.05
REPORT_SECONDS = 1.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLagMonitor:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket, the last one +Inf
        self.total = 0.0
        self.samples = 0
        self._summary = LogSummary(log)
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, lag)] += 1
        self.total += lag
        self.samples += 1
        if lag >= REPORT_SECONDS:
            self._summary.log("stall", logging.WARNING, "the event loop was blocked for %.1f s", lag)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(INTERVAL)
            self.observe(max(0.0, loop.time() - start - INTERVAL))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def prometheus(self) -> str:
        """The histogram in Prometheus' text format."""
        name = "k3py_event_loop_lag_seconds"
        lines = [
            f"# HELP {name} How much later than scheduled the event loop ran a timer.",
            f"# TYPE {name} histogram",
        ]
        cumulative = 0
        for bound, count in zip(BUCKETS, self.counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.samples}')
        lines.append(f"{name}_sum {self.total}")
        lines.append(f"{name}_count {self.samples}")
        return "\n".join(lines) + "\n"
