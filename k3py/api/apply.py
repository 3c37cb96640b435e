"""Server-side apply: field ownership (managedFields) and the apply merge.

`kubectl apply --server-side` sends the whole intended configuration of an object as an
apply patch, with a field manager name. The server remembers, per manager, which fields that
manager set (`metadata.managedFields`, in the FieldsV1 trie format), and on each apply:

* merges the applied configuration into the live object — maps field by field, lists
  keyed by their `x-kubernetes-list-map-keys` item by item, `set` lists as sets, other lists
  (atomic) whole;
* removes the fields this manager applied last time but no longer applies, unless another
  manager also owns them;
* refuses (409 Conflict) to change a field another manager owns to a different value, unless
  the apply is forced — then the field changes hands.

Ordinary writes (create, update, the other patch types) go through `track_update`: the fields
they changed become the writing manager's ("Update" operation) and leave other managers.

This follows the behaviour of upstream's structured-merge-diff in the cases clients meet
(re-apply, shrink, conflicts with `kubectl scale` or another applier, force, list order),
simplified: ownership is tracked at leaf fields and list items, and objects that never went
through apply have no "before-first-apply" owner.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import orjson

from k3py.api import schemas
from k3py.api.patch import PatchError

Path = tuple[str, ...]

# Fields that belong to the system, never to a manager.
_IGNORED_TOP = {"apiVersion", "kind", "status"}


def _tracked(key: str, subresource: str) -> bool:
    """Whether a top-level field is written through this endpoint: the status subresource
    writes only status, the main resource everything but status."""
    if subresource == "status":
        return key == "status"
    return key not in _IGNORED_TOP
_IGNORED_META = {
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
}  # fmt: skip


def describe_manager(entry: dict) -> str:
    """A manager as upstream's conflict messages name it: "kubectl-scale" using apps/v1 at T
    for an Update manager, just "name" for an Apply manager."""
    text = json.dumps(str(entry.get("manager", "")))
    if entry.get("subresource"):
        text += f" with subresource {json.dumps(str(entry['subresource']))}"
    if entry.get("operation") == "Update":
        text += f" using {entry.get('apiVersion', '')}"
        if entry.get("time"):
            text += f" at {entry['time']}"
    return text


class ApplyConflict(PatchError):
    """An apply that would change fields other managers own (409, reason Conflict)."""

    def __init__(self, conflicts: list[tuple[dict, str]]) -> None:
        # conflicts: (the other manager's managedFields entry, field path like ".spec.replicas")
        self.conflicts = conflicts
        super().__init__(self._message(), 409)

    def _message(self) -> str:
        if len(self.conflicts) == 1:
            entry, path = self.conflicts[0]
            return f"Apply failed with 1 conflict: conflict with {describe_manager(entry)}: {path}"
        by_manager: dict[str, list[str]] = {}
        for entry, path in self.conflicts:
            by_manager.setdefault(describe_manager(entry), []).append(path)
        lines: list[str] = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {path}" for path in by_manager[manager])
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)

    def causes(self) -> list[dict]:
        """details.causes of the Status, as upstream reports them."""
        return [
            {"type": "FieldManagerConflict", "message": f"conflict with {describe_manager(e)}", "field": p}
            for e, p in self.conflicts
        ]


# --- schema navigation ----------------------------------------------------------------------


class _Shape:
    """What a schema says about one node: struct/map fields, list kind and keys, atomicity."""

    def __init__(self, node: dict | None) -> None:
        self.node = schemas.resolve(node) or {}
        self._children: dict[str, _Shape] = {}  # memoized: list items share their shape
        self._items: _Shape | None = None

    def child(self, name: str) -> _Shape:
        found = self._children.get(name)
        if found is None:
            props = self.node.get("properties")
            if isinstance(props, dict) and name in props:
                found = _Shape(props[name])
            else:
                additional = self.node.get("additionalProperties")
                found = _Shape(additional if isinstance(additional, dict) else None)
            self._children[name] = found
        return found

    def items(self) -> _Shape:
        if self._items is None:
            items = self.node.get("items")
            self._items = _Shape(items if isinstance(items, dict) else None)
        return self._items

    @property
    def list_type(self) -> str:
        return str(self.node.get("x-kubernetes-list-type") or "atomic")

    @property
    def keys(self) -> list[str]:
        return [str(k) for k in self.node.get("x-kubernetes-list-map-keys") or []]

    @property
    def atomic_map(self) -> bool:
        return self.node.get("x-kubernetes-map-type") == "atomic"


@cache
def _shape_for(group: str, version: str, kind: str) -> _Shape:
    name = schemas.definition_name(group, version, kind)
    return _Shape(schemas.definitions().get(name) if name else None)


def _compact_json(value: Any) -> str:
    """Compact JSON with sorted keys, exactly as ``json.dumps(..., sort_keys=True,
    separators=(",", ":"))`` writes it. orjson writes the same text for ASCII strings,
    integers, booleans and null (the usual list-map keys: names, ports, protocols), several
    times faster; floats (repr differs) and non-ASCII or DEL characters (json escapes them)
    take json."""
    if isinstance(value, dict):
        plain = all(type(v) in _ORJSON_SAME for v in value.values())
    else:
        plain = type(value) in _ORJSON_SAME
    if plain:
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer beyond 64 bits
            text = b"\xff"
        if text.isascii() and b"\x7f" not in text:  # json escapes DEL, orjson does not
            return text.decode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_ORJSON_SAME = (str, int, bool, type(None))


def _key_element(item: dict, keys: list[str]) -> str:
    return "k:" + _compact_json({k: item.get(k) for k in keys})


def _value_element(value: Any) -> str:
    return "v:" + _compact_json(value)


# --- field sets -----------------------------------------------------------------------------


def _collect(value: Any, shape: _Shape, path: Path, out: set[Path]) -> None:
    if isinstance(value, dict) and value and not shape.atomic_map:
        for key, sub in value.items():
            _collect(sub, shape.child(key), (*path, f"f:{key}"), out)
        return
    if isinstance(value, list) and shape.list_type == "map" and shape.keys:
        item_shape = shape.items()
        for item in value:
            if not isinstance(item, dict):
                out.add(path)
                return
            item_path = (*path, _key_element(item, shape.keys))
            out.add(item_path)
            _collect(item, item_shape, item_path, out)
        return
    if isinstance(value, list) and shape.list_type == "set":
        for item in value:
            out.add((*path, _value_element(item)))
        if not value:
            out.add(path)
        return
    out.add(path)


def field_set(obj: dict, shape: _Shape, subresource: str = "") -> set[Path]:
    """The fields an object (or applied configuration) sets, as paths."""
    out: set[Path] = set()
    for key, value in obj.items():
        if not _tracked(key, subresource):
            continue
        if key == "metadata" and isinstance(value, dict):
            for mkey, mvalue in value.items():
                if mkey not in _IGNORED_META:
                    _collect(mvalue, shape.child("metadata").child(mkey), ("f:metadata", f"f:{mkey}"), out)
            continue
        _collect(value, shape.child(key), (f"f:{key}",), out)
    return out


def _diff(value: Any, old: Any, shape: _Shape, path: Path, out: set[Path], missing: bool) -> None:
    """The paths of `value`'s fields whose value in `old` differs; absent ones too when
    `missing`. Walks both at once (linear, where looking each path up would be quadratic).
    An equal sub-tree has no differing field (the leaves compare with the same ``!=``), so it
    is not walked: most of a status write's conditions and container statuses are unchanged."""
    if value is old or (old is not _MISSING and value == old):
        return
    if isinstance(value, dict) and value and not shape.atomic_map:
        old_map = old if isinstance(old, dict) else {}
        for key, sub in value.items():
            _diff(sub, old_map.get(key, _MISSING), shape.child(key), (*path, f"f:{key}"), out, missing)
        return
    if isinstance(value, list) and shape.list_type == "map" and shape.keys and all(
        isinstance(x, dict) for x in value
    ):
        old_items = {
            _key_element(x, shape.keys): x for x in (old if isinstance(old, list) else []) if isinstance(x, dict)
        }
        for item in value:
            element = _key_element(item, shape.keys)
            before = old_items.get(element, _MISSING)
            if (before is _MISSING and missing) or (before is not _MISSING and before != item and missing):
                out.add((*path, element))  # the item itself: changed hands only with its fields
            _diff(item, before, shape.items(), (*path, element), out, missing)
        return
    if isinstance(value, list) and shape.list_type == "set":
        if missing:
            present = old if isinstance(old, list) else []
            out.update((*path, _value_element(x)) for x in value if x not in present)
        return
    if old is _MISSING:
        if missing:
            out.add(path)
    elif old != value:
        out.add(path)


def changed_fields(
    new: dict, old: dict | None, shape: _Shape, missing: bool = True, subresource: str = ""
) -> set[Path]:
    """The fields `new` sets with a value other than `old`'s (and, when `missing`, those `old`
    lacks). With `missing` false: the fields both set, to different values."""
    out: set[Path] = set()
    old_obj = old if isinstance(old, dict) else {}
    for key, value in new.items():
        if not _tracked(key, subresource):
            continue
        if key == "metadata" and isinstance(value, dict):
            old_meta = old_obj.get("metadata") if isinstance(old_obj.get("metadata"), dict) else {}
            for mkey, mvalue in value.items():
                if mkey not in _IGNORED_META:
                    _diff(mvalue, old_meta.get(mkey, _MISSING), shape.child("metadata").child(mkey),
                          ("f:metadata", f"f:{mkey}"), out, missing)
            continue
        _diff(value, old_obj.get(key, _MISSING), shape.child(key), (f"f:{key}",), out, missing)
    return out


def to_fields_v1(paths: set[Path]) -> dict:
    """A set of paths as a FieldsV1 trie ({"f:spec": {"f:replicas": {}}, ...})."""
    root: dict = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    # a path that is also the prefix of others is marked with "."
    for path in paths:
        node = root
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return root


def from_fields_v1(trie: Any) -> set[Path]:
    """The paths of a FieldsV1 trie."""
    out: set[Path] = set()

    def walk(node: Any, path: Path) -> None:
        if not isinstance(node, dict):
            return
        for key, sub in node.items():
            if key == ".":
                out.add(path)
            elif isinstance(sub, dict) and sub:
                walk(sub, (*path, key))
            else:
                out.add((*path, key))

    walk(trie, ())
    return out


def path_string(path: Path) -> str:
    """A path the way conflict messages print it: .spec.containers[name="app"].image"""
    text = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            text += f".{rest}"
        elif kind == "k":
            try:
                keys = json.loads(rest)
                text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
            except ValueError:
                text += f"[{rest}]"
        elif kind == "v":
            text += f"[={rest}]"
    return text


# --- values at paths ------------------------------------------------------------------------


_MISSING = object()


def _step(node: Any, element: str) -> Any:
    kind, _, rest = element.partition(":")
    if kind == "f":
        return node.get(rest, _MISSING) if isinstance(node, dict) else _MISSING
    if kind == "k" and isinstance(node, list):
        want = json.loads(rest)
        for item in node:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in want.items()):
                return item
        return _MISSING
    if kind == "v" and isinstance(node, list):
        value = json.loads(rest)
        return value if value in node else _MISSING
    return _MISSING


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for element in path:
        node = _step(node, element)
        if node is _MISSING:
            return _MISSING
    return node


def _is_key_field(path: Path) -> bool:
    """A list item's key field (the item goes as a whole, or keeps its key)."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    try:
        return path[-1][2:] in json.loads(path[-2][2:])
    except ValueError:
        return False


def _remove_at(obj: Any, path: Path) -> None:
    """Remove what `path` points at; a map or list this empties goes too (its owner only
    owned what was in it)."""
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    if parent is _MISSING:
        return
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        if rest not in parent:
            return
        parent.pop(rest)
    elif kind in ("k", "v") and isinstance(parent, list):
        target = _step(parent, path[-1])
        if target is _MISSING:
            return
        parent[:] = [x for x in parent if x is not target and not (kind == "v" and x == target)]
    else:
        return
    if not parent and len(path) > 1 and path[-2].startswith("f:"):
        _remove_at(obj, path[:-1])


# --- merge ----------------------------------------------------------------------------------


def _merge_ordered(live: list, applied: list, identity: Any, merge_item: Any) -> list:
    """Merge two keyed lists the way structured-merge-diff orders them: items both lists have
    come in the applied order, items only the live list has keep their place among them, items
    only the applied list has are placed where the applied order puts them."""
    live_ids = [identity(x) for x in live]
    applied_ids = [identity(x) for x in applied]
    live_by_id = dict(zip(live_ids, live, strict=True))
    applied_by_id = dict(zip(applied_ids, applied, strict=True))
    shared = [i for i in applied_ids if i in live_by_id]
    next_shared = 0  # index into `shared` of the shared item due next
    done: set = set()
    out: list = []
    li = ri = 0
    while li < len(live) or ri < len(applied):
        if li < len(live) and ri < len(applied):
            ident = live_ids[li]
            if ident == applied_ids[ri]:
                done.add(ident)
                out.append(merge_item(live_by_id[ident], applied_by_id[ident]))
                li += 1
                ri += 1
                next_shared += 1
                continue
            due = shared[next_shared] if next_shared < len(shared) else None
            if ident in applied_by_id and due is not None and due != ident:
                li += 1  # shared, but another shared item comes first: it is placed later
                continue
        if li < len(live):
            ident = live_ids[li]
            if ident not in applied_by_id:
                out.append(live[li])
                li += 1
                continue
            if ident in done:
                li += 1
                continue
        if ri < len(applied):
            ident = applied_ids[ri]
            done.add(ident)
            out.append(merge_item(live_by_id.get(ident, _MISSING), applied_by_id[ident]))
            ri += 1
            if next_shared < len(shared) and shared[next_shared] == ident:
                next_shared += 1
    return out


def _merge(live: Any, applied: Any, shape: _Shape) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict) and applied and not shape.atomic_map:
        out = dict(live)
        for key, value in applied.items():
            out[key] = _merge(live.get(key), value, shape.child(key))
        return out
    if isinstance(live, list) and isinstance(applied, list):
        if shape.list_type == "map" and shape.keys and all(isinstance(x, dict) for x in live + applied):
            items = shape.items()
            return _merge_ordered(
                live,
                applied,
                lambda x: _key_element(x, shape.keys),
                lambda old, new: _merge(old, new, items) if old is not _MISSING else _copy(new),
            )
        if shape.list_type == "set":
            return _merge_ordered(
                _dedupe(live),
                _dedupe(applied),
                _value_element,
                lambda _old, new: _copy(new),
            )
    return _copy(applied)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _dedupe(values: list) -> list:
    seen: set[str] = set()
    out = []
    for value in values:
        element = _value_element(value)
        if element not in seen:
            seen.add(element)
            out.append(value)
    return out


# --- managedFields --------------------------------------------------------------------------


def _entries(obj: dict | None) -> list[dict]:
    meta = (obj or {}).get("metadata") or {}
    return [e for e in meta.get("managedFields") or [] if isinstance(e, dict)]


def _entry(manager: str, operation: str, api_version: str, now: str, paths: set[Path], sub: str) -> dict:
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if sub:
        entry["subresource"] = sub
    return entry


def _same_owner(entry: dict, manager: str, operation: str, sub: str) -> bool:
    return (
        entry.get("manager") == manager
        and entry.get("operation") == operation
        and (entry.get("subresource") or "") == sub
    )


def server_side_apply(
    live: dict | None,
    applied: dict,
    manager: str,
    *,
    group: str,
    version: str,
    kind: str,
    now: str,
    force: bool = False,
    subresource: str = "",
    schema: dict | None = None,
) -> dict:
    """The object after `manager` applies `applied` to `live` (None: the object is new).

    Raises ApplyConflict (409) when other managers own fields the apply would change and
    `force` is false. The result carries the updated metadata.managedFields. `schema` is a
    custom resource's schema (its list types and keys); built-in kinds need none."""
    try:
        return _server_side_apply(
            live, applied, manager, group=group, version=version, kind=kind, now=now,
            force=force, subresource=subresource, schema=schema,
        )
    except RecursionError:
        raise PatchError("the apply configuration or the object is nested too deeply", 400) from None


def _server_side_apply(
    live: dict | None,
    applied: dict,
    manager: str,
    *,
    group: str,
    version: str,
    kind: str,
    now: str,
    force: bool = False,
    subresource: str = "",
    schema: dict | None = None,
) -> dict:
    if not isinstance(applied, dict):
        raise PatchError("an apply configuration must be an object", 400)
    if not manager:
        raise PatchError("fieldManager is required for apply requests", 400)
    shape = _Shape(schema) if schema is not None else _shape_for(group, version, kind)
    api_version = f"{group}/{version}" if group else version
    base = json.loads(json.dumps(live)) if live else {}
    entries = _entries(base)
    applied_set = field_set(applied, shape, subresource)
    previous: set[Path] = set()
    others: list[tuple[dict, set[Path]]] = []
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1"))
        if _same_owner(entry, manager, "Apply", subresource):
            previous = paths
        else:
            others.append((entry, paths))

    conflicts: list[tuple[str, str, str]] = []
    taken: set[Path] = set()
    if live:
        # fields both the live object and the apply set, to different values
        for path in sorted(changed_fields(applied, base, shape, missing=False, subresource=subresource)):
            for entry, paths in others:
                if path in paths:
                    if force:
                        taken.add(path)
                    else:
                        conflicts.append((entry, path_string(path)))
    if conflicts:
        raise ApplyConflict(conflicts)

    body = {k: v for k, v in applied.items() if _tracked(k, subresource)}
    merged = _merge(base, body, shape)
    owned_by_others = set().union(*(paths for _e, paths in others)) - taken
    # what others own keeps its place: not the field itself, nor a map or item around it
    kept = {q[:n] for q in owned_by_others for n in range(1, len(q) + 1)}
    dropped = {p for p in previous - applied_set if p not in kept and not _is_key_field(p)}
    # a dropped list item takes its fields with it: remove only the outermost dropped paths
    for path in sorted(dropped, key=len):
        if not any(path[:n] in dropped for n in range(1, len(path))):
            _remove_at(merged, path)

    new_entries = []
    for entry, paths in others:
        remaining = paths - taken
        if remaining:
            new_entries.append({**entry, "fieldsV1": to_fields_v1(remaining)})
    new_entries.append(_entry(manager, "Apply", api_version, now, applied_set, subresource))
    merged.setdefault("metadata", {})["managedFields"] = new_entries
    merged["apiVersion"] = applied.get("apiVersion") or (live or {}).get("apiVersion") or api_version
    merged["kind"] = applied.get("kind") or (live or {}).get("kind") or kind
    return merged


def track_update(
    old: dict | None,
    new: dict,
    manager: str,
    *,
    group: str,
    version: str,
    kind: str,
    now: str,
    operation: str = "Update",
    subresource: str = "",
    schema: dict | None = None,
) -> None:
    """Record in `new`'s managedFields (in place) that `manager` wrote the fields that differ
    from `old` (all of them on create); those fields leave every other manager."""
    try:
        _track_update(old, new, manager, group, version, kind, now, operation, subresource, schema)
    except RecursionError:
        pass  # bookkeeping only: an absurdly deep object keeps its old managedFields


def _overlaps_scope(entry: dict, subresource: str) -> bool:
    """Whether an entry owns any top-level field written through ``subresource``'s endpoint."""
    fields = entry.get("fieldsV1")
    return isinstance(fields, dict) and any(
        key.startswith("f:") and _tracked(key[2:], subresource) for key in fields
    )


def _outside_scope(entry: dict, subresource: str) -> dict:
    """An entry's top-level sub-tries this endpoint does not write (kept as they are)."""
    fields = entry.get("fieldsV1")
    if not isinstance(fields, dict):
        return {}
    return {key: sub for key, sub in fields.items() if not (key.startswith("f:") and _tracked(key[2:], subresource))}


def _track_update(
    old: dict | None, new: dict, manager: str, group: str, version: str, kind: str, now: str,
    operation: str, subresource: str, schema: dict | None,
) -> None:
    shape = _Shape(schema) if schema is not None else _shape_for(group, version, kind)
    api_version = f"{group}/{version}" if group else version
    new_paths = field_set(new, shape, subresource)
    changed = changed_fields(new, old, shape, subresource=subresource)
    entries = _entries(new) or _entries(old)
    kept: list[dict] = []
    mine: set[Path] = set()
    for entry in entries:
        if entry.get("subresource", "") != subresource and not _overlaps_scope(entry, subresource):
            kept.append(entry)  # another endpoint's fields (spec vs status): this write can't touch them
            continue
        paths = from_fields_v1(entry.get("fieldsV1")) & new_paths
        if _same_owner(entry, manager, operation, subresource):
            mine = paths
            continue
        remaining = paths - changed
        outside = _outside_scope(entry, subresource)
        if remaining or outside:
            fields = to_fields_v1(remaining)
            fields.update(outside)
            kept.append({**entry, "fieldsV1": fields})
    owned = mine | changed
    if owned:
        kept.append(_entry(manager, operation, api_version, now, owned, subresource))
    new.setdefault("metadata", {})["managedFields"] = kept
