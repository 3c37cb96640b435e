"""Fixtures for the service proxy's tests (the harness is ``harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.harness import ProxyNode, make_proxy_node


@pytest.fixture(scope="module")
def proxy_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyNode]:
    node = make_proxy_node(tmp_path_factory.mktemp("proxy-node"))
    try:
        yield node
    finally:
        node.close()
