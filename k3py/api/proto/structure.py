"""Check a JSON object against the typed structure of its built-in kind.

Kubernetes decodes request bodies into Go structs, so a value of the wrong JSON type (a string
for `replicas`, an object for `containers`) is refused before any validation runs, and with
`fieldValidation=Strict` so is a field the type does not have (`unknown field "spec.foo"`).
k3py keeps objects as dicts; this module gives the same guarantees by walking the object along
the generated protobuf descriptor of its kind (JSON names, repeated, maps, inlined embedded
structs, TypeMeta) and reporting:

* `type_causes`: Status causes (`FieldValueTypeInvalid`) for values of the wrong type, worded
  like the API server's schema errors: `Invalid value: "string": spec.replicas in body must be
  of type integer: "string"`;
* `unknown_fields`: paths such as `spec.template.spec.containers[0].imagePullPolice`, in the
  form strict decoding reports them; `prune_unknown_fields` removes them, as decoding into
  Go types does when the request is not refused.

`null` is accepted anywhere (it decodes to the zero value). Kinds without a built-in definition
(custom resources) get an empty report with `known=False`.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from k3py.api.proto import schema as proto_schema
from k3py.api.quantity import parse_quantity

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sint64": (-(2**63), 2**63 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "sfixed64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "fixed64": (0, 2**64 - 1),
}
_MAX_DEPTH = 100
# What Go's time.Parse(time.RFC3339, ...) accepts: date, 'T', time, optional fraction, zone.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass
class StructureReport:
    known: bool = True
    type_causes: list[dict[str, str]] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@cache
def _json_fields(message: str) -> dict[str, tuple[str, str]]:
    """JSON name → (type, flags) of a message, with inlined embedded structs flattened in."""
    out: dict[str, tuple[str, str]] = {}
    for _number, json_name, ftype, flags in proto_schema.load().messages[message]:
        if "i" in flags:
            out.update(_json_fields(ftype))
        else:
            out[json_name] = (ftype, flags)
    return out


class _Walker:
    def __init__(self, want_unknown: bool = True) -> None:
        # Unknown fields are wanted from the whole object, so no sub-tree may be skipped.
        self.want_unknown = want_unknown
        self.report = StructureReport()
        self.unknown_refs: list[tuple[dict[str, Any], str]] = []  # (holder, key) to prune

    def wrong(self, path: str, value: Any, want: str) -> None:
        got = _json_type(value)
        self.report.type_causes.append(
            {
                "reason": "FieldValueTypeInvalid",
                "field": path,
                "message": f'Invalid value: "{got}": {path} in body must be of type {want}: "{got}"',
            }
        )

    def invalid(self, path: str, value: str, detail: str) -> None:
        self.report.type_causes.append(
            {
                "reason": "FieldValueInvalid",
                "field": path,
                "message": f'Invalid value: "{value}": {detail}',
            }
        )

    def value(self, value: Any, ftype: str, path: str, depth: int, old: Any = None) -> None:
        if value is None:
            return
        if ftype in proto_schema.load().messages:
            self.message(value, ftype, path, depth + 1, old)
        else:
            self.scalar(value, ftype, path)

    def scalar(self, value: Any, ftype: str, path: str) -> None:
        if ftype == "string":
            if not isinstance(value, str):
                self.wrong(path, value, "string")
        elif ftype == "bool":
            if not isinstance(value, bool):
                self.wrong(path, value, "boolean")
        elif ftype in _INT_RANGES:
            if isinstance(value, bool) or not isinstance(value, int):
                self.wrong(path, value, "integer")
            else:
                low, high = _INT_RANGES[ftype]
                if not low <= value <= high:
                    self.invalid(path, str(value), f"{path} in body must fit in {ftype}")
        elif ftype == "bytes":
            if not isinstance(value, str):
                self.wrong(path, value, "string")
            else:
                try:
                    b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    self.invalid(path, "<value omitted>", f"{path} in body must be base64-encoded")
        elif ftype in ("double", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.wrong(path, value, "number")

    def special(self, value: Any, name: str, path: str) -> None:
        if name in (proto_schema.TIME, proto_schema.MICROTIME):
            if not isinstance(value, str):
                self.wrong(path, value, "string")
                return
            if value == "":
                return  # read as the zero time (Go would refuse it; k3py's own writers send it)
            try:
                if not _RFC3339.match(value):
                    raise ValueError(value)
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                self.invalid(
                    value=value, path=path, detail=f"{path} in body must be of type date-time"
                )
        elif name in (proto_schema.QUANTITY, proto_schema.QUANTITY_VALUE):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                self.wrong(path, value, "string")
                return
            try:
                parse_quantity(value)
            except ValueError as exc:
                self.invalid(path, str(value), str(exc))
        elif name == proto_schema.INT_OR_STRING:
            if isinstance(value, bool) or not isinstance(value, int | str):
                self.wrong(path, value, "integer or string")
        elif name == proto_schema.DURATION:
            if not isinstance(value, str):
                self.wrong(path, value, "string")
        # RawExtension and FieldsV1 hold arbitrary JSON.

    def message(self, value: Any, name: str, path: str, depth: int, old: Any = None) -> None:
        """Check ``value`` as message ``name``. ``old`` (when walking against a checked old
        object) is the same place in that object: children that *are* its children (the
        same Python object, shared by the registry's status and finalize writes) were
        checked when it was stored and are skipped. Only identity counts — equality would
        let ``True`` pass for ``1``."""
        if depth > _MAX_DEPTH:
            self.invalid(path, "...", "nested too deeply")
            return
        schema = proto_schema.load()
        if name in proto_schema.SPECIAL:
            self.special(value, name, path)
            return
        if name in schema.lists:
            if not isinstance(value, list):
                self.wrong(path, value, "array")
                return
            for i, item in enumerate(value):
                if item is not None and not isinstance(item, str):
                    self.wrong(f"{path}[{i}]", item, "string")
            return
        if not isinstance(value, dict):
            self.wrong(path, value, "object")
            return
        fields = _json_fields(name)
        typemeta = name in schema.typemeta
        old_map = old if isinstance(old, dict) and not self.want_unknown else None
        for key, item in value.items():
            old_item = None
            if old_map is not None:
                old_item = old_map.get(key)
                if old_item is item:
                    continue
            child = f"{path}.{key}" if path else str(key)
            if typemeta and key in ("apiVersion", "kind"):
                if item is not None and not isinstance(item, str):
                    self.wrong(child, item, "string")
                continue
            spec = fields.get(key)
            if spec is None:
                self.report.unknown_fields.append(child)
                self.unknown_refs.append((value, key))
                continue
            if item is None:
                continue
            ftype, flags = spec
            if "m" in flags:
                if not isinstance(item, dict):
                    self.wrong(child, item, "object")
                    continue
                _map, _key_type, value_type = ftype.split(":")
                old_entries = old_item if isinstance(old_item, dict) else {}
                for map_key, map_value in item.items():
                    if old_entries and old_entries.get(map_key) is map_value:
                        continue
                    self.value(map_value, value_type, f"{child}[{map_key}]", depth)
            elif "r" in flags:
                if not isinstance(item, list):
                    self.wrong(child, item, "array")
                    continue
                old_list = old_item if isinstance(old_item, list) else ()
                for i, element in enumerate(item):
                    old_element = old_list[i] if i < len(old_list) else None
                    if old_element is not None and old_element is element:
                        continue
                    self.value(element, ftype, f"{child}[{i}]", depth, old_element)
            else:
                self.value(item, ftype, child, depth, old_item)


def check_object_meta(meta: Any, path: str = "metadata") -> StructureReport:
    """Check just an ObjectMeta (custom resources: their metadata is still typed)."""
    walker = _Walker()
    walker.message(meta, f"{proto_schema.META}.ObjectMeta", path, 0)
    return walker.report


def check_structure(api_version: str, kind: str, obj: Any) -> StructureReport:
    """Wrong-typed values and unknown fields of `obj`, a `kind` in `api_version`."""
    name = proto_schema.message_for(api_version, kind)
    if name is None:
        return StructureReport(known=False)
    walker = _Walker()
    walker.message(obj, name, "", 0)
    return walker.report


def type_causes_against(api_version: str, kind: str, obj: Any, old: Any) -> StructureReport:
    """Like ``check_structure``, for type causes only, skipping the parts of ``obj`` that are
    the very objects found at the same place in ``old`` — an object already checked (the
    stored object an update starts from). ``unknown_fields`` is not filled in."""
    name = proto_schema.message_for(api_version, kind)
    if name is None:
        return StructureReport(known=False)
    walker = _Walker(want_unknown=False)
    walker.message(obj, name, "", 0, old)
    return walker.report


def prune_unknown_fields(api_version: str, kind: str, obj: Any) -> list[str]:
    """Remove, in place, the fields a built-in kind does not have; returns their paths.

    Kubernetes drops them while decoding into its Go types, so they are never stored (with
    fieldValidation=Strict the request fails instead, with Warn the paths become warnings).
    """
    name = proto_schema.message_for(api_version, kind)
    if name is None:
        return []
    walker = _Walker()
    walker.message(obj, name, "", 0)
    for holder, key in walker.unknown_refs:
        holder.pop(key, None)
    return walker.report.unknown_fields
