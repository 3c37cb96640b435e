"""CustomResourceDefinitions: serving the resources they define.

The registrar follows the CRD objects in the watch cache. For each served version of a CRD
it adds a ``ResourceInfo`` to the resource table (discovery, OpenAPI and the REST handler all
read the table, so the resource appears everywhere at once), with the status and scale
subresources the version declares; a deleted CRD's entries are removed and its objects
deleted. It also plays upstream's CRD controllers' part of writing the CRD's status:
``acceptedNames`` and the ``NamesAccepted`` / ``Established`` conditions, which
``kubectl wait --for condition=established`` and Helm look for.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from k3py.api import errors
from k3py.api.resources import ResourceInfo, SubresourceInfo
from k3py.server.apiserver.registry import (
    DeleteOptions,
    ListOptions,
    Registry,
    WriteOptions,
    storage_prefix,
)
from k3py.server.apiserver.watchcache import CacheEvent

log = logging.getLogger("k3py.apiserver.crds")

CRD_GROUP = "apiextensions.k8s.io"
FULL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def infos_for(crd: dict[str, Any]) -> list[ResourceInfo]:
    """One ResourceInfo per served version of a CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group") or ""
    plural = names.get("plural") or ""
    kind = names.get("kind") or ""
    if not (group and plural and kind):
        return []
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    infos = []
    for version in spec.get("versions") or ():
        if not isinstance(version, dict) or not version.get("served", True):
            continue
        name = version.get("name") or ""
        subs = []
        declared = version.get("subresources") or {}
        if "status" in declared:
            subs.append(SubresourceInfo("status", group, name, kind, ("get", "patch", "update")))
        if "scale" in declared:
            subs.append(SubresourceInfo("scale", "autoscaling", "v1", "Scale", ("get", "patch", "update")))
        infos.append(
            ResourceInfo(
                group=group,
                version=name,
                kind=kind,
                plural=plural,
                singular=names.get("singular") or kind.lower(),
                namespaced=namespaced,
                verbs=FULL_VERBS,
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(subs),
                storage_resource=f"{group}/{plural}",
            )
        )
    return infos


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CRDRegistrar:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.table = registry.table
        self._served: dict[str, list[ResourceInfo]] = {}  # CRD name -> infos added
        self._tasks: set[asyncio.Task[None]] = set()
        info = self.table.lookup(CRD_GROUP, "v1", "customresourcedefinitions")
        assert info is not None, "the resource table must serve CRDs"
        self.crd_info = info
        self.prefix = storage_prefix(info)

    def start(self) -> None:
        for crd in list(self.registry.cache.cache(self.prefix).objects.values()):
            self._sync(crd)
        self.registry.cache.listeners.append(self._on_event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: CacheEvent) -> None:
        if not event.key.startswith(self.prefix):
            return
        if event.type == "DELETED":
            self._remove(event.obj)
        else:
            self._sync(event.obj)

    def _sync(self, crd: dict[str, Any]) -> None:
        name = crd["metadata"].get("name", "")
        for info in self._served.pop(name, []):
            self.table.remove(info.group, info.version, info.plural)
            self.table.set_schema(info.group, info.version, info.kind, None)
        if crd["metadata"].get("deletionTimestamp"):
            self._spawn(self._finish_deletion(crd))
            return
        infos = infos_for(crd)
        schemas = {v.get("name"): (v.get("schema") or {}).get("openAPIV3Schema") for v in (crd.get("spec") or {}).get("versions") or ()}
        for info in infos:
            self.table.add(info)
            schema = schemas.get(info.version)
            # The structural schema describes the CR in OpenAPI (kubectl explain, client validation).
            self.table.set_schema(info.group, info.version, info.kind, schema if isinstance(schema, dict) else None)
        self._served[name] = infos
        if not _established(crd):
            self._spawn(self._establish(name))

    def _remove(self, crd: dict[str, Any]) -> None:
        name = crd["metadata"].get("name", "")
        for info in self._served.pop(name, []):
            self.table.remove(info.group, info.version, info.plural)
            self.table.set_schema(info.group, info.version, info.kind, None)
        self._spawn(self._delete_objects(infos_for(crd)))

    async def _establish(self, name: str) -> None:
        def mutate(crd: dict[str, Any]) -> dict[str, Any]:
            spec = crd.get("spec") or {}
            now = _now()
            status = dict(crd.get("status") or {})
            status["acceptedNames"] = spec.get("names") or {}
            status["conditions"] = [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
            ]
            status["storedVersions"] = [v["name"] for v in spec.get("versions") or () if v.get("storage")] or status.get("storedVersions", [])
            crd["status"] = status
            return crd

        try:
            await self.registry.guaranteed_update(self.crd_info, "", name, mutate, WriteOptions(field_manager="k3py-crd-controller"), "status")
        except errors.ApiError as e:
            if e.code != 404:
                log.warning("could not establish CRD %s: %s", name, e.message)

    async def _delete_objects(self, infos: list[ResourceInfo]) -> None:
        if not infos:
            return
        try:
            await self.registry.delete_collection(infos[0], ListOptions(resource_version="0"), DeleteOptions())
        except errors.ApiError as e:
            log.warning("could not delete objects of %s: %s", infos[0].plural, e.message)

    async def _finish_deletion(self, crd: dict[str, Any]) -> None:
        """Delete the CRD's objects, then drop the cleanup finalizer so the CRD goes."""
        await self._delete_objects(infos_for(crd))
        name = crd["metadata"]["name"]

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            current["metadata"]["finalizers"] = [
                f for f in current["metadata"].get("finalizers") or () if f != "customresourcecleanup.apiextensions.k8s.io"
            ]
            return current

        try:
            await self.registry.guaranteed_update(self.crd_info, "", name, mutate, WriteOptions())
        except errors.ApiError as e:
            if e.code != 404:
                log.warning("could not finish deleting CRD %s: %s", name, e.message)


def _established(crd: dict[str, Any]) -> bool:
    for cond in (crd.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Established" and cond.get("status") == "True":
            return True
    return False
