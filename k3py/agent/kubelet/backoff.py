"""CrashLoopBackOff: how long the kubelet waits before restarting a container that exited.

The kubelet's rule, per container: the first restart is immediate, then it waits 10 s, doubling
with each further restart up to 5 min. A container that ran for 10 min before exiting has earned
a fresh start: it restarts at once and the next back-offs begin again at 10 s.

The restart count comes from the runtime (each attempt is a container labelled with it), so the
back-off survives a restart of k3py; what is kept here is only the restart count at which the
back-off was last reset, per container. The clock is injectable so the 10-minute rule is tested
without waiting ten minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ContainerKey = tuple[str, str, bool]  # (pod uid, container name, is an init container)

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0  # a container that ran this long starts its back-off afresh


def crash_loop_backoff(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts + 1``: the first restart is immediate,
    then 10 s, 20 s, 40 s ... up to 5 min."""
    if restarts <= 0:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** min(restarts - 1, 10))


class RestartBackOff:
    """The back-off state of every container of a node, keyed by (pod uid, container name, init)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._reset_at: dict[ContainerKey, int] = {}  # key -> restart count when last reset

    def delay(self, key: ContainerKey, restarts: int, ran_seconds: float) -> float:
        """The whole back-off before the next start of a container that has been restarted
        ``restarts`` times and whose last run lasted ``ran_seconds``."""
        if ran_seconds >= BACKOFF_RESET_AFTER:
            self._reset_at[key] = restarts
        return crash_loop_backoff(restarts - self._reset_at.get(key, 0))

    def remaining(self, key: ContainerKey, restarts: int, started_at: float, finished_at: float) -> float:
        """Seconds still to wait from now (0 = start it now); times are epoch seconds."""
        waited = self.clock() - finished_at
        return max(0.0, self.delay(key, restarts, finished_at - started_at) - waited)

    def forget_pod(self, uid: str) -> None:
        """The pod is gone: drop what was kept for its containers."""
        for key in [k for k in self._reset_at if k[0] == uid]:
            del self._reset_at[key]
