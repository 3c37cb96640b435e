"""TCP keep-alive on listening sockets: a peer that vanished without a FIN is noticed.

A client whose network drops (a laptop closing its lid mid `kubectl exec`) sends nothing more,
not even a reset; without keep-alive probes its connection — and the exec session, port-forward
or watch behind it — would stay open for the kernel's default of two hours and more. Go's
HTTP servers probe after 15 s idle, every 15 s, 9 times; so do ours. Set on the listening socket,
the options are inherited by every accepted connection (Linux).

``K3PY_TCP_KEEPALIVE=idle,interval,count`` (seconds, seconds, probes) overrides the default;
tests shorten it to see a dropped client go within seconds.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

ENV = "K3PY_TCP_KEEPALIVE"


@dataclass(frozen=True)
class KeepAlive:
    idle: int = 15
    interval: int = 15
    count: int = 9

    @classmethod
    def from_environment(cls) -> KeepAlive:
        raw = os.environ.get(ENV, "")
        if not raw:
            return cls()
        try:
            idle, interval, count = (int(part) for part in raw.split(","))
        except ValueError:
            raise ValueError(f"${ENV} must be idle,interval,count (seconds, seconds, probes), not {raw!r}") from None
        if min(idle, interval, count) < 1:
            raise ValueError(f"${ENV}: every value must be at least 1, not {raw!r}")
        return cls(idle, interval, count)

    def apply(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self.idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, self.interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, self.count)
