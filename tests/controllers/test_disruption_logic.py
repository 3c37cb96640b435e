"""PodDisruptionBudget arithmetic (pure)."""

from __future__ import annotations

import pytest

from k3py.server.controllers.disruption import budget_numbers


@pytest.mark.parametrize(("spec", "expected", "healthy", "result"), [
    ({"minAvailable": 2}, 3, 3, (2, 1)),
    ({"minAvailable": "50%"}, 3, 3, (2, 1)),  # 1.5 rounds up
    ({"maxUnavailable": 1}, 4, 4, (3, 1)),
    ({"maxUnavailable": "25%"}, 5, 4, (3, 1)),  # 1.25 unavailable rounds up to 2
    ({"minAvailable": 3}, 3, 2, (3, 0)),
    ({}, 2, 2, (2, 0)),
])
def test_budget_numbers(spec: dict, expected: int, healthy: int, result: tuple[int, int]) -> None:
    assert budget_numbers({"spec": spec}, expected, healthy) == result
