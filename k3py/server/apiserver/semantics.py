"""The pure-API hooks the registry calls: defaulting, validation, name rules.

They live in ``k3py.api.defaults`` and ``k3py.api.validation`` (written alongside the API
server). This module is the one place the registry reaches them through, so that while a
module has not landed yet the server still runs with that step skipped (and logs it once)
instead of failing to import.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from k3py.api.resources import ResourceInfo

log = logging.getLogger("k3py.apiserver")


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        log.warning("%s.%s is not available yet; that step is skipped", module, name)
        return None


_apply_defaults = _optional("k3py.api.defaults", "apply_defaults")
_validate_object = _optional("k3py.api.validation", "validate_object")
_validate_name = _optional("k3py.api.validation", "validate_name")


def apply_defaults(info: ResourceInfo, obj: dict[str, Any]) -> None:
    if _apply_defaults is not None:
        _apply_defaults(info, obj)


def validate_object(info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> list[dict[str, Any]]:
    if _validate_object is None:
        return []
    return list(_validate_object(info, obj, old))


_subdomain_errors = _optional("k3py.api.validation", "dns1123_subdomain_errors")


def validate_name(info: ResourceInfo, name: str) -> list[str]:
    if _validate_name is None:
        # Until per-kind name rules land, every kind gets the common DNS-1123 subdomain rule.
        return list(_subdomain_errors(name)) if _subdomain_errors is not None else []
    return list(_validate_name(info, name))


_table_columns = _optional("k3py.api.tables", "table_columns")
_table_row_cells = _optional("k3py.api.tables", "table_row_cells")

# Upstream's columns for a kind without its own printer: NAME and AGE.
_DEFAULT_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
]


def table_columns(info: ResourceInfo) -> list[dict[str, Any]]:
    if _table_columns is None:
        return _DEFAULT_COLUMNS
    return _table_columns(info)


def table_row_cells(info: ResourceInfo, obj: dict[str, Any], now: Any) -> list[Any]:
    if _table_row_cells is None:
        from k3py.api.meta import parse_rfc3339

        created = obj.get("metadata", {}).get("creationTimestamp")
        age = "<unknown>"
        if created:
            seconds = int((now - parse_rfc3339(created)).total_seconds())
            age = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"
        return [obj.get("metadata", {}).get("name", ""), age]
    return _table_row_cells(info, obj, now)
