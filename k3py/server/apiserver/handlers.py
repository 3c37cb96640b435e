"""The one generic REST handler: every verb of every resource, built-in or CRD.

A request path is parsed the way upstream's RequestInfoFactory does (``/api/v1/...`` or
``/apis/<group>/<version>/...``, then an optional ``namespaces/<ns>``, then
``<plural>[/<name>[/<subresource>]]``; ``namespaces/<name>/status|finalize`` is the namespace's
own subresource), the resource is looked up in the resource table, and the verb follows from
method and shape: GET → get/list/watch, POST → create (or a subresource action), PUT → update,
PATCH → patch, DELETE → delete/deletecollection.

Responses are JSON or YAML; lists and watches may be Tables (``kubectl get``) with rows carrying
PartialObjectMetadata. Watches stream newline-delimited JSON events over chunked HTTP from the
watch cache.

Hostile input: numeric query parameters must fit int64 (400 otherwise), a request body must
arrive within the request timeout (60 s, 504 otherwise), and everything a watch needs is
checked before its 200 is sent; once the stream has started, a failure ends it with an
ERROR event — never a second status line. Large bodies are decoded, checked for duplicate
fields and patched on the heavy-work pool (``offload.py``); an HTTP patch that is large, or a
JSON patch with ``copy`` operations, is applied there too (the registry awaits it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from k3py.api import errors, patch
from k3py.api.apply import server_side_apply
from k3py.api.bounds import MAX_NESTING_DEPTH, BoundsError, check_bounds
from k3py.api.meta import now_rfc3339, section
from k3py.api.patch import PatchError
from k3py.api.resources import ResourceInfo, ResourceTable
from k3py.api.selectors import (
    SelectorError,
    label_selector_from_dict,
    object_fields,
    parse_field_selector,
    parse_label_selector,
    supported_field_labels,
)
from k3py.api.tables import custom_row_cells, custom_table_columns
from k3py.server.apiserver import codec
from k3py.server.apiserver.fieldcheck import duplicate_fields
from k3py.server.apiserver.offload import run_heavy
from k3py.server.apiserver.registry import (
    DeleteOptions,
    ListOptions,
    Registry,
    WriteOptions,
    namespace_prefix,
    storage_prefix,
)
from k3py.server.apiserver.reviews import REVIEW_KINDS, review, user_from_peercert
from k3py.server.apiserver.semantics import table_columns, table_row_cells
from k3py.server.apiserver.watchcache import CacheEvent, Watcher
from k3py.util.logsummary import LogSummary

log = logging.getLogger("k3py.apiserver.http")

NAMESPACE_SUBRESOURCES = ("status", "finalize")
STREAMING_SUBRESOURCES = ("log", "exec", "attach", "portforward", "proxy")
SCALABLE = {("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("", "ReplicationController")}
BOOKMARK_INTERVAL = 30.0
LIVENESS_INTERVAL = 5.0
DEFAULT_WATCH_TIMEOUT = 1800
INT64_MAX = (1 << 63) - 1
# Numeric query parameters: int64 in upstream's types (resourceVersion is checked when numeric).
NUMERIC_QUERY = ("limit", "timeoutSeconds", "gracePeriodSeconds")
# Patches larger than this (or JSON patches with copy operations) are applied off the loop.
INLINE_PATCH_BYTES = 16 * 1024
# Bodies larger than this have their duplicate fields looked for off the loop.
INLINE_DUPLICATE_SCAN_BYTES = 16 * 1024
# A request body must have arrived within this (upstream's --request-timeout, 60 s, which
# bounds every request that is not long-running; here only the part a client can drag out).
REQUEST_TIMEOUT = 60.0


@dataclass
class ResourceRequest:
    """What a resource URL names."""

    group: str
    version: str
    namespace: str
    plural: str
    name: str
    subresource: str
    namespace_in_path: bool


def parse_resource_path(segments: list[str]) -> ResourceRequest | None:
    """``segments`` after the api prefix: ["api","v1",...] or ["apis","g","v",...]."""
    if segments[0] == "api":
        group, version, rest = "", segments[1], segments[2:]
    else:
        group, version, rest = segments[1], segments[2], segments[3:]
    if not rest or not rest[0]:
        return None
    namespace = ""
    in_path = False
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
        namespace = rest[1]
        in_path = True
        rest = rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3 and sub != "proxy":
        return None
    return ResourceRequest(group, version, namespace, plural, name, sub, in_path)


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _shown(raw: str) -> str:
    """A query value for an error message, cut short."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def _int64(raw: str, name: str) -> int:
    """A query parameter as Go parses an int64: a decimal that fits, or a 400."""
    text = raw.strip()
    if len(text.lstrip("+-")) > 19:
        raise errors.bad_request(f"invalid {name}: {_shown(raw)}: value out of range")
    try:
        value = int(text)
    except ValueError:
        raise errors.bad_request(f"invalid {name}: {_shown(raw)}: must be an integer") from None
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise errors.bad_request(f"invalid {name}: {_shown(raw)}: value out of range")
    return value


def _int(query: Any, name: str, default: int = 0) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    value = _int64(raw, name)
    if value < 0:
        raise errors.bad_request(f"invalid {name}: {_shown(raw)}: must not be negative")
    return value


def check_query_numbers(query: Any) -> None:
    """Numeric query parameters out of int64 range (or not numbers) are a 400, up front."""
    for name in NUMERIC_QUERY:
        raw = query.get(name)
        if raw not in (None, ""):
            _int64(raw, name)
    rv = query.get("resourceVersion")
    if rv and rv.isdigit():
        _int64(rv, "resourceVersion")


def _include_object(query: Any) -> str:
    include = query.get("includeObject", "Metadata")
    if include not in ("Metadata", "Object", "None"):
        raise errors.bad_request(f'includeObject: Unsupported value: "{include}": supported values: "Metadata", "Object", "None"')
    return include


def _dry_run(query: Any) -> bool:
    if hasattr(query, "getall"):
        values = query.getall("dryRun", [])
    else:
        values = [query["dryRun"]] if query.get("dryRun") else []
    for v in values:
        if v not in ("All", ""):
            raise errors.bad_request(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return "All" in values


def json_response(body: bytes, status: int = 200, media: str = codec.JSON, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=media, headers=headers)


class RestHandler:
    """Serves /api/v1/... and /apis/<g>/<v>/... for every resource in the table."""

    def __init__(self, registry: Registry, table: ResourceTable) -> None:
        self.registry = registry
        self.table = table
        self.tasks: set[asyncio.Task[Any]] = set()
        # Set by the server: the kubelet proxy for pods/log, exec, attach, portforward (None: 503).
        self.streaming: Any = None
        # Set by the server: whether a bearer token is one it accepts (for TokenReview).
        self.token_valid: Callable[[str], bool] = lambda _token: False
        self.stream_errors = LogSummary(log)
        self.request_timeout = REQUEST_TIMEOUT

    # -- entry ------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest, segments: list[str]) -> web.StreamResponse:
        rr = parse_resource_path(segments)
        if rr is None:
            raise errors.not_found_path(request.path)
        info = self.table.lookup(rr.group, rr.version, rr.plural)
        if info is None:
            raise errors.not_found_path(request.path)
        if rr.namespace_in_path and not info.namespaced:
            raise errors.not_found_path(request.path)
        if info.namespaced and rr.name and not rr.namespace and not (info.kind == "Namespace"):
            raise errors.not_found_path(request.path)
        if rr.subresource and info.subresource(rr.subresource) is None:
            raise errors.not_found_path(request.path)
        method = request.method
        if method in ("GET", "DELETE"):  # the verbs whose options carry these numbers
            check_query_numbers(request.query)
        if rr.subresource in STREAMING_SUBRESOURCES:
            return await self._streaming(request, info, rr)
        if method == "GET":
            if _bool(request.query.get("watch")):
                return await self.watch(request, info, rr)
            if rr.name:
                return await self.get(request, info, rr)
            return await self.list(request, info, rr)
        if method == "POST":
            if rr.subresource in ("binding", "eviction"):
                return await self._pod_action(request, info, rr)
            if rr.name:
                raise errors.method_not_allowed()
            if info.kind == "Binding" and info.group == "":
                return await self._binding_resource(request, info, rr)
            if (info.group, info.kind) in REVIEW_KINDS:
                body = await codec.decode_body_async(await self._read_body(request), request.headers.get("Content-Type"))
                transport = request.transport
                user = user_from_peercert(transport.get_extra_info("peercert") if transport else None)
                return await self._plain(request, review(info, body, user, self.token_valid), 201)
            return await self.create(request, info, rr)
        if method == "PUT" and rr.name:
            return await self.update(request, info, rr)
        if method == "PATCH" and rr.name:
            return await self.patch(request, info, rr)
        if method == "DELETE":
            if rr.name:
                return await self.delete(request, info, rr)
            return await self.delete_collection(request, info, rr)
        raise errors.method_not_allowed()

    # -- output -----------------------------------------------------------------------------

    async def _object_response(
        self, request: web.BaseRequest, info: ResourceInfo, obj: dict[str, Any], status: int = 200
    ) -> web.Response:
        neg = codec.negotiate(request.headers.get("Accept"))
        if neg.as_kind == "Table":
            body = self._table(info, [obj], neg, request.query, obj["metadata"].get("resourceVersion", ""))
        elif neg.as_kind == "PartialObjectMetadata":
            body = {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{neg.as_version}", "metadata": obj.get("metadata", {})}
        elif neg.as_kind:
            raise errors.not_acceptable(request.headers.get("Accept", ""))
        else:
            body = obj
        return json_response(await codec.encode_async(body, neg.media), status, neg.media)

    def _table(
        self,
        info: ResourceInfo,
        objs: list[dict[str, Any]],
        neg: codec.Negotiated,
        query: Any,
        rv: str,
        cont: str | None = None,
        remaining: int | None = None,
        columns: bool = True,
    ) -> dict[str, Any]:
        include = _include_object(query)
        now = datetime.now(UTC)
        printer_columns = self.registry.crd_version(info).get("additionalPrinterColumns") or []
        if printer_columns:
            column_defs = custom_table_columns(printer_columns)

            def cells(obj: dict[str, Any]) -> list[Any]:
                return custom_row_cells(printer_columns, obj, now)
        else:
            column_defs = table_columns(info)

            def cells(obj: dict[str, Any]) -> list[Any]:
                return table_row_cells(info, obj, now)

        rows = []
        for obj in objs:
            row: dict[str, Any] = {"cells": cells(obj)}
            if include == "Object":
                row["object"] = obj
            elif include == "Metadata":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": f"meta.k8s.io/{neg.as_version}",
                    "metadata": obj.get("metadata", {}),
                }
            rows.append(row)
        list_meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            list_meta["continue"] = cont
        if remaining:
            list_meta["remainingItemCount"] = remaining
        return {
            "kind": "Table",
            "apiVersion": f"meta.k8s.io/{neg.as_version}",
            "metadata": list_meta,
            "columnDefinitions": column_defs if columns else [],
            "rows": rows,
        }

    # -- selectors --------------------------------------------------------------------------

    def _predicate(self, info: ResourceInfo, query: Any) -> Callable[[dict[str, Any]], bool] | None:
        label_text = query.get("labelSelector", "")
        field_text = query.get("fieldSelector", "")
        try:
            labels = parse_label_selector(label_text) if label_text else None
            fields = parse_field_selector(field_text) if field_text else None
        except SelectorError as e:
            raise errors.bad_request(f"unable to parse requirement: {e}") from None
        if labels is not None and labels.empty:
            labels = None
        if fields is not None:
            if fields.empty:
                fields = None
            else:
                allowed = supported_field_labels(info.group, info.kind, info.namespaced)
                for name, _op, _value in fields.requirements:
                    if name not in allowed:
                        raise errors.bad_request(f'field label not supported: {name}')
        if labels is None and fields is None:
            return None
        group, kind, namespaced = info.group, info.kind, info.namespaced

        def predicate(obj: dict[str, Any]) -> bool:
            if labels is not None and not labels.matches(obj.get("metadata", {}).get("labels") or {}):
                return False
            if fields is not None and not fields.matches(object_fields(group, kind, obj, namespaced)):
                return False
            return True

        return predicate

    def list_options(self, query: Any, info: ResourceInfo, namespace: str) -> ListOptions:
        q = query
        return ListOptions(
            namespace=namespace,
            predicate=self._predicate(info, q),
            limit=_int(q, "limit"),
            continue_token=q.get("continue") or None,
            resource_version=q.get("resourceVersion", ""),
            resource_version_match=q.get("resourceVersionMatch", ""),
        )

    # -- verbs ------------------------------------------------------------------------------

    async def get(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        obj = await self.registry.get(info, rr.namespace, rr.name)
        if rr.subresource == "scale":
            return await self._plain(request, self._scale_of(info, obj))
        neg = codec.negotiate(request.headers.get("Accept"))
        if neg.media == codec.JSON and not neg.as_kind:
            # The common case: the object itself as JSON, encoded once per revision.
            return json_response(self.registry.json_of(info, rr.namespace, rr.name, obj))
        return await self._object_response(request, info, obj)

    async def _plain(self, request: web.BaseRequest, body: dict[str, Any], status: int = 200) -> web.Response:
        neg = codec.negotiate(request.headers.get("Accept"))
        return json_response(await codec.encode_async(body, neg.media), status, neg.media)

    async def list(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        neg = codec.negotiate(request.headers.get("Accept"))
        opts = self.list_options(request.query, info, rr.namespace)
        result = await self.registry.list(info, opts)
        if neg.as_kind == "Table":
            body = self._table(info, result.items, neg, request.query, result.resource_version, result.continue_token, result.remaining)
            return json_response(await codec.encode_async(body, neg.media), 200, neg.media)
        list_meta: dict[str, Any] = {"resourceVersion": result.resource_version}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        if result.remaining:
            list_meta["remainingItemCount"] = result.remaining
        if neg.as_kind == "PartialObjectMetadataList":
            body = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": f"meta.k8s.io/{neg.as_version}",
                "metadata": list_meta,
                "items": [
                    {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{neg.as_version}", "metadata": o.get("metadata", {})}
                    for o in result.items
                ],
            }
        elif neg.as_kind:
            raise errors.not_acceptable(request.headers.get("Accept", ""))
        else:
            body = {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": list_meta, "items": result.items}
        return json_response(await codec.encode_async(body, neg.media), 200, neg.media)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        if request.content_length is not None and request.content_length > codec.MAX_BODY_BYTES:
            raise errors.request_entity_too_large()
        try:
            async with asyncio.timeout(self.request_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise errors.request_entity_too_large() from None
        except TimeoutError:
            # A client trickling its body must not hold an in-flight slot for ever.
            raise errors.timeout(
                "request did not complete within requested timeout - "
                f"the request body did not arrive within {self.request_timeout:g} s"
            ) from None

    def _write_options(self, request: web.BaseRequest, body: bytes = b"") -> WriteOptions:
        opts = self.write_options(request.query)
        # A large body: the registry walks the object off the event loop.
        opts.heavy = len(body) > codec.INLINE_JSON_BYTES
        return opts

    @staticmethod
    def write_options(q: Any) -> WriteOptions:
        validation = q.get("fieldValidation", "")
        if validation not in ("", "Ignore", "Warn", "Strict"):
            raise errors.bad_request(f'fieldValidation: Unsupported value: "{validation}": supported values: "Ignore", "Warn", "Strict"')
        manager = q.get("fieldManager", "")
        if len(manager) > 128:
            raise errors.invalid("", "", [{"field": "fieldManager", "reason": "FieldValueTooLong", "message": "Too long: may not be more than 128 bytes"}])
        force = (q.get("force") or "").lower()
        if force not in ("", "true", "false"):
            raise errors.bad_request(f"invalid force: {q.get('force')!r}: must be true or false")
        return WriteOptions(dry_run=_dry_run(q), field_manager=manager, field_validation=validation, force=force == "true")

    async def create(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        body = await self._read_body(request)
        opts = self._write_options(request, body)
        obj = await codec.decode_body_async(body, request.headers.get("Content-Type"))
        await self._find_duplicates(request, body, opts)
        obj = self._strip_protobuf_zero_meta(obj)
        created = await self.registry.create(info, rr.namespace, obj, opts)
        return _warn(await self._object_response(request, info, created, 201), opts)

    @staticmethod
    async def _find_duplicates(request: web.BaseRequest, body: bytes, opts: WriteOptions) -> None:
        media = codec.media_type(request.headers.get("Content-Type"))
        if media == codec.PROTOBUF or body[:4] == b"k8s\x00":
            opts.field_validation = "Ignore"  # a protobuf body cannot carry unknown fields
        elif opts.field_validation in ("Strict", "Warn") and media in ("", codec.JSON, codec.MERGE_PATCH, codec.STRATEGIC_MERGE_PATCH):
            # Finding duplicate keys needs a second, slow parse: done only when asked for.
            if len(body) > INLINE_DUPLICATE_SCAN_BYTES:
                opts.duplicate_fields = await run_heavy(duplicate_fields, body)
            else:
                opts.duplicate_fields = duplicate_fields(body)

    @staticmethod
    def _strip_protobuf_zero_meta(obj: Any) -> Any:
        """Protobuf decoding yields zero values ("" and the 1970 timestamp) for unset metadata."""
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            meta = obj["metadata"]
            for k in ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion"):
                if meta.get(k) == "":
                    del meta[k]
            if meta.get("creationTimestamp") in ("1970-01-01T00:00:00Z", None) and "creationTimestamp" in meta:
                del meta["creationTimestamp"]
            if meta.get("generation") == 0:
                del meta["generation"]
        return obj

    async def update(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        body = await self._read_body(request)
        opts = self._write_options(request, body)
        obj = self._strip_protobuf_zero_meta(await codec.decode_body_async(body, request.headers.get("Content-Type")))
        await self._find_duplicates(request, body, opts)
        if rr.subresource == "scale":
            return await self._plain(request, await self.update_scale(info, rr.namespace, rr.name, lambda _scale: obj, opts))
        if rr.subresource not in ("", "status", "finalize"):
            raise errors.method_not_allowed()
        updated = await self.registry.update(info, rr.namespace, rr.name, obj, opts, rr.subresource)
        return _warn(await self._object_response(request, info, updated), opts)

    # -- patch ------------------------------------------------------------------------------

    async def patch(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        content_type = codec.media_type(request.headers.get("Content-Type"))
        if content_type not in codec.PATCH_TYPES:
            raise errors.ApiError(
                415, "UnsupportedMediaType",
                f'the body of the request was in an unknown format - accepted media types include: {", ".join(codec.PATCH_TYPES)}',
            )  # fmt: skip
        body = await self._read_body(request)
        opts = self._write_options(request, body)
        decode = codec.decode_yaml if content_type == codec.APPLY_PATCH_YAML else codec.decode_json
        if codec.heavy(body, content_type):
            patch_doc = await run_heavy(decode, body)
        else:
            patch_doc = decode(body)
        offload = len(body) > INLINE_PATCH_BYTES or (content_type == codec.JSON_PATCH and _copies(patch_doc))
        if rr.subresource == "scale":
            scale = await self.patch_scale(info, rr.namespace, rr.name, content_type, patch_doc, opts, offload=offload)
            return await self._plain(request, scale)
        await self._find_duplicates(request, body, opts)
        obj, created = await self.patch_object(
            info, rr.namespace, rr.name, rr.subresource, content_type, patch_doc, opts, offload=offload
        )
        return _warn(await self._object_response(request, info, obj, 201 if created else 200), opts)

    async def patch_scale(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        content_type: str,
        patch_doc: Any,
        opts: WriteOptions,
        *,
        offload: bool = False,
    ) -> dict[str, Any]:
        patch_module = patch
        apply_fn: Any = self._patch_function(info, content_type, patch_doc, patch_module, opts.field_manager)
        if offload:
            apply_fn = _off_loop(apply_fn)
        return await self.update_scale(info, namespace, name, apply_fn, opts)

    async def patch_object(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        subresource: str,
        content_type: str,
        patch_doc: Any,
        opts: WriteOptions,
        *,
        offload: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Apply a patch of any of the four types; returns (object, created). ``offload``: do
        the patching itself on the heavy-work pool."""
        if content_type not in codec.PATCH_TYPES:
            raise errors.ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        patch_module = patch
        apply_fn: Any = self._patch_function(
            info, content_type, patch_doc, patch_module, opts.field_manager, opts.force, subresource
        )
        if offload:
            apply_fn = _off_loop(apply_fn)
        if subresource not in ("", "status"):
            raise errors.method_not_allowed()

        if content_type == codec.APPLY_PATCH_YAML:
            opts.applied = True  # managedFields come from the apply itself
        try:
            updated = await self.registry.guaranteed_update(info, namespace, name, apply_fn, opts, subresource)
        except errors.ApiError as e:
            if e.code == 404 and content_type == codec.APPLY_PATCH_YAML and not subresource:
                applied = dict(patch_doc)
                applied["metadata"] = {**(patch_doc.get("metadata") or {}), "name": name}
                crd_schema = (self.registry.crd_version(info).get("schema") or {}).get("openAPIV3Schema")
                create_fn = functools.partial(
                    server_side_apply, None, applied, opts.field_manager or "unknown", group=info.group,
                    version=info.version, kind=info.kind, now=now_rfc3339(), force=opts.force,
                    schema=crd_schema if isinstance(crd_schema, dict) else None,
                )  # fmt: skip
                try:
                    obj = await run_heavy(create_fn) if offload else create_fn()
                except PatchError as pe:
                    raise _patch_error(pe) from None
                return await self.registry.create(info, namespace, obj, opts), True
            raise
        return updated, False

    def _patch_function(
        self,
        info: ResourceInfo,
        content_type: str,
        patch_doc: Any,
        patch_module: Any,
        manager: str = "",
        force: bool = False,
        subresource: str = "",
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:

        def guarded(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
            def run(current: dict[str, Any]) -> dict[str, Any]:
                try:
                    result = fn(current)
                except PatchError as e:
                    raise _patch_error(e) from None
                except (TypeError, AttributeError, ValueError, KeyError, IndexError) as e:
                    # A patch whose values do not fit the object's shape: the client's mistake.
                    raise errors.ApiError(422, "Invalid", f"the patch could not be applied: {e}") from None
                if not isinstance(result, dict):
                    raise errors.bad_request("the patch did not produce an object")
                if content_type == codec.APPLY_PATCH_YAML:
                    # The other patch types check their results themselves (k3py.api.patch).
                    try:
                        check_bounds(result, MAX_NESTING_DEPTH)
                    except BoundsError as e:
                        raise errors.ApiError(422, "Invalid", f"the applied object is invalid: {e}") from None
                return result

            return run

        if content_type == codec.JSON_PATCH:
            if not isinstance(patch_doc, list):
                raise errors.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            return guarded(lambda cur: patch_module.apply_json_patch(cur, patch_doc))
        if not isinstance(patch_doc, dict):
            raise errors.bad_request("the patch must be a JSON object")
        if content_type == codec.APPLY_PATCH_YAML and not isinstance(patch_doc.get("metadata", {}), dict):
            raise errors.bad_request("json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta")
        if content_type == codec.MERGE_PATCH:
            return guarded(lambda cur: patch_module.apply_merge_patch(cur, patch_doc))
        if content_type == codec.STRATEGIC_MERGE_PATCH:
            schema = patch_module.patch_schema_for(info.group, info.version, info.kind)
            if schema is None:
                raise errors.ApiError(
                    415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {codec.JSON_PATCH}, {codec.MERGE_PATCH}, {codec.APPLY_PATCH_YAML}",
                )  # fmt: skip
            return guarded(lambda cur: patch_module.apply_strategic_merge_patch(cur, patch_doc, schema))
        # Server-side apply (k3py.api.apply): field ownership, conflicts, managedFields.
        applier = manager or "unknown"
        crd_schema = (self.registry.crd_version(info).get("schema") or {}).get("openAPIV3Schema")

        def apply(cur: dict[str, Any]) -> dict[str, Any]:
            return server_side_apply(
                cur, patch_doc, applier, group=info.group, version=info.version, kind=info.kind,
                now=now_rfc3339(), force=force, subresource=subresource,
                schema=crd_schema if isinstance(crd_schema, dict) else None,
            )  # fmt: skip

        return guarded(apply)

    # -- scale ------------------------------------------------------------------------------

    def _scale_paths(self, info: ResourceInfo) -> tuple[str, str, str] | None:
        """A CRD's declared (spec replicas, status replicas, label selector) paths, or None."""
        scale = (self.registry.crd_version(info).get("subresources") or {}).get("scale")
        if not isinstance(scale, dict):
            return None
        return (
            scale.get("specReplicasPath") or ".spec.replicas",
            scale.get("statusReplicasPath") or ".status.replicas",
            scale.get("labelSelectorPath") or "",
        )

    def _scale_of(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        scale_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta}
        paths = self._scale_paths(info)
        if paths is not None:
            spec_path, status_path, selector_path = paths
            selector = _get_path(obj, selector_path) if selector_path else ""
            return {
                "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": scale_meta,
                "spec": {"replicas": _get_path(obj, spec_path) or 0},
                "status": {"replicas": _get_path(obj, status_path) or 0, "selector": selector if isinstance(selector, str) else ""},
            }  # fmt: skip
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        selector = spec.get("selector") or {}
        if isinstance(selector, dict) and ("matchLabels" in selector or "matchExpressions" in selector):
            selector_text = str(label_selector_from_dict(selector))
        elif isinstance(selector, dict):
            selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        else:
            selector_text = ""
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
            },
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0), "selector": selector_text},
        }

    async def update_scale(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        new_scale: Callable[[dict[str, Any]], Any],
        opts: WriteOptions,
    ) -> dict[str, Any]:
        """Write spec.replicas through the scale subresource; returns the new Scale.
        ``new_scale`` may return an awaitable (a patch applied off the event loop)."""

        async def mutate(current: dict[str, Any]) -> dict[str, Any]:
            scale = new_scale(self._scale_of(info, current))
            if inspect.isawaitable(scale):
                scale = await scale
            if not isinstance(scale, dict) or not isinstance(scale.get("spec") or {}, dict):
                raise errors.bad_request("the body must be a Scale object")
            if not isinstance(scale.get("metadata") or {}, dict):
                raise errors.bad_request("the body must be a Scale object")
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.invalid(
                    "Scale", name,
                    [{"field": "spec.replicas", "reason": "FieldValueInvalid", "message": f"Invalid value: {replicas}: must be greater than or equal to 0"}],
                    "autoscaling",
                )  # fmt: skip
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"].get("resourceVersion"):
                raise errors.conflict(info.plural, name, info.group)
            paths = self._scale_paths(info)
            _set_path(current, paths[0] if paths else ".spec.replicas", replicas)
            return current

        updated = await self.registry.guaranteed_update(info, namespace, name, mutate, opts)
        return self._scale_of(info, updated)

    # -- pod actions ------------------------------------------------------------------------

    async def _bind(self, info: ResourceInfo, namespace: str, pod_name: str, binding: Any, opts: WriteOptions) -> None:
        if not isinstance(binding, dict):
            raise errors.bad_request("the body must be a Binding")
        target = binding.get("target") or {}
        if not isinstance(target, dict):
            raise errors.bad_request("json: cannot unmarshal into Go struct field Binding.target of type v1.ObjectReference")
        node = target.get("name")
        if not node:
            raise errors.invalid("Binding", pod_name, [{"field": "target.name", "reason": "FieldValueRequired", "message": "Required value"}])

        def mutate(pod: dict[str, Any]) -> dict[str, Any]:
            spec = section(pod, "spec")
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods/binding", pod_name, "", f"pod {pod_name} is being deleted, cannot be assigned to a host")
            if spec.get("nodeName"):
                raise errors.conflict("pods/binding", pod_name, "", f'pod {pod_name} is already assigned to node "{spec["nodeName"]}"')
            spec["nodeName"] = node
            status = section(pod, "status")
            conditions = [c for c in status.get("conditions") or () if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
            status["conditions"] = conditions
            return pod

        pods = self.table.lookup("", "v1", "pods")
        assert pods is not None
        # Binding writes spec.nodeName and the PodScheduled condition together, as upstream.
        await self.registry.guaranteed_update(pods, namespace, pod_name, mutate, opts, subresource="bind")

    async def _pod_action(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        body = await codec.decode_body_async(await self._read_body(request), request.headers.get("Content-Type"))
        opts = self._write_options(request)
        if rr.subresource == "binding":
            await self._bind(info, rr.namespace, rr.name, body, opts)
        else:
            delete_opts = DeleteOptions.from_dict((body or {}).get("deleteOptions") if isinstance(body, dict) else None)
            delete_opts.dry_run = delete_opts.dry_run or opts.dry_run
            await self.registry.delete(info, rr.namespace, rr.name, delete_opts)
        return await self._plain(request, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    async def _binding_resource(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        body = await codec.decode_body_async(await self._read_body(request), request.headers.get("Content-Type"))
        name = ((body or {}).get("metadata") or {}).get("name", "") if isinstance(body, dict) else ""
        pods = self.table.lookup("", "v1", "pods")
        assert pods is not None
        await self._bind(pods, rr.namespace, name, body, self._write_options(request))
        return await self._plain(request, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    async def _streaming(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        if rr.subresource == "log" and info.kind == "Pod" and self.streaming is not None and request.method == "GET":
            return await self.streaming.logs(request, info, rr.namespace, rr.name)
        if (
            rr.subresource in ("exec", "attach", "portforward")
            and info.kind == "Pod"
            and self.streaming is not None
            and request.method in ("GET", "POST")
        ):
            return await self.streaming.upgrade(request, info, rr.namespace, rr.name, rr.subresource)
        await self.registry.get(info, rr.namespace, rr.name)
        raise errors.ApiError(
            503,
            "ServiceUnavailable",
            f"{info.plural}/{rr.subresource} is not available yet: this k3py server has no kubelet streaming for {info.plural} \"{rr.name}\"",
        )

    # -- delete -----------------------------------------------------------------------------

    async def _delete_options(self, request: web.BaseRequest) -> DeleteOptions:
        body = await self._read_body(request)
        parsed = None
        if body.strip():
            parsed = await codec.decode_body_async(body, request.headers.get("Content-Type"))
        return self.delete_options(parsed, request.query)

    @staticmethod
    def delete_options(body: Any, q: Any) -> DeleteOptions:
        """DeleteOptions from a body (JSON, YAML or protobuf, already decoded) and the query."""
        opts = DeleteOptions.from_dict(body)
        grace = opts.grace_period_seconds
        if isinstance(grace, int) and not -INT64_MAX - 1 <= grace <= INT64_MAX:
            # An int64 field upstream: Go's decoder refuses the body.
            raise errors.bad_request(f"invalid gracePeriodSeconds: {grace}: value out of range")
        if "gracePeriodSeconds" in q:
            opts.grace_period_seconds = _int64(q["gracePeriodSeconds"], "gracePeriodSeconds")
        if "propagationPolicy" in q:
            opts.propagation_policy = q["propagationPolicy"]
        if "orphanDependents" in q:
            opts.orphan_dependents = _bool(q["orphanDependents"])
        opts.dry_run = opts.dry_run or _dry_run(q)
        return opts

    async def delete(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        if rr.subresource:
            raise errors.method_not_allowed()
        opts = await self._delete_options(request)
        obj, gone_now = await self.registry.delete(info, rr.namespace, rr.name, opts)
        # Upstream answers 202 only for a pending delete that asked to cascade explicitly
        # (orphanDependents=false); everything else, graceful deletes included, is 200.
        accepted = not gone_now and opts.orphan_dependents is False
        return await self._object_response(request, info, obj, 202 if accepted else 200)

    async def delete_collection(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        if "deletecollection" not in info.verbs:
            raise errors.method_not_allowed()
        opts = await self._delete_options(request)
        list_opts = ListOptions(namespace=rr.namespace, predicate=self._predicate(info, request.query))
        deleted = await self.registry.delete_collection(info, list_opts, opts)
        body = {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": {"resourceVersion": str(self.registry.cache.revision)}, "items": deleted}
        return await self._plain(request, body)

    # -- watch ------------------------------------------------------------------------------

    async def watch(self, request: web.BaseRequest, info: ResourceInfo, rr: ResourceRequest) -> web.StreamResponse:
        # Everything the request asks is checked before the 200: after it, only events follow.
        neg = codec.negotiate(request.headers.get("Accept"))
        if neg.as_kind == "Table":
            _include_object(request.query)
        elif neg.as_kind and not neg.as_kind.startswith("PartialObjectMetadata"):
            raise errors.not_acceptable(request.headers.get("Accept", ""))
        session = WatchSession(self, info, rr.namespace, rr.name, request.query)
        transport = request.transport
        session.alive = lambda: transport is not None and not transport.is_closing()
        await session.open()
        response = web.StreamResponse(status=200, headers={"Content-Type": codec.JSON, "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        encoder = _EventEncoder(self, info, neg, request.query)
        try:
            await response.prepare(request)
            async for batch in session.batches():
                out = bytearray()
                for kind, payload in batch:
                    if kind == "ERROR":
                        out += orjson.dumps({"type": "ERROR", "object": payload}) + b"\n"
                    elif kind == "BOOKMARK":
                        out += encoder.bookmark(payload[0], initial_end=payload[1])
                    else:
                        out += encoder.line(kind, payload)
                await response.write(bytes(out))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception as e:
            # The status line is out: the failure can only end the stream, as an ERROR event
            # (upstream's way), never as a second HTTP response.
            self.stream_errors.log(
                ("watch", type(e).__name__), logging.ERROR,
                "a watch of %s ended with an error: %s: %s", info.plural, type(e).__name__, e, exc_info=e,
            )  # fmt: skip
            status = errors.internal(f"{type(e).__name__}: {e}").to_status()
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await response.write(orjson.dumps({"type": "ERROR", "object": status}) + b"\n")
        finally:
            session.close()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response


def _warn(response: web.Response, opts: WriteOptions) -> web.Response:
    """Field-validation warnings as Warning headers (kubectl prints "Warning: <text>")."""
    for text in opts.warnings:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{escaped}"')
    return response


class WatchSession:
    """One watch: validation, the initial snapshot and the live events, transport-neutral.

    ``open`` checks the request and registers with the watch cache; ``batches`` then yields
    lists of ``(type, payload)``: ``("ADDED"|"MODIFIED"|"DELETED", CacheEvent)``,
    ``("BOOKMARK", (resourceVersion, initial_events_end))`` or ``("ERROR", status dict)``,
    until the timeout, the client going away, or the watcher falling behind.
    """

    def __init__(self, handler: RestHandler, info: ResourceInfo, namespace: str, name: str, query: Any) -> None:
        self.handler = handler
        self.info = info
        self.namespace = namespace
        self.name = name
        self.query = query
        self.cache = handler.registry.cache
        self.watcher: Watcher | None = None
        self.initial: list[CacheEvent] = []
        self.too_old = False
        self.start_revision = 0
        # Polled while no event arrives, so a watch whose client went away ends promptly.
        self.alive: Callable[[], bool] = lambda: True

    def _predicate(self) -> Callable[[dict[str, Any]], bool]:
        base = self.handler._predicate(self.info, self.query)
        name, namespace = self.name, self.namespace if self.info.namespaced else ""

        def predicate(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            if name and meta.get("name") != name:
                return False
            if namespace and meta.get("namespace") != namespace:
                return False
            return base is None or base(obj)

        return predicate

    async def open(self) -> None:
        q = self.query
        predicate = self._predicate()
        self.timeout = _int(q, "timeoutSeconds", DEFAULT_WATCH_TIMEOUT) or DEFAULT_WATCH_TIMEOUT
        self.bookmarks = _bool(q.get("allowWatchBookmarks"))
        self.send_initial = q.get("sendInitialEvents")
        rv = self.rv = q.get("resourceVersion", "") or ""
        cache = self.cache
        if rv not in ("", "0"):
            try:
                wanted = int(rv)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion: {rv!r}") from None
            if not await cache.wait_for(wanted, 3.0):
                raise errors.ApiError(504, "Timeout", f"Too large resource version: {wanted}, current: {cache.revision}")
        elif rv == "":
            current = await self.handler.registry.store.current_revision()
            await cache.wait_for(max(current, self.handler.registry.last_write_revision), 3.0)

        # From here to add_watcher there is no await: the snapshot and the subscription are
        # taken at the same cache revision, so no event is lost or seen twice.
        rcache = cache.cache(storage_prefix(self.info))
        want_initial = rv in ("", "0") if self.send_initial is None else _bool(self.send_initial)
        if want_initial:
            prefix = namespace_prefix(self.info, self.namespace)
            for key in sorted(rcache.objects):
                if key.startswith(prefix):
                    obj = rcache.objects[key]
                    if predicate(obj):
                        self.initial.append(CacheEvent("ADDED", key, obj, None, cache.revision))
        if rv not in ("", "0"):
            events = rcache.events_after(int(rv))
            if events is None:
                self.too_old = True
                self.floor = rcache.ring_floor
                return
            probe = Watcher(storage_prefix(self.info), predicate, asyncio.Queue())
            for event in events:
                probe.offer(event)
            while not probe.queue.empty():
                item = probe.queue.get_nowait()
                if item is not None:
                    self.initial.append(item)
        self.watcher = Watcher(storage_prefix(self.info), predicate)
        self.start_revision = cache.revision
        cache.add_watcher(self.watcher)

    async def batches(self) -> AsyncIterator[list[tuple[str, Any]]]:
        if self.too_old:
            yield [("ERROR", errors.gone(f"too old resource version: {self.rv} ({self.floor})").to_status())]
            return
        first: list[tuple[str, Any]] = [(e.type, e) for e in self.initial]
        self.initial = []
        if self.send_initial is not None and _bool(self.send_initial) and self.bookmarks:
            first.append(("BOOKMARK", (str(self.start_revision), True)))
        if first:
            yield first
        watcher = self.watcher
        assert watcher is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        next_bookmark = loop.time() + BOOKMARK_INTERVAL
        while True:
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0 or not self.alive():
                return
            try:
                async with asyncio.timeout(min(remaining, LIVENESS_INTERVAL)):
                    event = await watcher.queue.get()
            except TimeoutError:
                if self.bookmarks and loop.time() >= next_bookmark and remaining > BOOKMARK_INTERVAL:
                    next_bookmark = loop.time() + BOOKMARK_INTERVAL
                    yield [("BOOKMARK", (str(self.cache.revision), False))]
                continue
            if event is None:
                return  # the watcher fell behind; the client re-lists
            batch: list[tuple[str, Any]] = [(event.type, event)]
            while not watcher.queue.empty():
                more = watcher.queue.get_nowait()
                if more is None:
                    yield batch
                    return
                batch.append((more.type, more))
            yield batch

    def close(self) -> None:
        if self.watcher is not None:
            self.cache.remove_watcher(self.watcher)
            self.watcher = None


class _EventEncoder:
    """Encodes watch events for one watch's negotiated format."""

    def __init__(self, handler: RestHandler, info: ResourceInfo, neg: codec.Negotiated, query: Any) -> None:
        self.handler = handler
        self.info = info
        self.neg = neg
        self.query = query
        self.first = True

    def _object(self, event: CacheEvent) -> dict[str, Any]:
        obj = self.handler.registry._out(self.info, event.obj)
        if self.neg.as_kind == "Table":
            table = self.handler._table(
                self.info, [obj], self.neg, self.query, obj["metadata"].get("resourceVersion", ""), columns=self.first
            )
            self.first = False
            return table
        if self.neg.as_kind.startswith("PartialObjectMetadata"):
            return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{self.neg.as_version}", "metadata": obj.get("metadata", {})}
        return obj

    def line(self, kind: str, event: CacheEvent) -> bytes:
        if not self.neg.as_kind and event.obj.get("apiVersion") == self.info.api_version and kind == event.type:
            return b'{"type":"' + kind.encode() + b'","object":' + event.json() + b"}\n"
        return orjson.dumps({"type": kind, "object": self._object(event)}) + b"\n"

    def bookmark(self, rv: str, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": rv}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": meta}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def _get_path(obj: Any, path: str) -> Any:
    """The value at a simple JSON path such as ``.spec.replicas`` (None when absent)."""
    for key in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    keys = path.strip(".").split(".")
    for key in keys[:-1]:
        obj = section(obj, key)
    obj[keys[-1]] = value


def _patch_error(e: Exception) -> errors.ApiError:
    """A PatchError as the Status upstream answers (409 apply conflicts carry their causes)."""
    code = getattr(e, "code", 422)
    if code == 409:
        causes = e.causes() if hasattr(e, "causes") else []
        return errors.ApiError(409, "Conflict", str(e), {"causes": causes})
    if code == 400:
        return errors.bad_request(str(e))
    if code == 413:
        return errors.request_entity_too_large(f"Request entity too large: {e}")
    return errors.ApiError(422, "Invalid", str(e))


def _copies(patch_doc: Any) -> bool:
    """Whether a JSON patch has copy operations (each may grow the object: applied off the loop)."""
    return isinstance(patch_doc, list) and any(isinstance(op, dict) and op.get("op") == "copy" for op in patch_doc)


def _off_loop(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """A patch function run on the heavy-work pool (its argument is a private copy)."""

    async def run(current: dict[str, Any]) -> dict[str, Any]:
        return await run_heavy(fn, current)

    return run
