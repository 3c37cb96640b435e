"""The end-to-end suite doubles as a sweep of the server's event loop for blocking calls.

Every test server runs the loop watchdog at 100 ms (tests/cluster.py, k3py/util/loopwatch.py):
any stretch in which the loop was held longer (time spent waiting for a CPU on a busy machine
excluded) is logged with the stack it was in. After each test here, such a report is a failure
naming that stack.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import TestCluster


@pytest.fixture(autouse=True)
def event_loop_never_blocked(request: pytest.FixtureRequest) -> Iterator[None]:
    cluster = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    if not isinstance(cluster, TestCluster):
        yield
        return
    before = len(cluster.loop_stalls())
    yield
    stalls = cluster.loop_stalls()[before:]
    assert not stalls, "the server's event loop was blocked:\n" + "\n\n".join(stalls)
