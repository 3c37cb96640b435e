"""The loop watchdog reports a blocked event loop with the blocking call, and nothing else."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from k3py.util.loopwatch import STALL_MESSAGE, LoopWatchdog


def _a_blocking_callback() -> None:
    time.sleep(0.3)  # what a synchronous read or a lock wait does to the loop


async def _run_watched(body, threshold: float = 0.1) -> LoopWatchdog:  # type: ignore[no-untyped-def]
    watchdog = LoopWatchdog(threshold)
    watchdog.start()
    try:
        await body()
        await asyncio.sleep(0.2)  # the heartbeat after the stall reports it
    finally:
        watchdog.stop()
    return watchdog


async def test_a_blocked_loop_is_reported_with_the_blocking_call(caplog: pytest.LogCaptureFixture) -> None:
    async def block() -> None:
        await asyncio.sleep(0.1)
        asyncio.get_running_loop().call_soon(_a_blocking_callback)
        await asyncio.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="k3py.util.loopwatch"):
        watchdog = await _run_watched(block)
    reports = [r.getMessage() for r in caplog.records if STALL_MESSAGE in r.getMessage()]
    assert watchdog.stalls == 1 and len(reports) == 1
    held_ms = int(reports[0].split(STALL_MESSAGE)[1].split()[0])
    assert 250 <= held_ms < 2000
    assert "_a_blocking_callback" in reports[0] and "time.sleep(0.3)" in reports[0]


async def test_a_busy_but_responsive_loop_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    async def work() -> None:
        for _ in range(40):  # many short steps, each well under the threshold
            deadline = time.monotonic() + 0.01
            while time.monotonic() < deadline:
                pass
            await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="k3py.util.loopwatch"):
        watchdog = await _run_watched(work, threshold=0.1)
    assert watchdog.stalls == 0
    assert not [r for r in caplog.records if STALL_MESSAGE in r.getMessage()]


def test_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3PY_LOOP_WATCHDOG_MS", "250")
    watchdog = LoopWatchdog.from_environment()
    assert watchdog is not None and watchdog.threshold == 0.25
    monkeypatch.setenv("K3PY_LOOP_WATCHDOG_MS", "0")
    assert LoopWatchdog.from_environment() is None
    monkeypatch.delenv("K3PY_LOOP_WATCHDOG_MS")
    default = LoopWatchdog.from_environment()
    assert default is not None and default.threshold == 1.0
