"""The three PATCH flavours of the Kubernetes API: JSON patch, merge patch, strategic merge.

* JSON patch (RFC 6902, `application/json-patch+json`) as the API server applies it (the
  evanphx/json-patch v4 behaviour): add/remove/replace/move/copy/test, `-` appends, negative
  array indices count from the end, `replace` and `remove` of a missing member fail. At most
  10000 operations (413 beyond, as upstream), and `copy` operations may add at most 3 MiB in
  all (upstream's accumulated copy size limit, JSONPatchMaxCopyBytes: the size of each copied
  value as compact JSON, summed; 422 beyond) — without it, a 2 KB patch of copies that each
  double a list would build gigabytes.
* JSON merge patch (RFC 7386, `application/merge-patch+json`): objects merge recursively,
  null deletes, anything else replaces.
* Strategic merge patch (`application/strategic-merge-patch+json`), what kubectl apply, set
  image, rollout restart and Helm upgrades send. Like a merge patch, except that a list whose
  schema says `x-kubernetes-patch-strategy: merge` is merged element by element — maps by
  their `x-kubernetes-patch-merge-key`, scalars as a set — and that the patch can carry
  directives: `$patch: replace|delete` (on a map or as a list element), `$retainKeys`,
  `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`. The result keeps the
  order kubectl asked for: `$setElementOrder` first, then the patch's own order, with the
  items only the server had slotted in by their old relative positions (upstream's
  apimachinery strategicpatch, applied with MergeParallelList and IgnoreUnmatchedNulls).

Inputs are never mutated; results are new objects. Bad patches raise `PatchError` with a
message meant for the user (the API server turns it into a 422 or 400 Status), and so does a
result nested deeper than `k3py.api.bounds.MAX_NESTING_DEPTH` (a patch can nest deeper than its
own body, one `add` at a time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from k3py.api import schemas
from k3py.api.bounds import MAX_NESTING_DEPTH, BoundsError, check_bounds

MAX_JSON_PATCH_OPERATIONS = 10000  # the API server's limit (maxJSONPatchOperations)
MAX_JSON_PATCH_COPY_BYTES = 3 * 1024 * 1024  # the API server's JSONPatchMaxCopyBytes

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"
SET_ELEMENT_ORDER = "$setElementOrder/"


class PatchError(ValueError):
    """A patch that cannot be applied; `code` is the HTTP status the server should answer."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (much cheaper than copy.deepcopy: no memo, no dispatch).

    The patch functions copy their input once and then change that copy in place."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


# --- JSON patch -----------------------------------------------------------------------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"path must be a string, not {json.dumps(path)}", 400)
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer "{path}" must start with "/"', 400)
    return [_unescape(t) for t in path[1:].split("/")]


def _index(token: str, length: int, path: str, allow_end: bool) -> int:
    """An array index from a pointer token; negative indices count from the end."""
    if token == "-" and allow_end:
        return length
    try:
        idx = int(token)
    except ValueError:
        raise PatchError(f"invalid array index {token!r} in path {path}") from None
    if idx < 0:
        # As evanphx/json-patch v4: an add counts from the end of the grown array.
        span = length + 1 if allow_end else length
        if idx < -span:
            raise PatchError(f"unable to access invalid index: {idx} (path {path})")
        idx += span
    limit = length if allow_end else length - 1
    if idx > limit:
        raise PatchError(f"unable to access invalid index: {idx} (path {path})")
    return idx


def _container(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    """The object or array holding the last token of a path."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), path, allow_end=False)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
        if not isinstance(node, dict | list):
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
    return node


def _get_at(doc: Any, path: str, op: str, missing_ok: bool = False) -> Any:
    """The value at `path`; a missing object member is an error unless `missing_ok` (then
    null: the server's json-patch copies a missing member as null)."""
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _container(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            if missing_ok:
                return None
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
        return parent[last]
    return parent[_index(last, len(parent), path, allow_end=False)]


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _container(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    else:
        parent.insert(_index(last, len(parent), path, allow_end=True), value)
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError(f"{op} operation does not apply: cannot remove the whole document")
    parent = _container(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
        return doc, parent.pop(last)
    return doc, parent.pop(_index(last, len(parent), path, allow_end=False))


def _replace(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _container(doc, tokens, "replace", path)
    last = tokens[-1]
    if isinstance(parent, dict):
        # The API server's json-patch (evanphx v4) replaces a missing member by adding it.
        parent[last] = value
    else:
        parent[_index(last, len(parent), path, allow_end=False)] = value
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it (1 == 1.0, but True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (what upstream counts against the copy limit)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:  # nested past orjson's limit: far past ours anyway
        raise _too_deep() from None


def _apply_json_patch(doc: dict, ops: list) -> dict:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a JSON array of operations", 400)
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(ops)}",
            413,
        )
    copied_bytes = 0
    result: Any = _json_copy(doc)
    for n, operation in enumerate(ops):
        if not isinstance(operation, dict):
            raise PatchError(f"operation {n} of the JSON patch is not an object", 400)
        op = operation.get("op")
        path = operation.get("path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation at {path} is missing its value", 400)
        value = _json_copy(operation.get("value"))
        if op == "add":
            result = _add(result, path, value)
        elif op == "remove":
            result, _ = _remove(result, path)
        elif op == "replace":
            result = _replace(result, path, value)
        elif op == "move":
            source = operation.get("from")
            if source != path:
                if isinstance(source, str) and isinstance(path, str) and path.startswith(source + "/"):
                    raise PatchError(f"move operation cannot move {source} into its own child")
                result, moved = _remove(result, source, "move")
                result = _add(result, path, moved, "move")
        elif op == "copy":
            source = _get_at(result, operation.get("from"), "copy", missing_ok=True)
            # Measured before copying, so a runaway chain stops at the limit, not after it.
            copied_bytes += _json_size(source)
            if copied_bytes > MAX_JSON_PATCH_COPY_BYTES:
                raise PatchError(
                    "Unable to complete the copy, the accumulated size increase of copy is "
                    f"{copied_bytes}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}"
                )
            result = _add(result, path, _json_copy(source), "copy")
        elif op == "test":
            try:
                current = _get_at(result, path, "test")
            except PatchError:
                current = None
                if value is not None:
                    raise PatchError(f"testing value {path} failed: test failed") from None
            if not _json_equal(current, value):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}", 400)
    if not isinstance(result, dict):
        raise PatchError("the JSON patch turned the object into something that is not an object")
    return result


# --- merge patch ----------------------------------------------------------------------------


def _merge(target: Any, patch: Any) -> Any:
    """Merge `patch` into `target`, which the caller owns (changed in place where possible)."""
    if not isinstance(patch, dict):
        return _json_copy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _apply_merge_patch(doc: dict, patch: dict) -> dict:
    if not isinstance(patch, dict):
        raise PatchError("a merge patch for an object must be a JSON object", 400)
    return _merge(_json_copy(doc), patch)


# --- strategic merge patch ------------------------------------------------------------------


@dataclass(frozen=True)
class FieldPatchMeta:
    """How one field merges: its strategies ("merge", "replace", "retainKeys") and merge key."""

    strategies: tuple[str, ...] = ()
    merge_key: str = ""
    list_type: str = ""
    list_map_keys: tuple[str, ...] = ()

    @property
    def strategy(self) -> str:
        """"merge" or "replace" (retainKeys alone behaves as the default, replace for lists)."""
        if "merge" in self.strategies:
            return "merge"
        if "replace" in self.strategies:
            return "replace"
        return ""


class PatchSchema:
    """The part of an OpenAPI schema strategic merge patch needs, for one object type.

    `field(name)` gives a field's merge metadata and the PatchSchema of its value (of its
    elements, for lists). Fields the schema does not know merge like a merge patch.
    """

    def __init__(self, node: dict | None) -> None:
        self._node = schemas.resolve(node) or {}
        self._fields: dict[str, tuple[PatchSchema, FieldPatchMeta]] = {}

    def field(self, name: str) -> tuple[PatchSchema, FieldPatchMeta]:
        found = self._fields.get(name)
        if found is None:
            found = self._fields[name] = self._lookup(name)
        return found

    def _lookup(self, name: str) -> tuple[PatchSchema, FieldPatchMeta]:
        props = self._node.get("properties")
        prop: Any = props.get(name) if isinstance(props, dict) else None
        if prop is None:
            additional = self._node.get("additionalProperties")
            prop = additional if isinstance(additional, dict) else None
        if not isinstance(prop, dict):
            return PatchSchema(None), FieldPatchMeta()
        strategy = prop.get("x-kubernetes-patch-strategy", "")
        meta = FieldPatchMeta(
            strategies=tuple(s for s in str(strategy).split(",") if s),
            merge_key=str(prop.get("x-kubernetes-patch-merge-key", "")),
            list_type=str(prop.get("x-kubernetes-list-type", "")),
            list_map_keys=tuple(prop.get("x-kubernetes-list-map-keys", ())),
        )
        value = schemas.resolve(prop) or {}
        if value.get("type") == "array" and isinstance(value.get("items"), dict):
            return PatchSchema(value["items"]), meta
        return PatchSchema(value), meta


def patch_schema_for(group: str, version: str, kind: str) -> PatchSchema | None:
    """The strategic-merge schema of a built-in kind; None for kinds without one (CRDs)."""
    name = schemas.definition_name(group, version, kind)
    if name is None:
        return None
    return PatchSchema(schemas.definitions()[name])


def _is_directive_key(key: str) -> bool:
    return key in (DIRECTIVE, RETAIN_KEYS) or key.startswith(
        (DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)
    )


def _merge_key_value(item: Any, merge_key: str, field: str) -> Any:
    if not isinstance(item, dict) or merge_key not in item:
        raise PatchError(
            f"map: {json.dumps(item)} does not contain declared merge key: {merge_key} "
            f"(in {field})"
        )
    return item[merge_key]


def _canon(value: Any) -> str:
    """A hashable identity for a JSON value, equal for values JSON considers equal (1 == 1.0)."""
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bool) or value is None:
        return f"c{value}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | float):
        return f"n{value!r}"
    return "j" + json.dumps(value, sort_keys=True, separators=(",", ":"))


def _identity(item: Any, merge_key: str) -> str | None:
    """What list items are matched by: the merge key's value for maps, the value for scalars.
    Lists are matched with dictionaries of these, so merging stays linear in their length."""
    if merge_key:
        if isinstance(item, dict) and merge_key in item:
            return _canon(item[merge_key])
        return None
    return _canon(item)


def _positions(items: list, merge_key: str) -> dict[str, int]:
    """Identity → index of its first occurrence in `items`."""
    found: dict[str, int] = {}
    for i, item in enumerate(items):
        ident = _identity(item, merge_key)
        if ident is not None and ident not in found:
            found[ident] = i
    return found


def _sort_by(items: list, order: dict[str, int], merge_key: str) -> list:
    """Items found in `order` sorted by it, the rest after them in their own order."""
    known: list[tuple[int, int, Any]] = []
    unknown: list = []
    for n, item in enumerate(items):
        pos = order.get(_identity(item, merge_key) or "")
        if pos is None:
            unknown.append(item)
        else:
            known.append((pos, n, item))
    known.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _pos, _n, item in known] + unknown


def _interleave(server_only: list, patch_items: list, server_order: dict[str, int], merge_key: str) -> list:
    """Slot server-only items among patch items, keeping both relative orders (upstream's
    mergeSortedSlice): a server item goes first when the live list had it earlier."""
    out: list = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        elif j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        else:
            li = server_order.get(_identity(server_only[i], merge_key) or "")
            ri = server_order.get(_identity(patch_items[j], merge_key) or "")
            if li is not None and ri is not None and li < ri:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out


def _order(merged: list, order_by: list, server_order: list, merge_key: str) -> list:
    """Put patch items in `order_by`'s order, server-only items in their live order."""
    wanted = _positions(order_by, merge_key)
    live = _positions(server_order, merge_key)
    patch_items = [x for x in merged if _identity(x, merge_key) in wanted]
    server_only = [x for x in merged if _identity(x, merge_key) not in wanted]
    return _interleave(
        _sort_by(server_only, live, merge_key),
        _sort_by(patch_items, wanted, merge_key),
        live,
        merge_key,
    )


def _element_kind(*lists: list) -> str:
    """"map", "scalar" or "" (empty); lists of lists or mixed lists are refused."""
    kinds = set()
    for items in lists:
        for item in items:
            if isinstance(item, list):
                raise PatchError("strategic merge patch cannot merge lists of lists")
            kinds.add("map" if isinstance(item, dict) else "scalar")
    if len(kinds) > 1:
        raise PatchError("strategic merge patch: list elements are of mismatched types")
    return kinds.pop() if kinds else ""


def _merge_list(
    original: list,
    patch: list,
    schema: PatchSchema,
    merge_key: str,
    delete_list: bool,
    field: str,
) -> list:
    if not original and not patch:
        return []
    kind = _element_kind(original, patch)
    if kind != "map":
        if delete_list:
            doomed = _positions(patch, "")
            return [x for x in original if _identity(x, "") not in doomed]
        merged: list = []
        seen: set[str | None] = set()
        for item in original + patch:
            ident = _identity(item, "")
            if ident not in seen:
                seen.add(ident)
                merged.append(_json_copy(item))
        return _order(merged, patch, original, "")
    if not merge_key:
        raise PatchError(f"cannot merge lists without merge key for {field}")
    # Special elements first: {"$patch": "delete", key: v} and {"$patch": "replace"}.
    plain: list = []
    replace = False
    current = list(original)
    for item in patch:
        directive = item.get(DIRECTIVE)
        if directive is None:
            plain.append(item)
        elif directive == "delete":
            doomed = _canon(_merge_key_value(item, merge_key, field))
            current = [x for x in current if _identity(x, merge_key) != doomed]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"invalid patch type {directive!r} in {json.dumps(item)}")
    if replace:
        return [_merge_map({}, x, schema) for x in plain]
    merged = list(current)
    where = _positions(merged, merge_key)
    for item in plain:
        ident = _canon(_merge_key_value(item, merge_key, field))
        pos = where.get(ident)
        if pos is not None:
            merged[pos] = _merge_map(merged[pos], item, schema)
        else:
            where[ident] = len(merged)
            merged.append(_merge_map({}, item, schema))
    return _order(merged, patch, current, merge_key)


def _merge_value(
    original: Any, patch: Any, schema: PatchSchema, meta: FieldPatchMeta, field: str, delete_list: bool
) -> Any:
    if isinstance(patch, dict) and isinstance(original, dict):
        if meta.strategy == "replace":
            return _strip(patch)
        return _merge_map(original, patch, schema)
    if isinstance(patch, list) and isinstance(original, list):
        if meta.strategy == "merge":
            return _merge_list(original, patch, schema, meta.merge_key, delete_list, field)
        return _strip(patch)
    return _strip(patch) if not isinstance(patch, dict | list) else _fresh(patch, schema, meta, field)


def _fresh(patch: Any, schema: PatchSchema, meta: FieldPatchMeta, field: str) -> Any:
    """A patch value for a field the original lacks (or has with another type)."""
    if isinstance(patch, dict):
        return _merge_map({}, patch, schema) if meta.strategy != "replace" else _strip(patch)
    if isinstance(patch, list) and meta.strategy == "merge":
        return _merge_list([], patch, schema, meta.merge_key, False, field)
    return _strip(patch)


def _strip(value: Any) -> Any:
    """A copy of a patch value without directives or nulls (for values taken as they are)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None and not _is_directive_key(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _check_order(patch_list: list, order: list, merge_key: str, key: str) -> None:
    """The patch list's items must appear in $setElementOrder, in the same relative order."""
    items = [x for x in patch_list if not (isinstance(x, dict) and DIRECTIVE in x)]
    i = 0
    for entry in order:
        if i == len(items):
            break
        if merge_key:
            same = isinstance(entry, dict) and isinstance(items[i], dict) and _json_equal(
                entry.get(merge_key), items[i].get(merge_key)
            )
        else:
            same = _json_equal(entry, items[i])
        if same:
            i += 1
    if i < len(items):
        raise PatchError(
            f"The order in patch list {json.dumps(patch_list)} doesn't match the "
            f"{key} list {json.dumps(order)}"
        )


def _merge_map(original: dict, patch: dict, schema: PatchSchema) -> dict:
    directive = patch.get(DIRECTIVE)
    if directive is not None:
        if directive == "replace":
            return _strip({k: v for k, v in patch.items() if k != DIRECTIVE})
        if directive == "delete":
            return {}
        raise PatchError(f"invalid patch type {directive!r} in {json.dumps(patch)}")
    result = original  # owned by the caller: merged in place
    patch = dict(patch)

    retain = patch.pop(RETAIN_KEYS, None)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys must be a list of field names")
        for key, value in patch.items():
            if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)):
                continue
            if key not in retain:
                raise PatchError(f"field {key!r} is in the patch but not in its $retainKeys list")
        result = {k: v for k, v in result.items() if k in retain}

    # $setElementOrder/<field>: merge that field now and put it in the requested order.
    for key in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        order = patch.pop(key)
        field = key[len(SET_ELEMENT_ORDER) :]
        if not isinstance(order, list):
            raise PatchError(f"{key} must be a list")
        sub, meta = schema.field(field)
        in_original = isinstance(result.get(field), list)
        in_patch = field in patch and isinstance(patch[field], list)
        patch_list = patch.pop(field) if in_patch else []
        if in_patch:
            _check_order(patch_list, order, meta.merge_key, key)
        if in_original and in_patch:
            merged = _merge_value(result[field], patch_list, sub, meta, field, False)
        elif in_original:
            merged = result[field]
        elif in_patch:
            merged = _fresh(patch_list, sub, meta, field)
        else:
            continue
        if isinstance(merged, list):
            original_list = result.get(field) if in_original else []
            merged = _order(merged, order, original_list, meta.merge_key)
        result[field] = merged

    for key, value in patch.items():
        delete_list = key.startswith(DELETE_FROM_PRIMITIVE_LIST)
        if delete_list:
            key = key[len(DELETE_FROM_PRIMITIVE_LIST) :]
            if not isinstance(value, list):
                raise PatchError(f"{DELETE_FROM_PRIMITIVE_LIST}{key} must be a list")
            if isinstance(result.get(key), list):
                sub, meta = schema.field(key)
                result[key] = _merge_list(result[key], value, sub, "", True, key)
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub, meta = schema.field(key)
        if key in result and type(result[key]) is type(value):
            result[key] = _merge_value(result[key], value, sub, meta, key, False)
        else:
            result[key] = _fresh(value, sub, meta, key)
    return result


def _apply_strategic_merge_patch(doc: dict, patch: dict, schema: PatchSchema) -> dict:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", 400)
    return _merge_map(_json_copy(doc) if isinstance(doc, dict) else {}, patch, schema)


# --- the public entry points ----------------------------------------------------------------


def _too_deep() -> PatchError:
    # Real objects nest a few dozen levels; hundreds means a hostile or broken request.
    return PatchError("the patch or the object is nested too deeply", 400)


def _bounded(result: dict) -> dict:
    """The patched object, if it keeps the bounds of a decoded body (422 otherwise)."""
    try:
        check_bounds(result, MAX_NESTING_DEPTH)
    except BoundsError as e:
        raise PatchError(f"the patched object is invalid: {e}") from None
    return result


def apply_json_patch(doc: dict, ops: list) -> dict:
    """Apply an RFC 6902 JSON patch to a copy of `doc`."""
    try:
        return _bounded(_apply_json_patch(doc, ops))
    except RecursionError:
        raise _too_deep() from None


def apply_merge_patch(doc: dict, patch: dict) -> dict:
    """Apply an RFC 7386 JSON merge patch to a copy of `doc`."""
    try:
        return _bounded(_apply_merge_patch(doc, patch))
    except RecursionError:
        raise _too_deep() from None


def apply_strategic_merge_patch(doc: dict, patch: dict, schema: PatchSchema) -> dict:
    """Apply a strategic merge patch to a copy of `doc`, following `schema`'s strategies."""
    try:
        return _bounded(_apply_strategic_merge_patch(doc, patch, schema))
    except RecursionError:
        raise _too_deep() from None
