"""The generated protobuf descriptor of the built-in kinds (`k3py/api/data/proto_schema.json.gz`).

Each message is a list of fields `(number, json_name, type, flags)`: `type` is a scalar name
("string", "int32", "bytes", ...), another message's full proto name, or `map:<key>:<value>`;
`flags` letters say repeated (`r`), map (`m`), Go pointer (`p`), `omitempty` (`o`) and inlined
embedded struct (`i`, JSON name ""). `lists` are messages that only wrap a Go slice type
(`ExtraValue`), `typemeta` those whose Go struct embeds TypeMeta (their JSON has apiVersion and
kind). The file is read once and shared read-only.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
QUANTITY_VALUE = "k8s.io.apimachinery.pkg.api.resource.QuantityValue"
TIME = f"{META}.Time"
MICROTIME = f"{META}.MicroTime"
DURATION = f"{META}.Duration"
FIELDS_V1 = f"{META}.FieldsV1"
INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"

# Messages whose JSON form is not an object of their proto fields.
SPECIAL = frozenset(
    {QUANTITY, QUANTITY_VALUE, TIME, MICROTIME, DURATION, FIELDS_V1, INT_OR_STRING, RAW_EXTENSION}
)

Field = tuple[int, str, str, str]


@dataclass(frozen=True)
class Schema:
    messages: dict[str, list[Field]]
    lists: frozenset[str]
    typemeta: frozenset[str]


@cache
def load() -> Schema:
    raw = resources.files("k3py.api").joinpath("data/proto_schema.json.gz").read_bytes()
    doc = json.loads(gzip.decompress(raw))
    messages = {
        name: [(int(n), str(j), str(t), str(f)) for n, j, t, f in fields]
        for name, fields in doc["messages"].items()
    }
    return Schema(messages, frozenset(doc["lists"]), frozenset(doc.get("typemeta", ())))


def message_for(api_version: str, kind: str) -> str | None:
    """The proto message of a kind: `k8s.io.api.<first label of group>.<version>.<Kind>`,
    or the meta/v1 one (DeleteOptions and friends travel under every group version)."""
    group, _, version = api_version.rpartition("/")
    messages = load().messages
    package = "core" if group == "" else group.split(".", 1)[0]
    for candidate in (f"k8s.io.api.{package}.{version}.{kind}", f"{META}.{kind}"):
        if candidate in messages:
            return candidate
    return None
