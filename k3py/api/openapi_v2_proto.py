"""OpenAPI v2 (swagger) documents in gnostic's protobuf form, as older kubectl reads them.

kubectl up to 1.28 fetches `/openapi/v2` with `Accept: application/com.github.proto-openapi.
spec.v2@v1.0+protobuf` for `explain` and for deciding whether the server validates fields, and
parses the answer as a gnostic `openapi.v2.Document` protobuf — a JSON answer fails with
"proto: cannot parse invalid wire-format data". This module encodes the JSON document that
`k3py.api.openapi` builds into that message, covering what clients read: paths with their
operations, parameters and responses, the definitions (schemas with properties, items,
additionalProperties, allOf, enums, required) and vendor extensions, which gnostic carries as
YAML text (JSON is YAML).

The protobuf wire format is written by hand (varints and length-delimited fields); field
numbers are those of gnostic's OpenAPIv2.proto.
"""

from __future__ import annotations

import json
import struct
from typing import Any

CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


class _Message:
    """A protobuf message under construction."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def bytes_field(self, number: int, data: bytes) -> None:
        self._parts.append(_varint(number << 3 | 2) + _varint(len(data)) + data)

    def string(self, number: int, value: Any) -> None:
        if isinstance(value, str) and value:
            self.bytes_field(number, value.encode())

    def strings(self, number: int, values: Any) -> None:
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str):
                self.bytes_field(number, value.encode())

    def boolean(self, number: int, value: Any) -> None:
        if value is True:
            self._parts.append(_varint(number << 3) + b"\x01")

    def integer(self, number: int, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value:
            self._parts.append(_varint(number << 3) + _varint(value))

    def double(self, number: int, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value:
            self._parts.append(_varint(number << 3 | 1) + struct.pack("<d", float(value)))

    def message(self, number: int, msg: _Message | None) -> None:
        if msg is not None:
            self.bytes_field(number, msg.encode())

    def encode(self) -> bytes:
        return b"".join(self._parts)


def _any(value: Any) -> _Message:
    msg = _Message()
    msg.string(2, json.dumps(value, separators=(",", ":")))  # Any.yaml
    return msg


def _named(name: str, value: _Message) -> _Message:
    msg = _Message()
    msg.string(1, name)
    msg.message(2, value)
    return msg


def _extensions(msg: _Message, number: int, node: dict) -> None:
    for key, value in node.items():
        if key.startswith("x-"):
            msg.message(number, _named(key, _any(value)))


def _schema(node: dict) -> _Message:
    msg = _Message()
    msg.string(1, node.get("$ref") if isinstance(node.get("$ref"), str) else None)
    msg.string(2, node.get("format"))
    msg.string(3, node.get("title"))
    msg.string(4, node.get("description"))
    if "default" in node:
        msg.message(5, _any(node["default"]))
    msg.double(6, node.get("multipleOf"))
    msg.double(7, node.get("maximum"))
    msg.boolean(8, node.get("exclusiveMaximum"))
    msg.double(9, node.get("minimum"))
    msg.boolean(10, node.get("exclusiveMinimum"))
    msg.integer(11, node.get("maxLength"))
    msg.integer(12, node.get("minLength"))
    msg.string(13, node.get("pattern"))
    msg.integer(14, node.get("maxItems"))
    msg.integer(15, node.get("minItems"))
    msg.boolean(16, node.get("uniqueItems"))
    msg.integer(17, node.get("maxProperties"))
    msg.integer(18, node.get("minProperties"))
    msg.strings(19, node.get("required"))
    for value in node.get("enum") or []:
        msg.message(20, _any(value))
    additional = node.get("additionalProperties")
    if isinstance(additional, dict) or isinstance(additional, bool):
        item = _Message()
        if isinstance(additional, dict):
            item.message(1, _schema(additional))
        else:
            item.boolean(2, additional)
        msg.message(21, item)
    kind = node.get("type")
    if kind:
        type_item = _Message()
        type_item.strings(1, kind if isinstance(kind, list) else [kind])
        msg.message(22, type_item)
    items = node.get("items")
    if isinstance(items, dict):
        items_item = _Message()
        items_item.message(1, _schema(items))
        msg.message(23, items_item)
    for sub in node.get("allOf") or []:
        if isinstance(sub, dict):
            msg.message(24, _schema(sub))
    props = node.get("properties")
    if isinstance(props, dict):
        properties = _Message()
        for name, sub in props.items():
            if isinstance(sub, dict):
                properties.message(1, _named(name, _schema(sub)))
        msg.message(25, properties)
    msg.string(26, node.get("discriminator"))
    msg.boolean(27, node.get("readOnly"))
    if "example" in node:
        msg.message(30, _any(node["example"]))
    _extensions(msg, 31, node)
    return msg


def _parameter(node: dict) -> _Message:
    item = _Message()  # ParametersItem
    if "$ref" in node:
        ref = _Message()
        ref.string(1, node["$ref"])
        item.message(2, ref)
        return item
    param = _Message()  # Parameter
    if node.get("in") == "body":
        body = _Message()
        body.string(1, node.get("description"))
        body.string(2, node.get("name"))
        body.string(3, "body")
        body.boolean(4, node.get("required"))
        if isinstance(node.get("schema"), dict):
            body.message(5, _schema(node["schema"]))
        _extensions(body, 6, node)
        param.message(1, body)
    else:
        location = node.get("in")
        sub = _Message()
        sub.boolean(1, node.get("required"))
        sub.string(2, location)
        sub.string(3, node.get("description"))
        sub.string(4, node.get("name"))
        # Path and header sub-schemas lack allow_empty_value, so their later fields shift by one.
        shift = 0 if location in ("query", "formData") else -1
        sub.string(6 + shift, node.get("type"))
        sub.string(7 + shift, node.get("format"))
        sub.boolean(20 + shift, node.get("uniqueItems"))
        _extensions(sub, 23 + shift, node)
        non_body = _Message()
        slot = {"header": 1, "formData": 2, "query": 3, "path": 4}.get(str(location), 3)
        non_body.message(slot, sub)
        param.message(2, non_body)
    item.message(1, param)
    return item


def _operation(node: dict) -> _Message:
    msg = _Message()
    msg.strings(1, node.get("tags"))
    msg.string(2, node.get("summary"))
    msg.string(3, node.get("description"))
    msg.string(5, node.get("operationId"))
    msg.strings(6, node.get("produces"))
    msg.strings(7, node.get("consumes"))
    for param in node.get("parameters") or []:
        msg.message(8, _parameter(param))
    responses = _Message()
    for code, response in (node.get("responses") or {}).items():
        resp = _Message()
        resp.string(1, response.get("description"))
        if isinstance(response.get("schema"), dict):
            schema_item = _Message()
            schema_item.message(1, _schema(response["schema"]))
            resp.message(2, schema_item)
        value = _Message()  # ResponseValue
        value.message(1, resp)
        responses.message(1, _named(code, value))
    msg.message(9, responses)
    msg.strings(10, node.get("schemes"))
    msg.boolean(11, node.get("deprecated"))
    _extensions(msg, 13, node)
    return msg


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def encode_openapi_v2(document: dict) -> bytes:
    """The gnostic `openapi.v2.Document` protobuf of a swagger 2.0 JSON document."""
    doc = _Message()
    doc.string(1, document.get("swagger"))
    info = document.get("info") or {}
    info_msg = _Message()
    info_msg.string(1, info.get("title"))
    info_msg.string(2, info.get("version"))
    info_msg.string(3, info.get("description"))
    doc.message(2, info_msg)
    doc.string(3, document.get("host"))
    doc.string(4, document.get("basePath"))
    doc.strings(5, document.get("schemes"))
    doc.strings(6, document.get("consumes"))
    doc.strings(7, document.get("produces"))
    paths = _Message()
    for path, item in (document.get("paths") or {}).items():
        path_item = _Message()
        for method, number in _METHODS.items():
            if isinstance(item.get(method), dict):
                path_item.message(number, _operation(item[method]))
        for param in item.get("parameters") or []:
            path_item.message(9, _parameter(param))
        _extensions(path_item, 10, item)
        paths.message(2, _named(path, path_item))
    doc.message(8, paths)
    definitions = _Message()
    for name, schema in (document.get("definitions") or {}).items():
        definitions.message(1, _named(name, _schema(schema)))
    doc.message(9, definitions)
    for requirement in document.get("security") or []:
        req = _Message()
        for name, scopes in requirement.items():
            array = _Message()
            array.strings(1, scopes)
            req.message(1, _named(name, array))
        doc.message(12, req)
    security_definitions = _Message()
    for name, scheme in (document.get("securityDefinitions") or {}).items():
        if scheme.get("type") != "apiKey":
            continue
        api_key = _Message()
        api_key.string(1, "apiKey")
        api_key.string(2, scheme.get("name"))
        api_key.string(3, scheme.get("in"))
        api_key.string(4, scheme.get("description"))
        item = _Message()
        item.message(2, api_key)
        security_definitions.message(1, _named(name, item))
    doc.message(13, security_definitions)
    _extensions(doc, 16, document)
    return doc.encode()
