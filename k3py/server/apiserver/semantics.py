"""The pure-API hooks the registry and the REST handler call, in one place.

Defaulting and validation (``k3py.api.defaults`` / ``k3py.api.validation``) and Table rows
(``k3py.api.tables``) are written next to the API server; routing every call through here keeps
the registry's dependencies on them explicit and easy to find.
"""

from __future__ import annotations

from typing import Any

from k3py.api import defaults, tables, validation
from k3py.api.resources import ResourceInfo


def apply_defaults(info: ResourceInfo, obj: dict[str, Any], *, structure_checked: bool = False) -> None:
    defaults.apply_defaults(info, obj, structure_checked=structure_checked)


def type_causes(info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(validation.type_causes(info, obj, old))


def validate_object(
    info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None, *, types_checked: bool = False
) -> list[dict[str, Any]]:
    return list(validation.validate_object(info, obj, old, types_checked=types_checked))


def validate_name(info: ResourceInfo, name: str) -> list[str]:
    return list(validation.validate_name(info, name))


def table_columns(info: ResourceInfo) -> list[dict[str, Any]]:
    return tables.table_columns(info)


def table_row_cells(info: ResourceInfo, obj: dict[str, Any], now: Any) -> list[Any]:
    return tables.table_row_cells(info, obj, now)
