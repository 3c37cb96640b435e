"""The garbage collector: delete objects whose owners are gone; orphan and foreground deletion.

It watches the kinds that carry ownerReferences in practice (pods, workloads and their
revisions, jobs, endpoint slices, services, config maps, claims...) and keeps a uid → object map
across them plus an owner-uid index per kind. Work items are ``(kind index, key, role)``:

- ``dependent``: check each ownerReference of the object. An owner counts as present when an
  object with that uid is cached, or — for kinds it does not watch — when a GET of the owner
  returns the same uid. Custom kinds (CRDs) are found by their plural's usual forms; a kind
  that cannot be found keeps its dependents. Owners no informer watches send no delete
  event, so dependents of live such owners are re-checked every 5 s. When every owner is
  absent the dependent is deleted (Background, or Foreground when an owner is itself being
  deleted in the foreground, so the whole subtree blocks it); when only some are, the
  dangling references are patched away.
- ``owner``: an object being deleted (``deletionTimestamp``) with the ``orphan`` finalizer
  has its references removed from every dependent, then the finalizer removed; with the
  ``foregroundDeletion`` finalizer its dependents are judged as above (deleted, or unlinked
  when another owner is alive), and the finalizer is removed once no dependent whose
  reference sets ``blockOwnerDeletion`` is left, letting the API server finish the deletion.

Background deletion needs nothing from the owner: the server deletes it at once, and the
dependents' checks find the owner gone.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any, cast

from k3py.api.errors import ApiError
from k3py.api.resources import builtin_resources
from k3py.client.controller import Controller
from k3py.client.informer import (
    OWNER_UID_INDEX,
    Informer,
    InformerFactory,
    index_by_owner_uid,
    object_key,
)
from k3py.client.interface import (
    CONFIGMAPS,
    CONTROLLERREVISIONS,
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    JOBS,
    PODS,
    PVCS,
    REPLICASETS,
    SERVICES,
    STATEFULSETS,
    Client,
    Resource,
)

log = logging.getLogger("k3py.controllers.gc")

WATCHED: tuple[Resource, ...] = (
    PODS, REPLICASETS, DEPLOYMENTS, DAEMONSETS, STATEFULSETS, CONTROLLERREVISIONS, JOBS, CRONJOBS,
    ENDPOINTSLICES, SERVICES, CONFIGMAPS, PVCS,
)
UNWATCHED_OWNER_RECHECK = 5.0  # seconds between checks of owners no informer watches
ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _finalizers(obj: Obj) -> list[str]:
    return list(_meta(obj).get("finalizers") or [])


class GarbageCollector(Controller):
    """See the module docstring."""

    name = "garbage-collector"
    workers = 4

    def __init__(self, client: Client, informers: InformerFactory, watched: tuple[Resource, ...] = WATCHED) -> None:
        super().__init__(client, informers)
        self.table = builtin_resources()
        self.watched = watched
        self.informers_by_index: list[Informer] = []
        self.uids: dict[str, tuple[int, str]] = {}
        self._custom_kinds: dict[tuple[str, str, str], Resource | None] = {}
        self._kind_index = {(r.api_version, r.kind): i for i, r in enumerate(watched)}
        for i, resource in enumerate(watched):
            informer = informers.informer(resource, {OWNER_UID_INDEX: index_by_owner_uid})
            self.informers_by_index.append(informer)
            informer.add_handler(
                lambda o, i=i: self._seen(i, o),
                lambda old, new, i=i: self._updated(i, old, new),
                lambda o, i=i: self._gone(i, o),
            )

    # -- events ----------------------------------------------------------------------------

    def _seen(self, index: int, obj: Obj) -> None:
        meta = _meta(obj)
        key = object_key(obj)
        if meta.get("uid"):
            self.uids[meta["uid"]] = (index, key)
        if meta.get("ownerReferences"):
            self.queue.add((index, key, "dependent"))
        if meta.get("deletionTimestamp") and ({ORPHAN, FOREGROUND} & set(_finalizers(obj))):
            self.queue.add((index, key, "owner"))

    def _updated(self, index: int, old: Obj, new: Obj) -> None:
        self._seen(index, new)
        # An owner waiting in foreground deletion may have just lost a blocking dependent.
        kept = {r.get("uid") for r in _meta(new).get("ownerReferences") or ()}
        for ref in _meta(old).get("ownerReferences") or ():
            if ref.get("uid") not in kept and (owner := self.uids.get(ref.get("uid", ""))) is not None:
                self.queue.add((owner[0], owner[1], "owner"))

    def _gone(self, index: int, obj: Obj) -> None:
        uid = _meta(obj).get("uid", "")
        self.uids.pop(uid, None)
        for dep_index, dep_key in self._dependents(uid):
            self.queue.add((dep_index, dep_key, "dependent"))
        # An owner in foreground deletion waits for exactly this: re-check it.
        for ref in _meta(obj).get("ownerReferences") or ():
            owner = self.uids.get(ref.get("uid", ""))
            if owner is not None:
                self.queue.add((owner[0], owner[1], "owner"))

    def _dependents(self, uid: str) -> list[tuple[int, str]]:
        found = []
        for i, informer in enumerate(self.informers_by_index):
            for key in informer.cache.index_keys(OWNER_UID_INDEX, uid):
                found.append((i, key))
        return found

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> float | None:
        index, obj_key, role = cast(tuple[int, str, str], key)
        obj = self.informers_by_index[index].cache.get(obj_key)
        if obj is None:
            return None
        if role == "owner":
            return await self._process_owner(index, obj)
        return await self._process_dependent(index, obj)

    async def _owner_state(self, ref: Obj, namespace: str) -> str:
        """"present", "absent" or "deleting-foreground" for one ownerReference."""
        uid = ref.get("uid", "")
        cached = self.uids.get(uid)
        if cached is not None:
            owner = self.informers_by_index[cached[0]].cache.get(cached[1])
            if owner is not None:
                if _meta(owner).get("deletionTimestamp") and FOREGROUND in _finalizers(owner):
                    return "deleting-foreground"
                return "present"
        api_version = str(ref.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        if (api_version, ref.get("kind")) in self._kind_index:
            # A kind we watch and have no object for: confirm with the server (cache lag).
            resource = self.watched[self._kind_index[(api_version, ref.get("kind"))]]
        else:
            info = self.table.by_kind(group, version, str(ref.get("kind", "")))
            if info is not None:
                resource = Resource(info.group, info.version, info.plural, info.kind, info.namespaced)
            else:
                found = await self._resolve_custom_kind(group, version, str(ref.get("kind", "")), ref, namespace)
                if found is None:
                    return "present"  # a kind we cannot find: never collect on a guess
                resource = found
        try:
            owner = await self.client.get(resource, str(ref.get("name", "")), namespace if resource.namespaced else "")
        except ApiError as e:
            if e.code == 404:
                return "absent"
            raise
        if _meta(owner).get("uid") != uid:
            return "absent"
        if _meta(owner).get("deletionTimestamp") and FOREGROUND in _finalizers(owner):
            return "deleting-foreground"
        return "present"

    async def _resolve_custom_kind(self, group: str, version: str, kind: str, ref: Obj, namespace: str) -> Resource | None:
        """The resource of a kind outside the built-in table (a CRD), by its plural's usual forms.

        A guess counts only when the server answers for it: the object itself, or a NotFound
        naming that very object and resource — never a 404 for an unknown path.
        """
        cache_key = (group, version, kind)
        known = self._custom_kinds.get(cache_key)
        if known is not None:
            return known
        lower = kind.lower()
        guesses = [lower + "s", lower + "es"]
        if lower.endswith("y"):
            guesses.insert(0, lower[:-1] + "ies")
        name = str(ref.get("name", ""))
        for plural in guesses:
            resource = Resource(group, version, plural, kind, True)
            try:
                await self.client.get(resource, name, namespace)
            except ApiError as e:
                details = e.details or {}
                if not (e.code == 404 and details.get("name") == name and details.get("kind") == plural):
                    continue
            self._custom_kinds[cache_key] = resource
            return resource
        return None  # not cached: the CRD may be installed later

    async def _process_dependent(self, index: int, obj: Obj, fresh: bool = False) -> float | None:
        meta = _meta(obj)
        refs = list(meta.get("ownerReferences") or [])
        if not refs or meta.get("deletionTimestamp"):
            return None
        namespace = meta.get("namespace", "")
        states = [await self._owner_state(ref, namespace) for ref in refs]
        resource = self.watched[index]
        if "present" in states:
            # A live owner keeps the object; references to owners that are gone, or that are
            # waiting in foreground deletion, are dropped (so such an owner need not wait).
            dropped = [r for r, s in zip(refs, states, strict=True) if s != "present"]
            if dropped:
                if not fresh:
                    # Judge what the server has, not a cache that may lag our own last patch
                    # (upstream re-reads the item too): the patch is then never repeated.
                    latest = await self._latest(resource, obj)
                    return None if latest is None else await self._process_dependent(index, latest, fresh=True)
                keep = [r for r, s in zip(refs, states, strict=True) if s == "present"]
                await self._patch(resource, obj, {"ownerReferences": keep})
            # Owners of kinds without an informer send no delete event: poll for them.
            unwatched = any(self.uids.get(r.get("uid", "")) is None for r, st in zip(refs, states, strict=True)
                            if st == "present")
            return UNWATCHED_OWNER_RECHECK if unwatched else None
        policy = "Foreground" if "deleting-foreground" in states else "Background"
        log.debug("deleting %s %s: owners gone (%s)", resource.plural, object_key(obj), policy)
        try:
            await self.client.delete(resource, meta["name"], namespace, propagation_policy=policy,
                                     preconditions={"uid": meta.get("uid", "")})
        except ApiError as e:
            if e.code not in (404, 409):
                raise
        return None

    async def _latest(self, resource: Resource, obj: Obj) -> Obj | None:
        """The object as the server has it now; None when it is gone or was replaced."""
        meta = _meta(obj)
        try:
            latest = await self.client.get(resource, meta["name"], meta.get("namespace", ""))
        except ApiError as e:
            if e.code == 404:
                return None
            raise
        return latest if _meta(latest).get("uid") == meta.get("uid") else None

    async def _process_owner(self, index: int, owner: Obj) -> float | None:
        meta = _meta(owner)
        if not meta.get("deletionTimestamp"):
            return None
        finalizers = _finalizers(owner)
        uid = meta.get("uid", "")
        dependents = self._dependents(uid)
        if ORPHAN in finalizers:
            for dep_index, dep_key in dependents:
                dep = self.informers_by_index[dep_index].cache.get(dep_key)
                if dep is None:
                    continue
                keep = [r for r in _meta(dep).get("ownerReferences") or () if r.get("uid") != uid]
                await self._patch(self.watched[dep_index], dep, {"ownerReferences": keep or None})
            await self._remove_finalizer(index, owner, ORPHAN)
            return None
        if FOREGROUND in finalizers:
            blocking = 0
            for dep_index, dep_key in dependents:
                dep = self.informers_by_index[dep_index].cache.get(dep_key)
                if dep is None:
                    continue
                if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in _meta(dep).get("ownerReferences") or ()):
                    blocking += 1
                if not _meta(dep).get("deletionTimestamp"):
                    # Judged as a dependent: deleted unless another owner is alive, in which
                    # case only its reference to this owner goes.
                    self.queue.add((dep_index, dep_key, "dependent"))
            if blocking == 0:
                await self._remove_finalizer(index, owner, FOREGROUND)
                return None
            return 5.0  # dependents' deletions wake us; this is only a safety net
        return None

    async def _patch(self, resource: Resource, obj: Obj, meta_patch: Obj) -> None:
        meta = _meta(obj)
        patch = {"metadata": {**meta_patch, "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}}
        try:
            await self.client.patch(resource, meta["name"], patch, meta.get("namespace", ""))
        except ApiError as e:
            if e.code != 404:
                raise

    async def _remove_finalizer(self, index: int, obj: Obj, finalizer: str) -> None:
        keep = [f for f in _finalizers(obj) if f != finalizer]
        await self._patch(self.watched[index], obj, {"finalizers": keep or None})
