"""Shared informers: list+watch one resource into an indexed local cache, and fan out events.

An :class:`Informer` lists a resource, then watches from the list's resourceVersion with
bookmarks, applying each event to its :class:`Cache` and calling every registered handler.
When the watch ends it re-watches from the last resourceVersion seen (bookmarks keep that
fresh); when the server answers 410 Gone / Expired (the version was compacted away) it relists
and reconciles the cache against the new list, emitting adds, updates and deletes for what
changed while it was not watching. Other errors back off and retry, so an informer survives
an API server restart. An optional resync period re-delivers every cached object as an update
so level-triggered controllers re-check the world.

The :class:`Cache` keeps objects by key (``namespace/name``) with a built-in ``namespace``
index and any number of custom index functions (pods by ``spec.nodeName``, objects by owner
uid...). Handlers must be cheap and synchronous — in practice they only add keys to work
queues; controllers read the cache, never a handler's argument, when they reconcile.

A :class:`InformerFactory` hands out one informer per resource so every controller in the
process shares a single watch and cache.

Cached objects lose ``metadata.managedFields`` on the way in (upstream's
``TransformStripManagedFields``): no controller reads field ownership, and on a 10,000-pod
cluster the entries are a large share of the cache's memory. An update built from a cached
copy sends none, and the API server then keeps the stored ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from k3py.api.errors import ApiError
from k3py.client.interface import Client, Resource

log = logging.getLogger("k3py.client.informer")

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]

NAMESPACE_INDEX = "namespace"
OWNER_UID_INDEX = "owner-uid"
NODE_NAME_INDEX = "node-name"
ORPHAN_INDEX = "orphans-by-namespace"


def object_key(obj: Obj) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, name)`` from a key (namespace "" for cluster-scoped)."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def index_by_namespace(obj: Obj) -> list[str]:
    return [(obj.get("metadata") or {}).get("namespace", "")]


def index_by_owner_uid(obj: Obj) -> list[str]:
    return [ref["uid"] for ref in (obj.get("metadata") or {}).get("ownerReferences") or () if ref.get("uid")]


def index_orphans(obj: Obj) -> list[str]:
    """Objects without a controller ownerReference, by namespace (adoption candidates)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    if any(ref.get("controller") for ref in refs):
        return []
    return [(obj.get("metadata") or {}).get("namespace", "")]


def index_by_node_name(obj: Obj) -> list[str]:
    return [(obj.get("spec") or {}).get("nodeName") or ""]


class Cache:
    """Objects by key plus secondary indexes; the informer is the only writer."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: index_by_namespace}
        self._indices: dict[str, dict[str, set[str]]] = {NAMESPACE_INDEX: {}}
        for name, func in (indexers or {}).items():
            self.add_indexer(name, func)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Add an index (existing objects are indexed at once); re-adding a name is a no-op."""
        if name in self._indexers:
            return
        self._indexers[name] = func
        index: dict[str, set[str]] = {}
        self._indices[name] = index
        for key, obj in self._items.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def _index(self, key: str, obj: Obj) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    def upsert(self, obj: Obj) -> Obj | None:
        """Store ``obj``; returns the object it replaced, if any."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def get_by_name(self, namespace: str, name: str) -> Obj | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def keys(self) -> list[str]:
        return list(self._items)

    def list(self, namespace: str | None = None) -> list[Obj]:
        if namespace is None:
            return list(self._items.values())
        return self.by_index(NAMESPACE_INDEX, namespace)

    def by_index(self, index_name: str, value: str) -> list[Obj]:
        keys = self._indices[index_name].get(value, ())
        return [self._items[k] for k in keys]

    def index_keys(self, index_name: str, value: str) -> set[str]:
        return set(self._indices[index_name].get(value, ()))

    def replace(self, objs: Iterable[Obj]) -> tuple[list[Obj], list[tuple[Obj, Obj]], list[Obj]]:
        """Make the cache hold exactly ``objs``; returns (added, updated (old, new), deleted)."""
        added: list[Obj] = []
        updated: list[tuple[Obj, Obj]] = []
        seen: set[str] = set()
        for obj in objs:
            seen.add(object_key(obj))
            old = self.upsert(obj)
            if old is None:
                added.append(obj)
            else:
                updated.append((old, obj))
        deleted = [self.remove(k) for k in [k for k in self._items if k not in seen]]
        return added, updated, [d for d in deleted if d is not None]


@dataclass
class Handler:
    on_add: Callable[[Obj], None] | None = None
    on_update: Callable[[Obj, Obj], None] | None = None
    on_delete: Callable[[Obj], None] | None = None


def _strip_managed_fields(obj: Obj) -> None:
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        del meta["managedFields"]


def _resource_version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """List+watch of one resource into a :class:`Cache`; see the module docstring."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespace: str = "",
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: dict[str, IndexFunc] | None = None,
        resync_period: float = 0.0,
        watch_timeout: tuple[int, int] = (300, 600),
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache = Cache(indexers)
        self.resync_period = resync_period
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._handlers: list[Handler] = []
        self._watch_timeout = watch_timeout
        self._max_backoff = max_backoff
        self.relists = 0

    def add_handler(
        self,
        on_add: Callable[[Obj], None] | None = None,
        on_update: Callable[[Obj, Obj], None] | None = None,
        on_delete: Callable[[Obj], None] | None = None,
    ) -> None:
        """Register handlers; objects already cached are delivered to ``on_add`` at once."""
        handler = Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if on_add is not None:
            for obj in self.cache.list():
                self._safe(on_add, obj)

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        self.cache.add_indexer(name, func)

    async def wait_synced(self) -> None:
        await self.synced.wait()

    @staticmethod
    def _safe(func: Callable[..., None], *args: Obj) -> None:
        try:
            func(*args)
        except Exception:
            log.exception("informer event handler failed")

    def _emit_add(self, obj: Obj) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._safe(h.on_add, obj)

    def _emit_update(self, old: Obj, new: Obj) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._safe(h.on_update, old, new)

    def _emit_delete(self, obj: Obj) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._safe(h.on_delete, obj)

    def apply_list(self, items: list[Obj], resource_version: str) -> None:
        """Reconcile the cache with a fresh list (initial sync or relist after 410)."""
        for obj in items:
            _strip_managed_fields(obj)
        added, updated, deleted = self.cache.replace(items)
        self.resource_version = resource_version
        for obj in added:
            self._emit_add(obj)
        for old, new in updated:
            if _resource_version(old) != _resource_version(new):
                self._emit_update(old, new)
        for obj in deleted:
            self._emit_delete(obj)
        self.synced.set()

    def apply_event(self, event: dict[str, Any]) -> None:
        """Apply one watch event to the cache and notify handlers."""
        kind = event.get("type")
        obj = event.get("object") or {}
        rv = _resource_version(obj)
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        if kind in ("ADDED", "MODIFIED"):
            _strip_managed_fields(obj)
            old = self.cache.upsert(obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        elif kind == "DELETED":
            # The event carries the object's final state, fresher than the cached copy.
            self.cache.remove(object_key(obj))
            self._emit_delete(obj)
        if rv:
            self.resource_version = rv

    async def _list(self) -> None:
        result = await self.client.list(
            self.resource, self.namespace,
            label_selector=self.label_selector, field_selector=self.field_selector,
        )
        self.relists += 1
        self.apply_list(result.get("items") or [], str((result.get("metadata") or {}).get("resourceVersion", "")))

    async def _watch(self) -> None:
        async for event in self.client.watch(
            self.resource, self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector, field_selector=self.field_selector,
            timeout_seconds=random.randint(*self._watch_timeout),
        ):
            self.apply_event(event)

    async def run(self) -> None:
        """List, then watch forever (until cancelled), relisting on 410 and retrying errors."""
        resync = asyncio.create_task(self._resync_loop()) if self.resync_period > 0 else None
        need_list = True
        failures = 0
        try:
            while True:
                try:
                    if need_list:
                        await self._list()
                        need_list = False
                    await self._watch()
                    failures = 0
                except ApiError as e:
                    if e.code == 410:
                        log.debug("%s: watch expired, relisting", self.resource.plural)
                        need_list = True
                        continue
                    failures += 1
                    delay = min(self._max_backoff, 0.05 * 2**failures) * (0.5 + random.random() / 2)
                    log.info("%s: list/watch failed (%s); retrying in %.2fs", self.resource.plural, e.message, delay)
                    await asyncio.sleep(delay)
        finally:
            if resync is not None:
                resync.cancel()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            for obj in self.cache.list():
                self._emit_update(obj, obj)


class InformerFactory:
    """One shared :class:`Informer` per resource; ``start`` runs all as tasks."""

    def __init__(self, client: Client, resync_period: float = 0.0) -> None:
        self.client = client
        self.resync_period = resync_period
        self._informers: dict[Resource, Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started: set[Resource] = set()

    def informer(self, resource: Resource, indexers: dict[str, IndexFunc] | None = None) -> Informer:
        informer = self._informers.get(resource)
        if informer is None:
            informer = Informer(self.client, resource, resync_period=self.resync_period)
            self._informers[resource] = informer
        for name, func in (indexers or {}).items():
            informer.add_indexer(name, func)
        return informer

    def start(self) -> None:
        """Start every informer not yet running (safe to call again after adding more)."""
        for resource, informer in self._informers.items():
            if resource in self._started:
                continue
            self._started.add(resource)
            self._tasks.append(asyncio.create_task(informer.run(), name=f"informer-{resource.plural}"))

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.wait_synced() for i in self._informers.values()))

    def unsynced(self) -> list[str]:
        """Resources whose informer has not completed its first list yet."""
        return [r.plural for r, i in self._informers.items() if not i.synced.is_set()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._started.clear()
