"""resource.Quantity parsing and canonical text, checked against upstream's documented examples."""

from __future__ import annotations

from decimal import Decimal

import pytest

from k3py.api.quantity import (
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    canonical_quantity,
    format_quantity,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1536 * 1024 * 1024)),
        ("250m", Decimal("0.25")),
        ("1e3", Decimal(1000)),
        ("1E-3", Decimal("0.001")),
        ("2k", Decimal(2000)),
        ("1M", Decimal(10**6)),
        ("1E", Decimal(10**18)),
        ("-1.5", Decimal("-1.5")),
        (".5", Decimal("0.5")),
        ("+7", Decimal(7)),
        ("0.0000000001", Decimal("1e-9")),  # finer than nano rounds up
        (3, Decimal(3)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1024Mi", "1Gi"),
        ("100Mi", "100Mi"),
        ("1023Ki", "1023Ki"),
        ("0.1", "100m"),
        ("1000m", "1"),
        ("1500m", "1500m"),
        ("2000", "2k"),
        ("1500", "1500"),
        ("1.5k", "1500"),
        ("12e6", "12e6"),
        ("1e3", "1e3"),
        ("5e-3", "5e-3"),
        ("0", "0"),
        ("0Gi", "0"),
        ("-1.5", "-1500m"),
        ("1n", "1n"),
        ("100M", "100M"),
        ("123456789n", "123456789n"),
        ("1e30", "1e30"),
    ],
)
def test_canonical(text: str, canonical: str) -> None:
    assert canonical_quantity(text) == canonical


def test_format_styles() -> None:
    assert format_quantity(Decimal(1024), BINARY_SI) == "1Ki"
    assert format_quantity(Decimal(512), BINARY_SI) == "512"  # below 1024: decimal
    assert format_quantity(Decimal("0.5"), BINARY_SI) == "500m"
    assert format_quantity(Decimal(1024), DECIMAL_SI) == "1024"
    assert format_quantity(Decimal(3000), DECIMAL_EXPONENT) == "3e3"
    assert format_quantity(Decimal(10**21), DECIMAL_SI) == "1e21"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "1.2.3",
        "1Kb",
        "1 Ki",
        "--1",
        "1e",
        "1ki",
        "+",
        True,
        float("inf"),
        float("nan"),
        "1e999",
        1e300,
    ],
)
def test_bad_quantities(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)  # type: ignore[arg-type]
