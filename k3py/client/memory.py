"""An in-memory :class:`~k3py.client.interface.Transport` for unit tests and benchmarks.

It keeps objects in dicts and implements just enough API-server behaviour for controllers
to be exercised without a server: one global resourceVersion counter, uid and
creationTimestamp on create, ``generateName``, optimistic concurrency on update (409 when a
given resourceVersion is stale), ``generation`` bumped by spec changes, the status
subresource (only status is taken), scale, pods/binding, finalizers and graceful pod deletion
(``deletionTimestamp`` first for pods bound to a node), namespaces/finalize, label and field
selectors, and watches with a bounded event history (410 Expired when a watch starts below it).

It is not the API server: there is no validation, defaulting, admission or garbage
collection. Tests of controllers against the real server live in tests/controllers/.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from k3py.api import errors
from k3py.api.meta import generate_name, new_uid, now_rfc3339, spec_changed
from k3py.api.selectors import object_fields, parse_field_selector, parse_label_selector
from k3py.client.interface import JSON_PATCH, Request, Resource

Obj = dict[str, Any]


def _merge_patch(doc: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """The replace/add/remove subset of RFC 6902 on object paths (what controllers send)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(last, None)
        else:
            raise errors.bad_request(f"json patch op {op['op']!r} is not supported in memory")
    return doc


class _Watcher:
    def __init__(self, plural_key: tuple[str, str], namespace: str, label: Any, field: Any, kind: str) -> None:
        self.key = plural_key
        self.namespace = namespace
        self.label = label
        self.field = field
        self.kind = kind
        self.queue: asyncio.Queue[Obj | None] = asyncio.Queue()


class MemoryTransport:
    """See the module docstring."""

    def __init__(self, history: int = 100_000) -> None:
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.rv = itertools.count(1)
        self.current_rv = 0
        self.history: deque[tuple[int, tuple[str, str], str, Obj]] = deque(maxlen=history)
        self.watchers: list[_Watcher] = []
        self.calls: dict[str, int] = {}

    # -- helpers ----------------------------------------------------------------------------

    def _bucket(self, r: Resource) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault((r.group, r.plural), {})

    def _next_rv(self) -> str:
        self.current_rv = next(self.rv)
        return str(self.current_rv)

    def _matches(self, obj: Obj, namespace: str, label: Any, field: Any, kind: str, group: str) -> bool:
        meta = obj.get("metadata") or {}
        if namespace and meta.get("namespace") != namespace:
            return False
        if label is not None and not label.matches(meta.get("labels") or {}):
            return False
        return not (field is not None and not field.matches(object_fields(group, kind, obj)))

    def _emit(self, r: Resource, kind: str, obj: Obj) -> None:
        key = (r.group, r.plural)
        rv = int(obj["metadata"]["resourceVersion"])
        self.history.append((rv, key, kind, obj))
        for w in self.watchers:
            if w.key == key and self._matches(obj, w.namespace, w.label, w.field, w.kind, r.group):
                w.queue.put_nowait({"type": kind, "object": copy.deepcopy(obj)})

    def _store(self, r: Resource, obj: Obj, event: str) -> Obj:
        obj["metadata"]["resourceVersion"] = self._next_rv()
        ns = obj["metadata"].get("namespace", "") if r.namespaced else ""
        self._bucket(r)[(ns, obj["metadata"]["name"])] = obj
        self._emit(r, event, obj)
        return copy.deepcopy(obj)

    def _get(self, r: Resource, namespace: str, name: str) -> Obj:
        obj = self._bucket(r).get((namespace if r.namespaced else "", name))
        if obj is None:
            raise errors.not_found(r.plural, name, r.group)
        return obj

    def _remove(self, r: Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._bucket(r).pop((meta.get("namespace", "") if r.namespaced else "", meta["name"]), None)
        meta["resourceVersion"] = self._next_rv()
        self._emit(r, "DELETED", obj)
        return copy.deepcopy(obj)

    # -- Transport --------------------------------------------------------------------------

    async def close(self) -> None:
        for w in self.watchers:
            w.queue.put_nowait(None)

    async def call(self, request: Request) -> Any:
        key = f"{request.verb}/{request.resource.plural}" + (f"/{request.subresource}" if request.subresource else "")
        self.calls[key] = self.calls.get(key, 0) + 1
        handler = getattr(self, f"_do_{request.verb}")
        return await handler(request)

    async def _do_get(self, req: Request) -> Obj:
        obj = self._get(req.resource, req.namespace, req.name)
        if req.subresource == "scale":
            return self._scale(req.resource, obj)
        return copy.deepcopy(obj)

    def _scale(self, r: Resource, obj: Obj) -> Obj:
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace")},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0)},
        }

    async def _do_list(self, req: Request) -> Obj:
        r = req.resource
        label = parse_label_selector(req.query["labelSelector"]) if req.query.get("labelSelector") else None
        field = parse_field_selector(req.query["fieldSelector"]) if req.query.get("fieldSelector") else None
        items = [copy.deepcopy(o) for o in self._bucket(r).values()
                 if self._matches(o, req.namespace, label, field, r.kind, r.group)]
        return {"apiVersion": r.api_version, "kind": f"{r.kind}List",
                "metadata": {"resourceVersion": str(self.current_rv)}, "items": items}

    async def watch(self, req: Request) -> AsyncIterator[Obj]:
        r = req.resource
        label = parse_label_selector(req.query["labelSelector"]) if req.query.get("labelSelector") else None
        field = parse_field_selector(req.query["fieldSelector"]) if req.query.get("fieldSelector") else None
        w = _Watcher((r.group, r.plural), req.namespace, label, field, r.kind)
        since = int(req.query.get("resourceVersion") or 0)
        if since and self.history and len(self.history) == self.history.maxlen and self.history[0][0] > since + 1:
            raise errors.gone(f"too old resource version: {since} ({self.history[0][0] - 1})")
        for rv, key, kind, obj in self.history:
            if rv > since and key == w.key and self._matches(obj, w.namespace, label, field, r.kind, r.group):
                w.queue.put_nowait({"type": kind, "object": copy.deepcopy(obj)})
        self.watchers.append(w)
        try:
            while True:
                event = await w.queue.get()
                if event is None:
                    return
                yield event
        finally:
            self.watchers.remove(w)

    def expire_watches(self) -> None:
        """End every open watch with a 410 ERROR event, as a compacting server would."""
        for w in self.watchers:
            w.queue.put_nowait({"type": "ERROR", "object": errors.gone("too old resource version").to_status()})

    async def _do_create(self, req: Request) -> Obj:
        r = req.resource
        if req.subresource == "binding":
            pod = self._get(r, req.namespace, req.name)
            if pod.get("spec", {}).get("nodeName"):
                raise errors.conflict(r.plural, req.name, "", f"pod {req.name} is already assigned to node \"{pod['spec']['nodeName']}\"")
            pod = copy.deepcopy(pod)
            pod["spec"]["nodeName"] = req.body["target"]["name"]
            self._store(r, pod, "MODIFIED")
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
        if req.subresource == "eviction":
            pod = self._get(r, req.namespace, req.name)
            return await self._delete_obj(r, pod, {})
        obj = copy.deepcopy(req.body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.invalid(r.kind, "", [{"field": "metadata.name", "message": "Required value: name or generateName is required", "reason": "FieldValueRequired"}], r.group)
            meta["name"] = generate_name(meta["generateName"])
        if r.namespaced:
            meta["namespace"] = req.namespace or meta.get("namespace") or "default"
            if req.resource.plural != "events" and (("", "namespaces") in self.objects):
                ns = self.objects[("", "namespaces")].get(("", meta["namespace"]))
                if ns is not None and ns.get("metadata", {}).get("deletionTimestamp"):
                    raise errors.forbidden(r.plural, meta["name"], r.group, f"unable to create new content in namespace {meta['namespace']} because it is being terminated")
        else:
            meta.pop("namespace", None)
        if (meta.get("namespace", "") if r.namespaced else "", meta["name"]) in self._bucket(r):
            raise errors.already_exists(r.plural, meta["name"], r.group)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        obj.setdefault("apiVersion", r.api_version)
        obj.setdefault("kind", r.kind)
        if r.plural == "namespaces":
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj.setdefault("status", {})["phase"] = "Active"
        if r.plural == "pods":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        return self._store(r, obj, "ADDED")

    async def _do_update(self, req: Request) -> Obj:
        r = req.resource
        old = self._get(r, req.namespace, req.name)
        new = copy.deepcopy(req.body)
        given_rv = (new.get("metadata") or {}).get("resourceVersion")
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(r.plural, req.name, r.group)
        return self._replace(r, old, new, req.subresource)

    def _replace(self, r: Resource, old: Obj, new: Obj, subresource: str) -> Obj:
        if subresource == "finalize":
            merged = copy.deepcopy(old)
            merged["spec"]["finalizers"] = list(new.get("spec", {}).get("finalizers") or [])
            if not merged["spec"]["finalizers"] and merged["metadata"].get("deletionTimestamp"):
                return self._remove(r, merged)
            return self._store(r, merged, "MODIFIED")
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
        elif subresource == "scale":
            merged = copy.deepcopy(old)
            merged["spec"]["replicas"] = new["spec"]["replicas"]
        else:
            merged = new
            merged["status"] = copy.deepcopy(old.get("status"))
            for field in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "namespace", "name"):
                if field in old["metadata"]:
                    merged["metadata"][field] = old["metadata"][field]
        if subresource != "status" and spec_changed(old, merged):
            merged["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        meta = merged["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not (
            r.plural == "pods" and merged.get("spec", {}).get("nodeName")) and not (
            r.plural == "namespaces" and (merged.get("spec") or {}).get("finalizers")):  # only finalize ends those
            return self._remove(r, merged)
        return self._store(r, merged, "MODIFIED")

    async def _do_patch(self, req: Request) -> Obj:
        r = req.resource
        old = self._get(r, req.namespace, req.name)
        if req.subresource == "scale":
            patched = _merge_patch(self._scale(r, old), req.body)
        elif req.content_type == JSON_PATCH:
            patched = _json_patch(old, req.body)
        else:
            patched = _merge_patch(old, req.body)
        result = self._replace(r, old, patched, req.subresource)
        return self._scale(r, result) if req.subresource == "scale" else result

    async def _do_delete(self, req: Request) -> Obj:
        obj = self._get(req.resource, req.namespace, req.name)
        return await self._delete_obj(req.resource, obj, req.body or {})

    async def _delete_obj(self, r: Resource, obj: Obj, options: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        pre_uid = (options.get("preconditions") or {}).get("uid")
        if pre_uid and pre_uid != meta.get("uid"):
            raise errors.conflict(r.plural, meta["name"], r.group, "Precondition failed: UID in precondition does not match")
        policy = options.get("propagationPolicy")
        graceful = r.plural == "pods" and obj.get("spec", {}).get("nodeName") and options.get("gracePeriodSeconds") != 0
        if policy == "Foreground" and "foregroundDeletion" not in (meta.get("finalizers") or []):
            meta.setdefault("finalizers", []).append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in (meta.get("finalizers") or []):
            meta.setdefault("finalizers", []).append("orphan")
        if r.plural == "namespaces":
            if meta.get("deletionTimestamp") is None:
                meta["deletionTimestamp"] = now_rfc3339()
                obj["status"]["phase"] = "Terminating"
                return self._store(r, obj, "MODIFIED")
            return copy.deepcopy(obj)
        if meta.get("finalizers") or graceful:
            if meta.get("deletionTimestamp") is None:
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 30 if graceful else 0
                return self._store(r, obj, "MODIFIED")
            return copy.deepcopy(obj)
        return self._remove(r, obj)

    # -- conveniences for tests -------------------------------------------------------------

    def peek(self, r: Resource, namespace: str, name: str) -> Obj | None:
        obj = self._bucket(r).get((namespace if r.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, r: Resource, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (ns, _), o in self._bucket(r).items() if namespace is None or ns == namespace]
