"""The watch cache: every stored object, decoded once, plus a ring of recent events.

One store watch on the whole ``/registry/`` prefix feeds the cache, so there is one global
"cache revision" (the revision of the last event applied) shared by every resource: a client
can pass any resourceVersion it has seen, from any resource, and "wait until the cache has
caught up with it" has a meaning. Per storage prefix (``/registry/<group>/<plural>/``) the
cache keeps the live objects (decoded dicts with ``metadata.resourceVersion`` set, treated as
immutable by everyone) and a bounded ring of the latest events for resuming watches.

GETs of cached objects are answered from JSON bytes encoded once per object revision
(``ResourceCache.json_of``): the entry is keyed by the storage key and remembers which object
dict it encodes, so a later revision (a new dict) or a converted copy never gets stale bytes.

Watchers register a filter and an asyncio queue; each applied event is offered to the
watchers of its prefix. A watcher whose queue overflows (a client that stopped reading) is
ended, as upstream does, and the client re-lists.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from k3py.store import CompactedError, Event, EventType, Store

log = logging.getLogger("k3py.apiserver.watchcache")

REGISTRY_PREFIX = "/registry/"
RING_SIZE = 2048
WATCHER_QUEUE_SIZE = 10_000


def decode_value(value: bytes, revision: int) -> dict[str, Any]:
    """A stored value as an object dict with its resourceVersion (the store revision) set."""
    obj = orjson.loads(value)
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    meta["resourceVersion"] = str(revision)
    return obj


def prefix_of(key: str) -> str:
    """``/registry/<group>/<plural>/`` of a full key."""
    parts = key.split("/", 4)
    # ["", "registry", group, plural, rest]
    return "/".join(parts[:4]) + "/"


@dataclass(slots=True)
class CacheEvent:
    """One change: ADDED, MODIFIED or DELETED, with the object before it (None for ADDED)."""

    type: str
    key: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None
    revision: int
    # JSON of obj, made once on first use and shared by every plain-JSON watcher.
    encoded: bytes | None = None

    def json(self) -> bytes:
        if self.encoded is None:
            self.encoded = orjson.dumps(self.obj)
        return self.encoded


@dataclass(eq=False)
class Watcher:
    """A registered watch: gets every event of its prefix its predicate lets through."""

    prefix: str
    predicate: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[CacheEvent | None] = field(default_factory=lambda: asyncio.Queue(WATCHER_QUEUE_SIZE))
    overflowed: bool = False

    def offer(self, event: CacheEvent) -> None:
        """Translate the event for this watcher's filter and queue it.

        An object that stops matching is reported DELETED, one that starts matching ADDED,
        so a filtered watcher's view stays consistent (upstream's behaviour).
        """
        if self.overflowed:
            return
        new_ok = event.type != "DELETED" and self.predicate(event.obj)
        old_ok = event.prev is not None and self.predicate(event.prev)
        if event.type == "DELETED":
            out = event if old_ok or self.predicate(event.obj) else None
        elif new_ok and old_ok:
            out = event
        elif new_ok:
            out = event if event.type == "ADDED" else CacheEvent("ADDED", event.key, event.obj, None, event.revision, event.encoded)
        elif old_ok:
            out = CacheEvent("DELETED", event.key, event.obj, event.prev, event.revision, event.encoded)
        else:
            out = None
        if out is None:
            return
        try:
            self.queue.put_nowait(out)
        except asyncio.QueueFull:
            self.overflowed = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class ResourceCache:
    """The objects and recent events under one storage prefix."""

    def __init__(self, prefix: str, start_revision: int) -> None:
        self.prefix = prefix
        self.objects: dict[str, dict[str, Any]] = {}
        self.ring: collections.deque[CacheEvent] = collections.deque(maxlen=RING_SIZE)
        # Every event of this prefix with revision > ring_floor is in the ring.
        self.ring_floor = start_revision
        self.watchers: set[Watcher] = set()
        # key -> (the live object dict, its JSON); filled by json_of, dropped on change.
        self._json: dict[str, tuple[dict[str, Any], bytes]] = {}

    def apply(self, event: CacheEvent) -> None:
        self._json.pop(event.key, None)
        if event.type == "DELETED":
            self.objects.pop(event.key, None)
        else:
            self.objects[event.key] = event.obj
        if len(self.ring) == self.ring.maxlen:
            self.ring_floor = self.ring[0].revision
        self.ring.append(event)
        for watcher in tuple(self.watchers):
            watcher.offer(event)

    def json_of(self, key: str, obj: dict[str, Any]) -> bytes:
        """``obj`` as JSON, reusing the bytes made for the same live object before.

        Only the live object under ``key`` is remembered (identity, not equality: cached
        objects are immutable and each revision is a new dict); anything else — a converted
        copy, an object read from the store — is encoded afresh and not kept.
        """
        entry = self._json.get(key)
        if entry is not None and entry[0] is obj:
            return entry[1]
        body = orjson.dumps(obj)
        if self.objects.get(key) is obj:
            self._json[key] = (obj, body)
        return body

    def events_after(self, revision: int) -> list[CacheEvent] | None:
        """Events with revision > ``revision``, or None when the ring no longer reaches back."""
        if revision < self.ring_floor:
            return None
        out = []
        for event in reversed(self.ring):
            if event.revision <= revision:
                break
            out.append(event)
        out.reverse()
        return out

    def scan(self, key_prefix: str) -> list[dict[str, Any]]:
        """Live objects whose key starts with key_prefix, in key order."""
        if key_prefix == self.prefix:
            items = self.objects.items()
        else:
            items = [(k, v) for k, v in self.objects.items() if k.startswith(key_prefix)]
        return [v for _k, v in sorted(items, key=lambda kv: kv[0])]


class WatchCache:
    """All ResourceCaches, fed by one store watch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.revision = 0
        self.caches: dict[str, ResourceCache] = {}
        self._start_revision = 0
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self.ready = asyncio.Event()
        # Called with each applied event (the API server hooks CRD changes here).
        self.listeners: list[Callable[[CacheEvent], None]] = []

    def cache(self, prefix: str) -> ResourceCache:
        cache = self.caches.get(prefix)
        if cache is None:
            cache = ResourceCache(prefix, self._start_revision)
            self.caches[prefix] = cache
        return cache

    async def start(self) -> None:
        """Load every object, then follow the store from the loaded revision on."""
        revision = await self._load()
        self._task = asyncio.create_task(self._follow(revision), name="watch-cache")
        self.ready.set()

    async def _load(self) -> int:
        token: str | None = None
        revision = 0
        while True:
            page = await self.store.list(REGISTRY_PREFIX, revision=revision or None, limit=5000, continue_token=token)
            revision = page.revision
            for kv in page.items:
                prefix = prefix_of(kv.key)
                if prefix not in self.caches:
                    self.caches[prefix] = ResourceCache(prefix, revision)
                self.caches[prefix].objects[kv.key] = decode_value(kv.value, kv.mod_revision)
            if not page.continue_token:
                break
            token = page.continue_token
        for cache in self.caches.values():
            cache.ring_floor = revision
        self._start_revision = revision
        self.revision = revision
        return revision

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                watch = self.store.watch(REGISTRY_PREFIX, revision + 1)
                async for batch in watch:
                    for event in batch:
                        self._apply(event)
                    revision = self.revision
                    async with self._progress:
                        self._progress.notify_all()
            except asyncio.CancelledError:
                raise
            except CompactedError:
                # We fell behind compaction: reload everything and tell watchers to re-list.
                log.warning("watch cache fell behind compaction; reloading")
                self._end_all_watchers()
                self.caches.clear()
                revision = await self._load()
            except Exception:
                log.exception("store watch failed; resuming after revision %d", revision)
                await asyncio.sleep(0.5)

    def _apply(self, event: Event) -> None:
        kv = event.kv
        if kv.mod_revision <= self.revision:
            return
        prefix = prefix_of(kv.key)
        cache = self.cache(prefix)
        prev = cache.objects.get(kv.key)
        if event.type is EventType.PUT:
            try:
                obj = decode_value(kv.value, kv.mod_revision)
            except orjson.JSONDecodeError:
                log.error("undecodable value at %s (revision %d)", kv.key, kv.mod_revision)
                self.revision = kv.mod_revision
                return
            kind = "MODIFIED" if prev is not None else "ADDED"
            cache_event = CacheEvent(kind, kv.key, obj, prev, kv.mod_revision)
        else:
            if prev is None:
                self.revision = kv.mod_revision
                return
            # The DELETED event carries the last state, stamped with the delete's revision.
            obj = {**prev, "metadata": {**prev["metadata"], "resourceVersion": str(kv.mod_revision)}}
            cache_event = CacheEvent("DELETED", kv.key, obj, prev, kv.mod_revision)
        self.revision = kv.mod_revision
        cache.apply(cache_event)
        for listener in self.listeners:
            try:
                listener(cache_event)
            except Exception:
                log.exception("watch cache listener failed")

    def _end_all_watchers(self) -> None:
        for cache in self.caches.values():
            for watcher in cache.watchers:
                watcher.overflowed = True
                with contextlib.suppress(asyncio.QueueFull):
                    watcher.queue.put_nowait(None)
            cache.watchers.clear()

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until the cache has applied ``revision``; False on timeout."""
        if self.revision >= revision:
            return True
        try:
            async with asyncio.timeout(timeout):
                async with self._progress:
                    await self._progress.wait_for(lambda: self.revision >= revision)
        except TimeoutError:
            return False
        return True

    def add_watcher(self, watcher: Watcher) -> None:
        self.cache(watcher.prefix).watchers.add(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        cache = self.caches.get(watcher.prefix)
        if cache is not None:
            cache.watchers.discard(watcher)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._end_all_watchers()
