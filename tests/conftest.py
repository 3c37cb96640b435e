"""Fixtures shared by the whole suite.

``cluster`` starts one real k3py server per test module (on its own test host, see
tests/cluster.py); ``make_cluster`` starts extra ones for tests that need a fresh server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import TestCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., TestCluster]]:
    started: list[TestCluster] = []

    def _make(*server_args: str) -> TestCluster:
        cluster = TestCluster(tmp_path / f"cluster{len(started)}", server_args)
        started.append(cluster)
        cluster.__enter__()
        return cluster

    yield _make
    for cluster in reversed(started):
        cluster.stop()
