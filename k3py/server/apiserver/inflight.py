"""The in-flight request limit, as upstream's ``--max-requests-inflight`` and
``--max-mutating-requests-inflight`` (the WithMaxInFlightLimit filter).

Two budgets: read-only requests (verbs get, list, watch: GET and HEAD here) and mutating ones
(everything else). A request that finds its budget spent is answered at once with 429
TooManyRequests and ``Retry-After: 1``, which client-go and kubectl honour by retrying.
Upstream answers that 429 in plain text; k3py sends the same words as a Status, so kubectl
prints them.

Not counted, as upstream: long-running requests (watches, and the exec, attach, portforward,
proxy and log subresources), which would otherwise hold a slot for their whole life, and users
in the ``system:masters`` group, so the cluster admin can always get in. Also not counted: the
health endpoints (``/healthz``, ``/livez``, ``/readyz``), which upstream's API Priority and
Fairness exempts too.

k3py's defaults are 800 read-only and 400 mutating (upstream's flags default to 400 and 200,
and with Priority and Fairness, the default since 1.20, their sum is the server's total).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web

from k3py.api import errors

DEFAULT_MAX_READONLY = 800
DEFAULT_MAX_MUTATING = 400
RETRY_AFTER_SECONDS = 1
READONLY_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class InflightLimits:
    max_readonly: int = DEFAULT_MAX_READONLY
    max_mutating: int = DEFAULT_MAX_MUTATING


class InflightLimiter:
    """Counts requests in flight per budget; ``try_acquire`` says whether one more fits."""

    def __init__(self, limits: InflightLimits) -> None:
        self.limits = limits
        self.readonly = 0
        self.mutating = 0
        self.rejected = 0

    def try_acquire(self, mutating: bool) -> bool:
        if mutating:
            if self.limits.max_mutating > 0 and self.mutating >= self.limits.max_mutating:
                self.rejected += 1
                return False
            self.mutating += 1
        else:
            if self.limits.max_readonly > 0 and self.readonly >= self.limits.max_readonly:
                self.rejected += 1
                return False
            self.readonly += 1
        return True

    def release(self, mutating: bool) -> None:
        if mutating:
            self.mutating -= 1
        else:
            self.readonly -= 1


def too_many_requests_response() -> web.Response:
    """The 429 upstream answers, with its Retry-After, as a Status."""
    error = errors.too_many_requests()
    error.details = {"retryAfterSeconds": RETRY_AFTER_SECONDS}
    return web.Response(
        body=orjson.dumps(error.to_status()),
        status=429,
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
