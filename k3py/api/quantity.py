"""Kubernetes resource quantities (`resource.Quantity`): parsing and canonical formatting.

A quantity is a signed decimal number with an optional suffix:
binary SI (`Ki Mi Gi Ti Pi Ei`, powers of 1024), decimal SI (`n u m "" k M G T P E`, powers of
1000), or a decimal exponent (`e3`, `E-6`). Values are kept as exact `Decimal`s; anything finer
than a nano-unit is rounded up (away from zero), as upstream does.

Canonical text follows upstream's `Quantity.String()`: the suffix family is the one the input
was written in (`suffix_style` "BinarySI", "DecimalSI" or "DecimalExponent"); the number is
written as an integer mantissa with the largest suffix that keeps it integral (`1.5Gi` →
`1536Mi`, `0.1` → `100m`, `2000` → `2k`). Binary values below 1024 or with a fraction are
shown in decimal SI, so nothing is ever rounded on output.
"""

from __future__ import annotations

import re
from decimal import ROUND_UP, Decimal, InvalidOperation, localcontext

BINARY_SI = "BinarySI"
DECIMAL_SI = "DecimalSI"
DECIMAL_EXPONENT = "DecimalExponent"

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {exp: suffix for suffix, exp in _DECIMAL.items()}
_BINARY_BY_EXP = {exp: suffix for suffix, exp in _BINARY.items()}

_SHAPE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_EXPONENT = re.compile(r"^[eE]([+-]?[0-9]+)$")

_NANO = Decimal("1e-9")
ERR_FORMAT = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
ERR_SUFFIX = "unable to parse quantity's suffix"
ERR_TOO_LARGE = "quantity is too large"
# Far beyond any real resource amount (upstream keeps 2^63 milli-units exactly); bounds the
# work a hostile "1e999999" could cause.
_TOO_LARGE = Decimal("1e40")


def _split(text: str) -> tuple[Decimal, str, str]:
    """(number, suffix, suffix style) of a quantity string."""
    shape = _SHAPE.match(text)
    if not shape:
        raise ValueError(ERR_FORMAT)
    number, suffix = shape.groups()
    if not _NUMBER.match(number):
        raise ValueError(ERR_FORMAT)
    value = Decimal(number)
    if suffix in _BINARY:
        return value * (Decimal(2) ** _BINARY[suffix]), suffix, BINARY_SI
    if suffix in _DECIMAL:
        return value.scaleb(_DECIMAL[suffix]), suffix, DECIMAL_SI
    exp = _EXPONENT.match(suffix)
    if exp:
        power = int(exp.group(1))
        if abs(power) > 1000:
            raise ValueError(ERR_SUFFIX)
        return value.scaleb(power), suffix, DECIMAL_EXPONENT
    raise ValueError(ERR_SUFFIX)


def _round_nano(value: Decimal) -> Decimal:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= -9:
        return value
    with localcontext() as ctx:
        ctx.prec = 200
        return value.quantize(_NANO, rounding=ROUND_UP)


def _bounded(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(ERR_FORMAT)
    if abs(value) >= _TOO_LARGE:
        raise ValueError(ERR_TOO_LARGE)
    return _round_nano(value)


def parse_quantity(text: str | int | float) -> Decimal:
    """The exact value of a quantity (`"1.5Gi"`, `"250m"`, `3`, `0.5`); raises ValueError."""
    if isinstance(text, bool):
        raise ValueError(ERR_FORMAT)
    if isinstance(text, int):
        return _bounded(Decimal(text))
    if isinstance(text, float):
        try:
            return _bounded(Decimal(repr(text)))
        except InvalidOperation:
            raise ValueError(ERR_FORMAT) from None
    if not isinstance(text, str) or not text:
        raise ValueError(ERR_FORMAT)
    value, _suffix, _style = _split(text)
    return _bounded(value)


def quantity_style(text: str | int | float) -> str:
    """The suffix family a quantity was written in (what upstream keeps as its Format)."""
    if not isinstance(text, str):
        return DECIMAL_SI
    return _split(text)[2]


def _decimal_parts(value: Decimal) -> tuple[int, int]:
    """value = mantissa * 10**exp with exp a multiple of 3 and the smallest integral mantissa."""
    sign, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)  # finite values only reach here
    shift = exponent % 3  # Python's modulo is non-negative: round the exponent down to x3
    mantissa = int("".join(map(str, digits)) or "0") * 10**shift
    return (-mantissa if sign else mantissa), exponent - shift


def format_quantity(value: Decimal, suffix_style: str = DECIMAL_SI) -> str:
    """Canonical text of `value` in the given suffix family, as Kubernetes prints it."""
    value = _round_nano(Decimal(value))
    if not value.is_finite():
        raise ValueError(ERR_FORMAT)
    if value == 0:
        return "0"
    if suffix_style == BINARY_SI and abs(value) >= 1024 and value == value.to_integral_value():
        mantissa, power = int(value), 0
        while power < 60 and mantissa % 1024 == 0:
            mantissa //= 1024
            power += 10
        return f"{mantissa}{_BINARY_BY_EXP.get(power, '')}"
    mantissa, exp = _decimal_parts(value)
    if suffix_style == DECIMAL_EXPONENT or exp > 18:
        return f"{mantissa}e{exp}" if exp else str(mantissa)
    return f"{mantissa}{_DECIMAL_BY_EXP[exp]}"


def canonical_quantity(text: str | int | float) -> str:
    """Parse and re-print a quantity the way the API server stores it (`"1.5Gi"` → `"1536Mi"`)."""
    return format_quantity(parse_quantity(text), quantity_style(text))
