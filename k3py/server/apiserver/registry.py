"""The generic registry: Kubernetes object semantics over the store, for every kind.

One implementation serves built-in kinds and CRDs alike; what differs per kind is in
``strategies``. The registry owns the server-set metadata (uid, creationTimestamp,
resourceVersion = store revision, generation), optimistic concurrency (compare-and-swap on the
store's mod revision, 409 Conflict with upstream's wording), finalizers and graceful deletion,
namespaces' existence, defaulting and validation, dry runs, and Service address allocation.

Reads are served from the watch cache whenever the cache provably holds every write this
process acknowledged (``last_write_revision``); otherwise they fall through to the store, so a
client always reads its own writes. Stored values are the object's JSON without
``metadata.resourceVersion`` (the revision is the version, as in etcd).

Store keys: ``/registry/<group or "core">/<plural>/<namespace>/<name>`` for namespaced kinds,
``/registry/<group or "core">/<plural>/<name>`` for cluster-scoped ones.
"""

from __future__ import annotations

import base64
import binascii
import copy
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from k3py.api import errors
from k3py.api import meta as objmeta
from k3py.api.apply import track_update
from k3py.api.conversion import convert_object
from k3py.api.resources import BUILTIN_GROUP_ORDER, ResourceInfo, ResourceTable
from k3py.server.apiserver import strategies
from k3py.server.apiserver.allocators import ServiceAllocator
from k3py.server.apiserver.fieldcheck import strict_error_message, unknown_fields
from k3py.server.apiserver.offload import run_heavy
from k3py.server.apiserver.priority import PriorityAdmission
from k3py.server.apiserver.semantics import (
    apply_defaults,
    type_causes,
    validate_name,
    validate_object,
)
from k3py.server.apiserver.watchcache import WatchCache, decode_value
from k3py.store import KeyExistsError, Store, ValueTooLargeError
from k3py.store.types import CompactedError, FutureRevisionError

log = logging.getLogger("k3py.apiserver.registry")

# How long a consistent read waits for the watch cache before reading the store instead.
CACHE_CATCH_UP_SECONDS = 0.25
# Unconditional updates and patches retry this often when a concurrent writer wins the race.
MAX_UPDATE_RETRIES = 32
# An update of a stored object larger than this (as JSON) walks it off the event loop.
HEAVY_OBJECT_BYTES = 64 * 1024


def storage_prefix(info: ResourceInfo) -> str:
    return f"/registry/{info.storage_group or 'core'}/{info.storage_plural}/"


def object_key(info: ResourceInfo, namespace: str, name: str) -> str:
    if info.namespaced:
        return f"{storage_prefix(info)}{namespace}/{name}"
    return f"{storage_prefix(info)}{name}"


def namespace_prefix(info: ResourceInfo, namespace: str) -> str:
    """Key prefix of a LIST: one namespace, or everything when namespace is empty."""
    if info.namespaced and namespace:
        return f"{storage_prefix(info)}{namespace}/"
    return storage_prefix(info)


@dataclass
class ListResult:
    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = ""  # "", "Ignore", "Warn" or "Strict" ("" checks nothing)
    duplicate_fields: list[str] = field(default_factory=list)  # found while decoding the body
    warnings: list[str] = field(default_factory=list)  # filled in: sent as Warning headers
    force: bool = False  # server-side apply: take over fields other managers own
    applied: bool = False  # the write is a server-side apply (it maintains managedFields itself)
    # A large write (the API server sets it from the body's size): the walks over the whole
    # object — field checks, managedFields, defaulting, validation — run off the event loop.
    # Updates of a large stored object (HEAVY_OBJECT_BYTES) are treated the same way.
    heavy: bool = False


@dataclass
class DeleteOptions:
    propagation_policy: str | None = None
    grace_period_seconds: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False
    orphan_dependents: bool | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> DeleteOptions:
        if not body:
            return cls()
        if not isinstance(body, dict):
            raise errors.bad_request("DeleteOptions must be an object")
        pre = body.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise errors.bad_request(_decode_error("DeleteOptions.preconditions", pre, "v1.Preconditions"))
        grace = body.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            raise errors.bad_request(_decode_error("DeleteOptions.gracePeriodSeconds", grace, "int64"))
        policy = body.get("propagationPolicy")
        if policy is not None and not isinstance(policy, str):
            raise errors.bad_request(_decode_error("DeleteOptions.propagationPolicy", policy, "v1.DeletionPropagation"))
        dry = body.get("dryRun") or []
        if not isinstance(dry, list):
            raise errors.bad_request(_decode_error("DeleteOptions.dryRun", dry, "[]string"))
        return cls(
            propagation_policy=body.get("propagationPolicy"),
            grace_period_seconds=grace,
            precondition_uid=pre.get("uid"),
            precondition_rv=pre.get("resourceVersion"),
            dry_run="All" in dry,
            orphan_dependents=body.get("orphanDependents"),
        )


@dataclass
class ListOptions:
    namespace: str = ""
    predicate: Callable[[dict[str, Any]], bool] | None = None
    limit: int = 0
    continue_token: str | None = None
    resource_version: str = ""
    resource_version_match: str = ""


@dataclass
class _Continue:
    revision: int
    start_after: str


def encode_continue(revision: int, last_key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": "k3py/1", "rv": revision, "start": last_key})).decode()


def decode_continue(token: str) -> _Continue:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return _Continue(int(data["rv"]), str(data["start"]))
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise errors.bad_request("invalid continue token") from None


def _encode(obj: dict[str, Any]) -> bytes:
    """The stored form: the object without resourceVersion (the store revision is the version)."""
    meta = obj["metadata"]
    if "resourceVersion" in meta:
        meta = {k: v for k, v in meta.items() if k != "resourceVersion"}
        return orjson.dumps({**obj, "metadata": meta})
    return orjson.dumps(obj)


def _with_rv(obj: dict[str, Any], revision: int) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


class _Frozen:
    """An object held as its JSON, so every attempt of an update can thaw a private copy.

    Decoding JSON is several times cheaper than ``copy.deepcopy``; ``revision`` (when set) is
    stamped as ``metadata.resourceVersion`` on each copy, as for a value read from the store.
    """

    __slots__ = ("data", "revision")

    def __init__(self, data: bytes, revision: int = 0) -> None:
        self.data = data
        self.revision = revision

    def thaw(self) -> Any:
        if self.revision:
            return decode_value(self.data, self.revision)
        return orjson.loads(self.data)


class _DeepCopied(_Frozen):
    """The fallback for a body JSON cannot carry exactly (an integer beyond 64 bits)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        super().__init__(b"")
        self.obj = copy.deepcopy(obj)

    def thaw(self) -> Any:
        return copy.deepcopy(self.obj)


def _frozen(obj: Any) -> _Frozen:
    try:
        return _Frozen(orjson.dumps(obj))
    except TypeError:  # orjson.JSONEncodeError: not representable, copy the slow way
        return _DeepCopied(obj)


_JSON_TYPE_NAMES = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}
_META_STRINGS = ("name", "generateName", "namespace", "resourceVersion", "uid", "creationTimestamp", "deletionTimestamp")


def _decode_error(field_path: str, value: Any, go_type: str) -> str:
    """Upstream's wording when a JSON value cannot become the Go field it is meant for."""
    got = _JSON_TYPE_NAMES.get(type(value), "value")
    return f"json: cannot unmarshal {got} into Go struct field {field_path} of type {go_type}"


def _check_meta_types(meta: dict[str, Any]) -> None:
    """The metadata fields the server itself reads must have their JSON types."""
    for name in _META_STRINGS:
        value = meta.get(name)
        if value is not None and not isinstance(value, str):
            raise errors.bad_request(_decode_error(f"ObjectMeta.metadata.{name}", value, "string"))
    for name in ("labels", "annotations"):
        value = meta.get(name)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise errors.bad_request(_decode_error(f"ObjectMeta.metadata.{name}", value, "map[string]string"))
    for name in ("finalizers", "ownerReferences", "managedFields"):
        value = meta.get(name)
        if value is None:
            continue
        item_type = str if name == "finalizers" else dict
        if not isinstance(value, list) or not all(isinstance(v, item_type) for v in value):
            go = "[]string" if name == "finalizers" else f"[]v1.{name[0].upper()}{name[1:-1]}"
            raise errors.bad_request(_decode_error(f"ObjectMeta.metadata.{name}", value, go))


def _parse_rv(text: str, what: str = "resourceVersion") -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise errors.bad_request(f"invalid {what}: {text!r}") from None
    if value < 0:
        raise errors.bad_request(f"invalid {what}: {text!r}")
    return value


class Registry:
    """Create, read, update and delete of every kind, with Kubernetes' semantics."""

    def __init__(self, store: Store, cache: WatchCache, table: ResourceTable) -> None:
        self.store = store
        self.cache = cache
        self.table = table
        self.allocator = ServiceAllocator(self)
        self.priority = PriorityAdmission(cache, "/registry/scheduling.k8s.io/priorityclasses/")
        self.last_write_revision = 0
        # Hooks run after a successful write: (info, old object or None, new object or None).
        self.after_write: list[Callable[[ResourceInfo, dict | None, dict | None], Awaitable[None] | None]] = []

    # -- helpers ----------------------------------------------------------------------------

    def _wrote(self, revision: int) -> None:
        if revision > self.last_write_revision:
            self.last_write_revision = revision

    async def _cache_is_current(self) -> bool:
        """Whether a read from the cache is as fresh as a read from the store.

        The store's current revision covers writes by other servers sharing the database
        (PostgreSQL); with SQLite it is an in-memory number, so the check costs nothing.
        """
        wanted = max(self.last_write_revision, await self.store.current_revision())
        if self.cache.revision >= wanted:
            return True
        return await self.cache.wait_for(wanted, CACHE_CATCH_UP_SECONDS)

    def _out(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as this resource's version shows it (converted when stored in another)."""
        if obj.get("apiVersion") != info.api_version or obj.get("kind") != info.kind:
            return convert_object(obj, info)
        return obj

    def _cached_object(self, info: ResourceInfo, key: str) -> _Frozen | None:
        """The watch cache's copy of the object at ``key`` (possibly a little stale), or None."""
        rcache = self.cache.caches.get(storage_prefix(info))
        obj = rcache.objects.get(key) if rcache is not None else None
        if obj is None:
            return None
        try:
            return _Frozen(orjson.dumps(obj), int(obj["metadata"]["resourceVersion"]))
        except (TypeError, ValueError, KeyError):
            return None

    async def _read_store(self, key: str) -> tuple[dict[str, Any], int] | None:
        kv = await self.store.get(key)
        if kv is None:
            return None
        return decode_value(kv.value, kv.mod_revision), kv.mod_revision

    async def _require_namespace(self, info: ResourceInfo, namespace: str, creating: bool) -> None:
        if not info.namespaced:
            return
        ns_info = self.table.lookup("", "v1", "namespaces")
        assert ns_info is not None
        key = object_key(ns_info, "", namespace)
        ns = self.cache.cache(storage_prefix(ns_info)).objects.get(key)
        if ns is None:
            found = await self._read_store(key)
            ns = found[0] if found else None
        if ns is None:
            raise errors.not_found("namespaces", namespace)
        if creating and ns.get("status", {}).get("phase") == "Terminating":
            raise errors.ApiError(
                403,
                "Forbidden",
                f'{info.plural}{"." + info.group if info.group else ""} is forbidden: unable to create new content in namespace {namespace} because it is being terminated',
                {"name": "", "group": info.group, "kind": info.plural, "causes": [{"reason": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated", "field": "metadata.namespace"}]},
            )

    def _check_type(self, info: ResourceInfo, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise errors.bad_request(f"the body of the request must be a {info.kind} object")
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version is not None and api_version != info.api_version:
            # Another served version of the same stored resource is accepted as that version.
            other = self._version_of(info, api_version, kind)
            if other is None:
                raise errors.bad_request(
                    f"the API version in the data ({api_version}) does not match the expected API version ({info.api_version})"
                )
        if kind is not None and kind != info.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({info.kind})"
            )
        obj["apiVersion"] = info.api_version
        obj["kind"] = info.kind
        meta = obj.get("metadata")
        if meta is None:
            obj["metadata"] = {}
        elif not isinstance(meta, dict):
            raise errors.bad_request(_decode_error("metadata", meta, "ObjectMeta"))
        else:
            _check_meta_types(meta)
        return obj

    def _version_of(self, info: ResourceInfo, api_version: str, kind: Any) -> ResourceInfo | None:
        group, _, version = api_version.rpartition("/")
        if group != info.group:
            return None
        other = self.table.by_kind(group, version, str(kind or info.kind))
        if other is not None and storage_prefix(other) == storage_prefix(info):
            return other
        return None

    def _check_namespace(self, info: ResourceInfo, obj: dict[str, Any], namespace: str) -> None:
        meta = obj["metadata"]
        if info.namespaced:
            given = meta.get("namespace")
            if given and given != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    def crd_version(self, info: ResourceInfo) -> dict[str, Any]:
        """The CRD's spec.versions entry serving this custom resource version ({} if none)."""
        if info.group in BUILTIN_GROUP_ORDER:
            return {}
        crds = self.table.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        if crds is None:
            return {}
        crd = self.cache.cache(storage_prefix(crds)).objects.get(
            object_key(crds, "", f"{info.plural}.{info.group}")
        )
        for version in ((crd or {}).get("spec") or {}).get("versions") or ():
            if isinstance(version, dict) and version.get("name") == info.version:
                return version
        return {}

    def _crd_schema(self, info: ResourceInfo) -> dict[str, Any] | None:
        """The openAPIV3Schema a CRD declares for this version ({} when it declares none)."""
        schema = (self.crd_version(info).get("schema") or {}).get("openAPIV3Schema")
        return schema if isinstance(schema, dict) else {}

    def _check_fields(self, info: ResourceInfo, obj: dict[str, Any], opts: WriteOptions) -> None:
        """fieldValidation: unknown and duplicate fields are an error (Strict) or a warning."""
        if opts.field_validation not in ("Strict", "Warn"):
            # Not asked for (kubectl always asks): skip the walk, it is a good part of a write.
            return
        if info.group in BUILTIN_GROUP_ORDER:
            unknown = unknown_fields(info, obj)
        else:
            schema = self._crd_schema(info)
            unknown = unknown_fields(info, obj, schema) if schema else []
        duplicates = opts.duplicate_fields
        if not unknown and not duplicates:
            return
        if opts.field_validation == "Strict":
            raise errors.bad_request(strict_error_message(info, unknown, duplicates))
        opts.warnings.extend(f'unknown field "{p}"' for p in unknown)
        opts.warnings.extend(f'duplicate field "{d}"' for d in duplicates)
        opts.duplicate_fields = []

    async def _check_fields_off_loop(self, info: ResourceInfo, obj: dict[str, Any], opts: WriteOptions) -> None:
        """``_check_fields``, on the heavy-work pool for a large write."""
        if opts.heavy and opts.field_validation in ("Strict", "Warn"):
            await run_heavy(self._check_fields, info, obj, opts)
        else:
            self._check_fields(info, obj, opts)

    async def _track_and_validate(
        self,
        info: ResourceInfo,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        opts: WriteOptions,
        subresource: str,
        heavy: bool,
    ) -> None:
        """managedFields, then defaulting and validation; on the heavy-work pool for a large
        write (``old`` and ``new`` are this write's own copies)."""
        if heavy:
            await run_heavy(self._track_and_validate_now, info, old, new, opts, subresource)
        else:
            self._track_and_validate_now(info, old, new, opts, subresource)

    def _track_and_validate_now(
        self, info: ResourceInfo, old: dict[str, Any] | None, new: dict[str, Any], opts: WriteOptions, subresource: str
    ) -> None:
        self._track(info, old, new, opts, subresource)
        self._default_and_validate(info, new, old)

    def _track(
        self, info: ResourceInfo, old: dict[str, Any] | None, new: dict[str, Any], opts: WriteOptions, subresource: str
    ) -> None:
        """managedFields: the named field manager now owns the fields this write set."""
        if not opts.field_manager or opts.applied or subresource in ("finalize", "bind"):
            return
        schema = self._crd_schema(info) if info.group not in BUILTIN_GROUP_ORDER else None
        track_update(
            old, new, opts.field_manager, group=info.group, version=info.version, kind=info.kind,
            now=objmeta.now_rfc3339(), subresource=subresource, schema=schema or None,
        )  # fmt: skip

    def _default_and_validate(self, info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Defaulting, then validation; values of the wrong JSON type are refused first, alone.

        The type walk is done once here rather than by both steps. On an update, parts of
        ``obj`` that are the stored object's own (a status write keeps the stored spec and
        metadata values) were checked when stored and are not walked again.
        """
        causes = type_causes(info, obj, old)
        if not causes:
            apply_defaults(info, obj, structure_checked=True)
            causes = validate_object(info, obj, old, types_checked=True)
        if causes:
            raise errors.invalid(info.kind, obj["metadata"].get("name", ""), causes, info.group)

    async def _notify(self, info: ResourceInfo, old: dict | None, new: dict | None) -> None:
        for hook in self.after_write:
            result = hook(info, old, new)
            if result is not None:
                await result

    # -- reads ------------------------------------------------------------------------------

    async def get(self, info: ResourceInfo, namespace: str, name: str) -> dict[str, Any]:
        key = object_key(info, namespace, name)
        if await self._cache_is_current():
            obj = self.cache.cache(storage_prefix(info)).objects.get(key)
        else:
            found = await self._read_store(key)
            obj = found[0] if found else None
        if obj is None:
            raise errors.not_found(info.plural, name, info.group)
        return self._out(info, obj)

    def json_of(self, info: ResourceInfo, namespace: str, name: str, obj: dict[str, Any]) -> bytes:
        """``obj`` (as ``get`` returned it) as JSON; the cached object's bytes are made once per
        revision and reused by every GET of it."""
        rcache = self.cache.caches.get(storage_prefix(info))
        if rcache is None:
            return orjson.dumps(obj)
        return rcache.json_of(object_key(info, namespace, name), obj)

    async def list(self, info: ResourceInfo, opts: ListOptions) -> ListResult:
        prefix = namespace_prefix(info, opts.namespace)
        start_after = ""
        if opts.continue_token:
            cont = decode_continue(opts.continue_token)
            start_after = cont.start_after
            if not start_after.startswith(prefix):
                raise errors.bad_request("invalid continue token")
        rv = opts.resource_version
        if opts.continue_token:
            # A continued list reads the same snapshot as its first page, like upstream.
            return await self._list_store(info, prefix, opts, cont.revision, start_after)
        if opts.resource_version_match == "Exact" and rv not in ("", "0"):
            return await self._list_store(info, prefix, opts, _parse_rv(rv), start_after)
        if opts.resource_version_match not in ("", "Exact", "NotOlderThan"):
            raise errors.bad_request(
                f'resourceVersionMatch: Unsupported value: "{opts.resource_version_match}": supported values: "Exact", "NotOlderThan"'
            )
        if rv == "":
            # A consistent read: the cache must hold the store's current revision.
            current = await self.store.current_revision()
            if not await self.cache.wait_for(max(current, self.last_write_revision), 3.0):
                return await self._list_store(info, prefix, opts, None, start_after)
        elif rv != "0":
            wanted = _parse_rv(rv)
            if not await self.cache.wait_for(wanted, 3.0):
                raise errors.ApiError(
                    504,
                    "Timeout",
                    f"Too large resource version: {wanted}, current: {self.cache.revision}",
                    {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1},
                )
        revision = self.cache.revision
        rcache = self.cache.cache(storage_prefix(info))
        keys = sorted(k for k in rcache.objects if k.startswith(prefix) and k > start_after)
        predicate = opts.predicate
        items: list[dict[str, Any]] = []
        token = None
        remaining = None
        for i, key in enumerate(keys):
            obj = rcache.objects[key]
            if predicate is not None and not predicate(obj):
                continue
            items.append(self._out(info, obj))
            if opts.limit and len(items) >= opts.limit:
                if i + 1 < len(keys):
                    token = encode_continue(revision, key)
                    remaining = len(keys) - i - 1 if predicate is None else None
                break
        return ListResult(items, str(revision), token, remaining)

    async def _list_store(
        self, info: ResourceInfo, prefix: str, opts: ListOptions, revision: int | None, start_after: str
    ) -> ListResult:
        items: list[dict[str, Any]] = []
        token: str | None = None
        store_token: str | None = None
        try:
            while True:
                page = await self.store.list(prefix, revision=revision, limit=max(opts.limit, 500), continue_token=store_token)
                revision = page.revision
                for index, kv in enumerate(page.items):
                    if kv.key <= start_after:
                        continue
                    obj = decode_value(kv.value, kv.mod_revision)
                    if opts.predicate is not None and not opts.predicate(obj):
                        continue
                    items.append(self._out(info, obj))
                    if opts.limit and len(items) >= opts.limit:
                        more = index + 1 < len(page.items) or bool(page.continue_token)
                        token = encode_continue(revision, kv.key) if more else None
                        return ListResult(items, str(revision or 0), token)
                if not page.continue_token:
                    break
                store_token = page.continue_token
        except CompactedError as e:
            raise errors.gone(f"too old resource version: {e.requested} ({e.compact_revision})") from None
        except FutureRevisionError as e:
            raise errors.ApiError(504, "Timeout", f"Too large resource version: {e.requested}, current: {e.current}") from None
        return ListResult(items, str(revision or 0), token)

    # -- create -----------------------------------------------------------------------------

    async def create(
        self, info: ResourceInfo, namespace: str, obj: Any, opts: WriteOptions
    ) -> dict[str, Any]:
        obj = self._check_type(info, obj)
        await self._check_fields_off_loop(info, obj, opts)
        self._check_namespace(info, obj, namespace)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise errors.invalid(
                    info.kind, "",
                    [{"field": "metadata.name", "reason": "FieldValueRequired", "message": "Required value: name or generateName is required"}],
                    info.group,
                )  # fmt: skip
        for attempt in range(8):
            if not name or attempt:
                if not meta.get("generateName"):
                    break
                meta["name"] = objmeta.generate_name(meta["generateName"])
            problems = validate_name(info, meta["name"])
            if problems:
                raise errors.invalid(
                    info.kind, meta["name"],
                    [{"field": "metadata.name", "reason": "FieldValueInvalid", "message": f'Invalid value: "{meta["name"]}": {"; ".join(problems)}'}],
                    info.group,
                )  # fmt: skip
            try:
                return await self._create_once(info, namespace, obj, opts)
            except errors.ApiError as e:
                # A generated name that collides is retried with a fresh suffix.
                if e.reason != "AlreadyExists" or name:
                    raise
        raise errors.already_exists(info.plural, meta.get("name", ""), info.group)

    async def _create_once(
        self, info: ResourceInfo, namespace: str, obj: dict[str, Any], opts: WriteOptions
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        await self._require_namespace(info, namespace, creating=True)
        for owned in objmeta.SERVER_OWNED_META:
            meta.pop(owned, None)
        meta["uid"] = objmeta.new_uid()
        meta["creationTimestamp"] = objmeta.now_rfc3339()
        if strategies.tracks_generation(info):
            meta["generation"] = 1
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        strategies.prepare_for_create(info, obj)
        self.priority.admit(info, obj)  # upstream's Priority admission plugin
        await self._track_and_validate(info, None, obj, opts, "", opts.heavy)
        # The store decides whether the name is taken: the cache may not have seen a delete yet.
        key = object_key(info, namespace, meta["name"])
        release = await self.allocator.allocate(info, obj, None, opts.dry_run)
        try:
            if opts.dry_run:
                return obj
            try:
                kv = await self.store.create(key, _encode(obj), ttl=strategies.ttl_seconds(info))
            except KeyExistsError:
                raise errors.already_exists(info.plural, meta["name"], info.group) from None
            except ValueTooLargeError:
                raise errors.request_entity_too_large("etcdserver: request is too large") from None
        except BaseException:
            release()
            raise
        self.allocator.committed(release, kv.mod_revision)
        self._wrote(kv.mod_revision)
        _with_rv(obj, kv.mod_revision)
        await self._notify(info, None, obj)
        return obj

    # -- update -----------------------------------------------------------------------------

    async def update(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        obj: Any,
        opts: WriteOptions,
        subresource: str = "",
    ) -> dict[str, Any]:
        """PUT: replace the object (or its status) under optimistic concurrency.

        ``obj`` itself is never changed: every attempt works on its own copy, decoded from the
        body encoded once here (the in-process transport relies on this to skip a copy).
        """
        if not isinstance(obj, dict):
            self._check_type(info, obj)  # raises: not an object
        body = _frozen(obj)
        first = [body.thaw()]
        obj = self._check_type(info, first[0])
        self._check_namespace(info, obj, namespace)
        given_name = obj["metadata"].get("name")
        if given_name != name:
            raise errors.bad_request(
                f"the name of the object ({given_name or ''}) does not match the name on the URL ({name})"
            )
        given_rv = obj["metadata"].get("resourceVersion") or ""

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            return first.pop() if first else body.thaw()

        return await self.guaranteed_update(
            info, namespace, name, mutate, opts, subresource, given_rv, mutate_reads_current=False
        )

    async def guaranteed_update(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]],
        opts: WriteOptions,
        subresource: str = "",
        precondition_rv: str = "",
        *,
        mutate_reads_current: bool = True,
    ) -> dict[str, Any]:
        """Read, mutate, compare-and-swap; retried while no resourceVersion was demanded.

        ``mutate`` gets a private copy of the current object and returns the desired one (or an
        awaitable of it: the API server applies large patches off the event loop); it runs
        again on every retry, so it must be a pure function of the object it is given.
        ``precondition_rv`` is the resourceVersion the client sent (PUT): a lost race is then a
        409. Otherwise (patches, /scale writes, the server's own updates) the write is retried
        on the newer object, as upstream's GuaranteedUpdate does; the desired object's own
        resourceVersion is still compared with each fresh read, so a patch that sets one is a
        precondition that holds only as long as nobody else wrote.

        The first attempt starts from the watch cache's copy of the object when it has one (no
        store read), as upstream starts from its cached existing object. That copy may be a
        little behind the store, so it never decides an outcome on its own: a lost
        compare-and-swap, an error, a failed precondition or a no-op found on it is re-done
        from a fresh store read. ``mutate_reads_current=False`` says ``mutate`` ignores its
        argument (a PUT body replaces the object), which saves making its private copy.
        """
        key = object_key(info, namespace, name)
        cached = None if opts.dry_run else self._cached_object(info, key)
        fields_checked = False
        for _attempt in range(MAX_UPDATE_RETRIES):
            from_cache = cached is not None
            if cached is not None:
                source, cached = cached, None
            else:
                kv = await self.store.get(key)
                if kv is None:
                    raise errors.not_found(info.plural, name, info.group)
                source = _Frozen(kv.value, kv.mod_revision)
            current_rev = source.revision
            current = self._out(info, source.thaw())
            try:
                desired = mutate(self._out(info, source.thaw()) if mutate_reads_current else {})
                if inspect.isawaitable(desired):
                    desired = await desired
                desired = self._check_type(info, desired)
                if not fields_checked:
                    await self._check_fields_off_loop(info, desired, opts)
                    fields_checked = True
                self._check_namespace(info, desired, namespace)
                wanted_rv = precondition_rv or desired["metadata"].get("resourceVersion") or ""
                if wanted_rv and wanted_rv != str(current_rev):
                    _parse_rv(wanted_rv)
                    raise errors.conflict(info.plural, name, info.group)
                if desired["metadata"].get("name", name) != name:
                    raise errors.bad_request(
                        f"the name of the object ({desired['metadata'].get('name')}) does not match the name on the URL ({name})"
                    )
                new = self._prepare_update(info, desired, current, subresource)
                if new == current:
                    if from_cache:
                        continue  # a no-op only counts against the store's current object
                    return current  # a no-op write keeps the resourceVersion, as upstream
                heavy = opts.heavy or len(source.data) > HEAVY_OBJECT_BYTES
                await self._track_and_validate(info, current, new, opts, subresource, heavy)
                release = await self.allocator.allocate(info, new, current, opts.dry_run)
            except errors.ApiError:
                if from_cache:
                    continue  # perhaps only the cached copy's staleness: decide on the store's
                raise
            try:
                deleting = self._finalized(info, new)
                if opts.dry_run:
                    return new
                if deleting:
                    result = await self.store.delete(key, current_rev)
                else:
                    result = await self.store.update(key, _encode(new), current_rev, ttl=strategies.ttl_seconds(info))
            except ValueTooLargeError:
                release()
                raise errors.request_entity_too_large("etcdserver: request is too large") from None
            except BaseException:
                release()
                raise
            if not result.succeeded:
                release()
                if from_cache:
                    continue  # the cached copy was behind: start again from the store
                # Only a resourceVersion the client demanded turns a lost race into a 409. A
                # patch applied to the current object carries that object's version without the
                # client having asked for it: mutate runs again on the fresh object, and a
                # version the patch itself set is checked against it at the top of the loop.
                if precondition_rv:
                    raise errors.conflict(info.plural, name, info.group)
                if result.kv is None:
                    raise errors.not_found(info.plural, name, info.group)
                continue
            self.allocator.committed(release, result.revision)
            self._wrote(result.revision)
            _with_rv(new, result.revision)
            await self._notify(info, current, None if deleting else new)
            return new
        raise errors.conflict(info.plural, name, info.group)

    @staticmethod
    def _finalized(info: ResourceInfo, obj: dict[str, Any]) -> bool:
        """A deleting object whose last finalizer is gone: the update becomes the delete."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if info.kind == "Namespace" and info.group == "":
            return not (obj.get("spec") or {}).get("finalizers")
        return True

    def _prepare_update(
        self, info: ResourceInfo, desired: dict[str, Any], current: dict[str, Any], subresource: str
    ) -> dict[str, Any]:
        cur_meta = current["metadata"]
        if subresource == "status":
            new = strategies.status_update(desired, current)
        elif subresource == "finalize" and info.kind == "Namespace":
            new = {**current, "metadata": dict(cur_meta), "spec": {**current.get("spec", {}), "finalizers": (desired.get("spec") or {}).get("finalizers") or []}}
        else:
            new = desired
            if subresource != "bind":  # a binding writes spec.nodeName and status together
                strategies.prepare_for_update(info, new, current)
                self.priority.admit_update(info, new, current)
            meta = new["metadata"]
            # Fields only the server sets keep their stored values.
            for owned in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if owned in cur_meta:
                    meta[owned] = cur_meta[owned]
                else:
                    meta.pop(owned, None)
            if not meta.get("finalizers"):
                meta.pop("finalizers", None)
            if cur_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or ()) - set(cur_meta.get("finalizers") or ())
                if added:
                    raise errors.invalid(
                        info.kind, cur_meta.get("name", ""),
                        [{"field": "metadata.finalizers", "reason": "FieldValueForbidden", "message": "Forbidden: no new finalizers can be added if the object is being deleted"}],
                        info.group,
                    )  # fmt: skip
            if strategies.tracks_generation(info) and objmeta.spec_changed(current, new):
                meta["generation"] = int(cur_meta.get("generation") or 1) + 1
        new["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]
        if not new["metadata"].get("managedFields") and cur_meta.get("managedFields"):
            new["metadata"]["managedFields"] = cur_meta["managedFields"]
        return new

    # -- delete -----------------------------------------------------------------------------

    async def delete(
        self, info: ResourceInfo, namespace: str, name: str, options: DeleteOptions
    ) -> tuple[dict[str, Any], bool]:
        """Delete (or start deleting) an object; returns (object, gone_now)."""
        key = object_key(info, namespace, name)
        for _attempt in range(MAX_UPDATE_RETRIES):
            found = await self._read_store(key)
            if found is None:
                raise errors.not_found(info.plural, name, info.group)
            current, current_rev = found
            current = self._out(info, current)
            meta = current["metadata"]
            if options.precondition_uid and options.precondition_uid != meta.get("uid"):
                raise errors.conflict(
                    info.plural, name, info.group,
                    f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in object meta: {meta.get('uid', '')}",
                )  # fmt: skip
            if options.precondition_rv and options.precondition_rv != meta.get("resourceVersion"):
                raise errors.conflict(
                    info.plural, name, info.group,
                    f"Precondition failed: ResourceVersion in precondition: {options.precondition_rv}, ResourceVersion in object meta: {meta.get('resourceVersion', '')}",
                )  # fmt: skip
            new = self._deletion_state(info, current, options)
            if options.dry_run:
                return (new or current), new is None
            if new is None:
                result = await self.store.delete(key, current_rev)
                if not result.succeeded:
                    continue
                self._wrote(result.revision)
                self.allocator.released(current)
                out = {**current, "metadata": {**meta, "resourceVersion": str(result.revision)}}
                await self._notify(info, current, None)
                return out, True
            if new == current:
                return current, False
            result = await self.store.update(key, _encode(new), current_rev)
            if not result.succeeded:
                continue
            self._wrote(result.revision)
            _with_rv(new, result.revision)
            await self._notify(info, current, new)
            return new, False
        raise errors.conflict(info.plural, name, info.group)

    def _deletion_state(
        self, info: ResourceInfo, current: dict[str, Any], options: DeleteOptions
    ) -> dict[str, Any] | None:
        """The object marked for deletion, or None when it can go right away."""
        meta = current["metadata"]
        finalizers = list(meta.get("finalizers") or ())
        policy = options.propagation_policy
        if policy is None and options.orphan_dependents is not None:
            policy = "Orphan" if options.orphan_dependents else "Background"
        if policy not in (None, "Orphan", "Foreground", "Background"):
            raise errors.bad_request(
                f'propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"'
            )
        already_deleting = bool(meta.get("deletionTimestamp"))
        if policy == "Orphan" and "orphan" not in finalizers and not already_deleting:
            finalizers.append("orphan")
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers and not already_deleting:
            finalizers.append("foregroundDeletion")
        spec_finalizers = []
        if info.kind == "Namespace" and info.group == "":
            spec_finalizers = list((current.get("spec") or {}).get("finalizers") or ())
        grace = self._grace_period(info, current, options)
        if not finalizers and not spec_finalizers and not grace:
            return None
        now = datetime.now(UTC)
        new = {**current, "metadata": dict(meta)}
        new_meta = new["metadata"]
        if finalizers:
            new_meta["finalizers"] = finalizers
        if not already_deleting:
            new_meta["deletionTimestamp"] = objmeta.now_rfc3339(now + timedelta(seconds=grace or 0))
            new_meta["deletionGracePeriodSeconds"] = grace or 0
        elif grace is not None and grace < int(meta.get("deletionGracePeriodSeconds") or 0):
            new_meta["deletionTimestamp"] = objmeta.now_rfc3339(now + timedelta(seconds=grace))
            new_meta["deletionGracePeriodSeconds"] = grace
        if info.kind == "Namespace" and info.group == "":
            new["status"] = {**(current.get("status") or {}), "phase": "Terminating"}
        if (
            already_deleting
            and not finalizers
            and not spec_finalizers
            and not grace
        ):
            return None
        return new

    def _grace_period(self, info: ResourceInfo, current: dict[str, Any], options: DeleteOptions) -> int:
        """Only Pods bound to a node die gracefully (their kubelet finishes the deletion)."""
        if not (info.kind == "Pod" and info.group == ""):
            return 0
        spec = current.get("spec") or {}
        if not spec.get("nodeName"):
            return 0
        phase = (current.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return 0
        if options.grace_period_seconds is not None:
            return max(0, options.grace_period_seconds)
        default = spec.get("terminationGracePeriodSeconds")
        return int(default) if isinstance(default, int) else 30

    async def delete_collection(
        self, info: ResourceInfo, list_opts: ListOptions, options: DeleteOptions
    ) -> list[dict[str, Any]]:
        listed = await self.list(info, ListOptions(namespace=list_opts.namespace, predicate=list_opts.predicate))
        deleted = []
        for obj in listed.items:
            meta = obj["metadata"]
            try:
                out, _gone = await self.delete(info, meta.get("namespace", ""), meta["name"], options)
            except errors.ApiError as e:
                if e.code == 404:
                    continue
                raise
            deleted.append(out)
        return deleted

