"""The small JSONPath dialect of CRD additionalPrinterColumns (and kubectl's -o jsonpath).

Printer columns select one value with a simple path: `.spec.replicas`, `.spec.hosts[0]`,
`.status.conditions[?(@.type=="Ready")].status`, optionally wrapped in `{...}`. This module
evaluates those: fields (dotted or `['quoted']`), indices (negative from the end), `[*]` and
equality filters. Anything else is refused with `JSONPathError` rather than guessed at.
"""

from __future__ import annotations

import json
from typing import Any


def _field(obj: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class JSONPathError(ValueError):
    """A printer column's JSONPath that k3py cannot evaluate."""


def _jsonpath_steps(path: str) -> list[tuple[str, Any]]:
    """The steps of the simple JSONPath CRD printer columns use.

    Supported: `.field`, `['field']`, `[n]`, `[*]`, `[?(@.a.b=="v")]` (== or !=), with or
    without the surrounding `{...}`.
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[tuple[str, Any]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ".":
            j = i + 1
            while j < len(text) and text[j] not in ".[":
                j += 1
            if j > i + 1:
                steps.append(("field", text[i + 1 : j]))
            i = j
        elif ch == "[":
            end = text.find("]", i)
            if text.startswith("[?(", i):
                end = text.find(")]", i)
                if end < 0:
                    raise JSONPathError(f"unterminated filter in {path}")
                steps.append(("filter", _parse_filter(text[i + 3 : end], path)))
                i = end + 2
                continue
            if end < 0:
                raise JSONPathError(f"unterminated [ in {path}")
            inner = text[i + 1 : end].strip()
            if inner == "*":
                steps.append(("all", None))
            elif inner[:1] in "'\"" and inner[-1:] == inner[:1]:
                steps.append(("field", inner[1:-1]))
            else:
                try:
                    steps.append(("index", int(inner)))
                except ValueError:
                    raise JSONPathError(f"unsupported subscript [{inner}] in {path}") from None
            i = end + 1
        else:
            raise JSONPathError(f"unexpected {ch!r} in {path}")
    return steps


def _parse_filter(expr: str, path: str) -> tuple[list[str], str, str]:
    for op in ("==", "!="):
        if op in expr:
            left, right = (part.strip() for part in expr.split(op, 1))
            if not left.startswith("@."):
                break
            value = right.strip()
            if value[:1] in "'\"" and value[-1:] == value[:1]:
                value = value[1:-1]
            return left[2:].split("."), op, value
    raise JSONPathError(f"unsupported filter {expr!r} in {path}")


def jsonpath_values(obj: Any, path: str) -> list[Any]:
    """Every value `path` selects in `obj` (missing fields select nothing)."""
    current = [obj]
    for kind, arg in _jsonpath_steps(path):
        following: list[Any] = []
        for node in current:
            if kind == "field" and isinstance(node, dict) and arg in node:
                following.append(node[arg])
            elif kind == "index" and isinstance(node, list) and -len(node) <= arg < len(node):
                following.append(node[arg])
            elif kind == "all":
                following.extend(node if isinstance(node, list) else
                                 node.values() if isinstance(node, dict) else [])
            elif kind == "filter" and isinstance(node, list):
                fields, op, want = arg
                for item in node:
                    got = _field(item, fields)
                    text = json.dumps(got) if isinstance(got, bool) else str(got)
                    if got is not None and (text == want) == (op == "=="):
                        following.append(item)
        current = following
    return current
