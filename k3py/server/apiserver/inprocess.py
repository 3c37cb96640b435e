"""The in-process transport: the server's own components call the REST machinery directly.

Controllers, the scheduler and simulated nodes use ``k3py.client.Client`` like any client;
inside the server process their requests are handed to this transport, which runs them
through the same registry code the HTTP handler uses — same defaulting, validation,
concurrency checks and watch semantics — without TLS, HTTP or JSON parsing.

Objects cross the boundary as private copies (an orjson round trip, cheaper than deepcopy):
the watch cache's objects are shared and must never be mutated by a caller, and a caller's
request body must not be changed under it by the registry. Copies are made only where
sharing is possible, because on a busy server they are a good part of each write:

* reads (get, list, watch events) come from the watch cache and are always copied (a watch
  event from its JSON when an HTTP watcher already encoded it);
* bodies of create, patch and the subresource verbs are copied before the registry sees them;
  an update's body is not, because ``Registry.update`` never changes the body it is given
  (it works on its own encoded copy);
* the object a write returns is built by the registry for this request alone (it is never
  the cached object), so it is handed back as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from k3py.api import errors
from k3py.api.resources import ResourceInfo
from k3py.server.apiserver import codec
from k3py.server.apiserver.handlers import RestHandler, WatchSession
from k3py.server.apiserver.watchcache import CacheEvent

_SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def _copy(value: Any) -> Any:
    if value is None:
        return None
    return orjson.loads(orjson.dumps(value))


class InProcessTransport:
    """A ``k3py.client.interface.Transport`` served by this process's API server."""

    def __init__(self, rest: RestHandler) -> None:
        self.rest = rest
        self.registry = rest.registry

    def _info(self, request: Any) -> ResourceInfo:
        r = request.resource
        info = self.registry.table.lookup(r.group, r.version, r.plural)
        if info is None:
            raise errors.not_found_path(request.path())
        if request.subresource and info.subresource(request.subresource) is None:
            raise errors.not_found_path(request.path())
        return info

    async def call(self, request: Any) -> Any:
        info = self._info(request)
        verb = request.verb
        query = dict(request.query or {})
        ns = request.namespace if info.namespaced else ""
        name = request.name
        sub = request.subresource
        registry = self.registry
        rest = self.rest
        if verb == "get":
            obj = await registry.get(info, ns, name)
            return _copy(rest._scale_of(info, obj) if sub == "scale" else obj)
        if verb == "list":
            result = await registry.list(info, rest.list_options(query, info, ns))
            meta: dict[str, Any] = {"resourceVersion": result.resource_version}
            if result.continue_token:
                meta["continue"] = result.continue_token
            return {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": meta, "items": _copy(result.items)}
        opts = rest.write_options(query)
        if not opts.field_validation:
            opts.field_validation = "Ignore"  # our own components write known fields only
        if verb == "update" and sub != "scale":
            # Registry.update leaves the body alone and returns an object made for this call.
            return await registry.update(info, ns, name, request.body, opts, sub)
        body = _copy(request.body)
        if verb == "create":
            if sub == "binding":
                await rest._bind(info, ns, name, body, opts)
                return dict(_SUCCESS)
            if sub == "eviction":
                delete_opts = rest.delete_options((body or {}).get("deleteOptions") if isinstance(body, dict) else None, query)
                await registry.delete(info, ns, name, delete_opts)
                return dict(_SUCCESS)
            if info.kind == "Binding" and info.group == "":
                pods = registry.table.lookup("", "v1", "pods")
                assert pods is not None
                await rest._bind(pods, ns, ((body or {}).get("metadata") or {}).get("name", ""), body, opts)
                return dict(_SUCCESS)
            return await registry.create(info, ns, body, opts)
        if verb == "update":
            return _copy(await rest.update_scale(info, ns, name, lambda _scale: body, opts))
        if verb == "patch":
            content_type = request.content_type or codec.MERGE_PATCH
            if sub == "scale":
                return _copy(await rest.patch_scale(info, ns, name, content_type, body, opts))
            obj, _created = await rest.patch_object(info, ns, name, sub, content_type, body, opts)
            return obj
        if verb == "delete":
            obj, _gone = await registry.delete(info, ns, name, rest.delete_options(body, query))
            return _copy(obj)
        if verb == "deletecollection":
            list_opts = rest.list_options(query, info, ns)
            deleted = await registry.delete_collection(info, list_opts, rest.delete_options(body, query))
            return {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": {}, "items": _copy(deleted)}
        raise errors.method_not_allowed(f"unsupported verb {verb!r}")

    async def watch(self, request: Any) -> AsyncIterator[dict[str, Any]]:
        info = self._info(request)
        session = WatchSession(self.rest, info, request.namespace if info.namespaced else "", request.name, dict(request.query or {}))
        await session.open()
        try:
            async for batch in session.batches():
                for kind, payload in batch:
                    if kind == "ERROR":
                        yield {"type": "ERROR", "object": payload}
                    elif kind == "BOOKMARK":
                        meta: dict[str, Any] = {"resourceVersion": payload[0]}
                        if payload[1]:
                            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
                        yield {"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}}
                    else:
                        yield {"type": kind, "object": self._event_object(info, payload)}
        finally:
            session.close()

    def _event_object(self, info: ResourceInfo, event: CacheEvent) -> dict[str, Any]:
        """A private copy of the event's object; from the event's JSON when an HTTP watcher
        already made it (not made and kept here: the control plane has one informer per
        resource, so keeping it would cost memory and save nothing)."""
        out = self.registry._out(info, event.obj)
        if out is event.obj and event.encoded is not None:
            return orjson.loads(event.encoded)  # type: ignore[no-any-return]
        return _copy(out)  # type: ignore[no-any-return]

    async def close(self) -> None:
        return None
