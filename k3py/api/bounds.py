"""Bounds every decoded request value must keep: nesting depth and integer range.

Kubernetes decodes JSON in Go, with a nesting limit of 10000 and 64-bit integers. k3py walks
objects recursively in Python (defaulting, validation, managedFields, the watch cache's
copies), and orjson refuses to encode more than 255 levels, so a body nested a few hundred
levels deep would fail somewhere in the middle of a write — or, worse, be stored and then break
every reader. k3py therefore refuses, when a body is decoded, any value nested more than
``MAX_NESTING_DEPTH`` (100) objects and arrays deep. Real objects stay far below it: a Pod is
about 10 levels deep; a CustomResourceDefinition whose schema embeds a whole PodTemplateSpec,
about 45.

Integers must fit the 64-bit range Go's decoder accepts (int64, or uint64 for the few unsigned
fields): YAML and protobuf can carry larger ones, and Python would carry them on until some
``float()`` or ``timedelta`` overflowed. Floats must be finite (JSON has no infinity).

The walk is iterative, so it is safe on any input.
"""

from __future__ import annotations

import math
from typing import Any

MAX_NESTING_DEPTH = 100
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1


class BoundsError(ValueError):
    """A decoded value nested too deeply or holding an out-of-range number."""


def depth_error(limit: int = MAX_NESTING_DEPTH) -> BoundsError:
    return BoundsError(f"the object is nested more than {limit} levels deep")


def int_in_range(value: int) -> bool:
    return INT_MIN <= value <= INT_MAX


def describe_number(value: int | float) -> str:
    """A number for an error message, without printing thousands of digits."""
    if isinstance(value, int) and value.bit_length() > 100:
        # str() of a huge int is slow, and refused past 4300 digits.
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"{'-' if value < 0 else ''}<a number of about {digits} digits>"
    return repr(value)


def check_bounds(value: Any, max_depth: int = MAX_NESTING_DEPTH) -> None:
    """Raise BoundsError unless ``value`` nests at most ``max_depth`` containers deep and every
    number in it is a 64-bit integer or a finite float."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise depth_error(max_depth)
            for child in node.values():
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child)
        elif isinstance(node, list):
            if depth > max_depth:
                raise depth_error(max_depth)
            for child in node:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child)
        else:
            _check_scalar(node)


def _check_scalar(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not int_in_range(value):
            raise BoundsError(f"the number {describe_number(value)} is out of the 64-bit integer range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise BoundsError(f"the number {value} is not finite")
