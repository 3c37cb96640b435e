#!/usr/bin/env python3
"""Generate k3py/api/data/proto_schema.json.gz: what k3py needs to decode Kubernetes protobuf.

Inputs
  * the `generated.proto` files of kubernetes/api and kubernetes/apimachinery (a copy lives in
    /work/shared/k8s-proto) — field numbers, proto types, repeated/map, message references;
  * optionally the Go sources of the same commits (`types.go` & co. beside each generated.proto),
    which carry what the JSON form needs and the .proto files lack: the JSON name (an embedded
    struct with `json:""` is inlined into its parent, e.g. Volume.volumeSource), whether a
    scalar is a Go pointer (present-with-zero must still appear: `replicas: 0`), and whether the
    field is `omitempty` (gogo marshals every non-pointer field, so `""`/`0`/`false` on the wire
    are omitted in JSON exactly when the Go field is omitempty). Without Go sources every
    present field is kept, which is correct but noisier.

Both parsers are small and purpose-made: generated.proto files are machine written (one field
per line, no nested messages, no enums), and Go struct fields are one line each with tags.

Output (gzip'd JSON):
  {"messages": {"<full.proto.Name>": [[number, json_name, type, flags], ...]},
   "lists": ["<full.proto.Name>", ...],        # wrappers of Go slice types (ExtraValue, Verbs)
   "typemeta": ["<full.proto.Name>", ...]}     # Go structs embedding TypeMeta (apiVersion, kind)
type is a scalar name ("string", "int32", "bytes", ...), a message's full name, or for maps
"map:<key type>:<value type>". flags is a string of letters: r repeated, p Go pointer, o
omitempty, i inlined into the parent (json name ""), m map.

Usage:
  git clone https://github.com/kubernetes/api  (commit 10b39a39bcee) → API_SRC
  git clone https://github.com/kubernetes/apimachinery (commit eed236ceee2c) → MACHINERY_SRC
  scripts/gen-proto-schema.py --proto-root /work/shared/k8s-proto \
      --go-api API_SRC --go-apimachinery MACHINERY_SRC
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

SCALARS = {
    "string",
    "bytes",
    "bool",
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "fixed32",
    "fixed64",
    "sfixed32",
    "sfixed64",
    "double",
    "float",
}

_PACKAGE_RE = re.compile(r"^package\s+([\w.]+)\s*;", re.M)
_MESSAGE_RE = re.compile(r"^message\s+(\w+)\s*\{")
_FIELD_RE = re.compile(r"^\s*(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
_MAP_RE = re.compile(r"^\s*map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def resolve(type_name: str, package: str) -> str:
    if type_name in SCALARS:
        return type_name
    if type_name.startswith("."):
        return type_name[1:]
    return f"{package}.{type_name}"


def parse_proto(path: Path) -> tuple[str, dict[str, list[tuple[int, str, str, bool, bool]]]]:
    """Messages of one generated.proto: name → [(number, proto name, type, repeated, map)]."""
    text = strip_comments(path.read_text())
    m = _PACKAGE_RE.search(text)
    if not m:
        raise SystemExit(f"{path}: no package statement")
    package = m.group(1)
    messages: dict[str, list[tuple[int, str, str, bool, bool]]] = {}
    current: list[tuple[int, str, str, bool, bool]] | None = None
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        mm = _MESSAGE_RE.match(stripped)
        if mm and depth == 0:
            current = []
            messages[f"{package}.{mm.group(1)}"] = current
            depth = 1
            if stripped.endswith("}"):
                depth = 0
            continue
        if depth and stripped == "}":
            depth -= 1
            continue
        if current is None or depth != 1:
            continue
        fm = _FIELD_RE.match(line)
        if fm:
            label, ftype, name, num = fm.groups()
            current.append((int(num), name, resolve(ftype, package), label == "repeated", False))
            continue
        mp = _MAP_RE.match(line)
        if mp:
            ktype, vtype, name, num = mp.groups()
            maptype = f"map:{resolve(ktype, package)}:{resolve(vtype, package)}"
            current.append((int(num), name, maptype, False, True))
            continue
        if stripped.startswith(("option", "reserved", "extensions")):
            continue
        raise SystemExit(f"{path}: cannot parse line: {line!r}")
    return package, messages


# ----------------------------------------------------------------------------- Go struct tags

_GO_STRUCT_RE = re.compile(r"^type\s+(\w+)\s+struct\s*\{\s*$")
_GO_SLICE_RE = re.compile(r"^type\s+(\w+)\s+\[\](\w+)\s*$")
_GO_FIELD_RE = re.compile(r"^\t(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
_TAG_RE = re.compile(r'(\w+):"([^"]*)"')


class GoField:
    def __init__(self, json_name: str, omitempty: bool, pointer: bool) -> None:
        self.json_name = json_name
        self.omitempty = omitempty
        self.pointer = pointer


def parse_go_dir(directory: Path) -> tuple[dict[str, dict[int, GoField]], set[str], set[str]]:
    """Go structs of one package: struct name → proto field number → JSON facts; slice types;
    structs that embed TypeMeta (their JSON carries apiVersion and kind)."""
    structs: dict[str, dict[int, GoField]] = {}
    slices: set[str] = set()
    typed: set[str] = set()
    current_name = ""
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith(("zz_", "generated")):
            continue
        current: dict[int, GoField] | None = None
        for line in path.read_text().splitlines():
            sm = _GO_STRUCT_RE.match(line)
            if sm:
                current_name = sm.group(1)
                current = structs.setdefault(current_name, {})
                continue
            sl = _GO_SLICE_RE.match(line)
            if sl and sl.group(2) != "byte":
                slices.add(sl.group(1))
                continue
            if current is None:
                continue
            if line.startswith("}"):
                current = None
                continue
            fm = _GO_FIELD_RE.match(line)
            if not fm:
                continue
            name, gotype, tagtext = fm.groups()
            tags = dict(_TAG_RE.findall(tagtext))
            if name is None and gotype.endswith("TypeMeta"):
                typed.add(current_name)
            proto = tags.get("protobuf")
            if not proto or proto == "-":
                continue
            parts = proto.split(",")
            if len(parts) < 2 or not parts[1].isdigit():
                continue
            json_parts = tags.get("json", "").split(",")
            json_name = json_parts[0]
            current[int(parts[1])] = GoField(
                json_name=json_name,
                omitempty="omitempty" in json_parts[1:],
                pointer=gotype.startswith("*"),
            )
    return structs, slices, typed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--proto-root", type=Path, default=Path("/work/shared/k8s-proto"))
    parser.add_argument("--go-api", type=Path, help="checkout of kubernetes/api")
    parser.add_argument("--go-apimachinery", type=Path, help="checkout of kubernetes/apimachinery")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "k3py/api/data/proto_schema.json.gz",
    )
    args = parser.parse_args()

    messages: dict[str, list[list[object]]] = {}
    lists: list[str] = []
    typemeta: list[str] = []
    go_missing = 0
    for proto in sorted(args.proto_root.rglob("generated.proto")):
        _package, parsed = parse_proto(proto)
        rel = proto.parent.relative_to(args.proto_root / "k8s.io")
        go_dir: Path | None = None
        if rel.parts[0] == "api" and args.go_api:
            go_dir = args.go_api.joinpath(*rel.parts[1:])
        elif rel.parts[0] == "apimachinery" and args.go_apimachinery:
            go_dir = args.go_apimachinery.joinpath(*rel.parts[1:])
        structs, slices, typed = (
            parse_go_dir(go_dir) if go_dir and go_dir.is_dir() else ({}, set(), set())
        )
        for full_name, fields in parsed.items():
            short = full_name.rsplit(".", 1)[1]
            if short in typed:
                typemeta.append(full_name)
            if short in slices and [f[1] for f in fields] == ["items"]:
                lists.append(full_name)
            go_fields = structs.get(short)
            out: list[list[object]] = []
            for number, name, ftype, repeated, is_map in fields:
                flags = ("r" if repeated else "") + ("m" if is_map else "")
                json_name = name
                if go_fields is not None and number in go_fields:
                    gf = go_fields[number]
                    json_name = gf.json_name
                    if json_name == "":
                        flags += "i"
                    flags += ("p" if gf.pointer else "") + ("o" if gf.omitempty else "")
                else:
                    go_missing += 1
                    flags += "p"  # unknown Go shape: keep whatever is present
                out.append([number, json_name, ftype, flags])
            messages[full_name] = out

    # Every referenced message must be defined, or decoding would silently lose data.
    for full_name, fields in messages.items():
        for _n, _j, ftype, _f in fields:
            for ref in str(ftype).split(":"):
                if ref not in ("map",) and ref not in SCALARS and ref not in messages:
                    raise SystemExit(f"{full_name}: unknown type {ref}")

    schema = {"messages": messages, "lists": sorted(lists), "typemeta": sorted(typemeta)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(schema, separators=(",", ":"), sort_keys=True).encode()
    args.out.write_bytes(gzip.compress(data, mtime=0))
    print(
        f"{args.out}: {len(messages)} messages, {len(lists)} list wrappers, "
        f"{len(typemeta)} with TypeMeta, "
        f"{go_missing} fields without Go facts, {len(data)} bytes JSON",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
