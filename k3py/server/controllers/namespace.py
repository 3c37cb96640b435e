"""The namespace lifecycle controller: empty a Terminating namespace, then finalize it.

``kubectl delete namespace x`` makes the API server set ``deletionTimestamp`` and phase
Terminating; the namespace stays until its ``spec.finalizers`` (``kubernetes``) is empty. This
controller deletes everything in it — every namespaced kind the server serves that can be
listed and deleted, walked from the resource table so new kinds are covered — and polls until
the lists come back empty, then PUTs ``namespaces/<name>/finalize`` without the
``kubernetes`` finalizer; the server removes the namespace. While content remains it sets the
``NamespaceContentRemaining`` / ``NamespaceFinalizersRemaining`` /
``NamespaceDeletionContentFailure`` conditions kubectl describe shows, in upstream's wording.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Hashable
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339
from k3py.api.resources import builtin_resources
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import NAMESPACES, Client, Resource

log = logging.getLogger("k3py.controllers.namespace")

FINALIZER = "kubernetes"
RECHECK_SECONDS = 1.0

Obj = dict[str, Any]


def namespaced_resources() -> list[Resource]:
    """Each namespaced kind once (its storage shared by several versions counts once)."""
    seen: set[str] = set()
    out: list[Resource] = []
    for info in builtin_resources().all():
        if not info.namespaced or "list" not in info.verbs or "delete" not in info.verbs:
            continue
        storage = info.storage_resource or f"{info.group}/{info.plural}"
        if storage in seen:
            continue
        seen.add(storage)
        out.append(Resource(info.group, info.version, info.plural, info.kind))
    return out


class NamespaceController(Controller):
    """See the module docstring."""

    name = "namespace"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.namespaces = informers.informer(NAMESPACES)
        self.namespaces.add_handler(self._changed, lambda _o, n: self._changed(n))
        self.resources = namespaced_resources()
        self._last_walk: dict[str, float] = {}
        self._holding: dict[str, dict[str, int]] = {}  # namespace -> finalizers seen on its content

    def _changed(self, ns: Obj) -> None:
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            self.enqueue(ns)

    async def reconcile(self, key: Hashable) -> float | None:
        ns = self.namespaces.cache.get(str(key))
        if ns is None or not (ns.get("metadata") or {}).get("deletionTimestamp"):
            self._last_walk.pop(str(key), None)
            self._holding.pop(str(key), None)
            return None
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return None
        name = ns["metadata"]["name"]
        # Our own status and finalize writes come back as update events; walk a namespace at
        # most once per RECHECK_SECONDS so they cannot turn into a hot loop.
        now = time.monotonic()
        since = now - self._last_walk.get(name, 0.0)
        if since < RECHECK_SECONDS:
            return RECHECK_SECONDS - since
        self._last_walk[name] = now
        remaining, failures = await self._delete_content(name)
        log.debug("namespace %s: remaining %s, failures %s", name, remaining, failures)
        if remaining:
            await self._set_conditions(ns, remaining, failures)
            return RECHECK_SECONDS
        finalized = copy.deepcopy(ns)
        finalized["spec"]["finalizers"] = [f for f in finalized["spec"]["finalizers"] if f != FINALIZER]
        # No resourceVersion: the namespace was just verified empty, and status writes racing
        # with this one must not send it back through the whole content walk.
        finalized["metadata"].pop("resourceVersion", None)
        try:
            result = await self.client.finalize_namespace(finalized)
        except ApiError as e:
            if e.code != 404:
                raise
            return None
        if FINALIZER in ((result.get("spec") or {}).get("finalizers") or []):
            log.warning("namespace %s: the server kept the %r finalizer after finalize", name, FINALIZER)
            return RECHECK_SECONDS * 5
        return None

    async def _delete_content(self, namespace: str) -> tuple[dict[str, int], list[str]]:
        """Delete every object in the namespace; returns what is left per kind, and errors."""
        remaining: dict[str, int] = {}
        failures: list[str] = []
        holding: dict[str, int] = {}  # finalizer -> objects it still holds
        self._holding[namespace] = holding

        async def one(resource: Resource) -> None:
            try:
                listed = await self.client.list(resource, namespace)
            except ApiError as e:
                if e.code not in (404, 405):
                    failures.append(f"{resource.plural}: {e.message}")
                return
            items = listed.get("items") or []
            left = 0
            for item in items:
                meta = item.get("metadata") or {}
                if not meta.get("deletionTimestamp"):
                    try:
                        result = await self.client.delete(resource, meta.get("name", ""), namespace,
                                                          propagation_policy="Background")
                    except ApiError as e:
                        if e.code == 404:
                            continue
                        if e.code != 409:
                            failures.append(f"{resource.plural}: {e.message}")
                        left += 1  # not deleted: still there
                        continue
                    meta = (result.get("metadata") or {}) if result.get("kind") != "Status" else {}
                    if not meta.get("deletionTimestamp"):
                        continue  # gone at once
                # Still there (finalizers or a grace period): counted, like upstream's re-list.
                left += 1
                for finalizer in meta.get("finalizers") or ():
                    holding[finalizer] = holding.get(finalizer, 0) + 1
            if left:
                remaining[f"{resource.plural}.{resource.group}" if resource.group else resource.plural] = left

        await asyncio.gather(*(one(r) for r in self.resources))
        return remaining, failures

    async def _set_conditions(self, ns: Obj, remaining: dict[str, int], failures: list[str]) -> None:
        status = copy.deepcopy(ns.get("status") or {})
        summary = ", ".join(f"{kind} has {count} resource instances" for kind, count in sorted(remaining.items()))
        holding = self._holding.get(ns["metadata"]["name"]) or {}
        held = ", ".join(f"{finalizer} in {count} resource instances" for finalizer, count in sorted(holding.items()))
        wanted = {
            "NamespaceContentRemaining": ("True", "SomeResourcesRemain", f"Some resources are remaining: {summary}"),
            "NamespaceFinalizersRemaining": (
                ("True", "SomeFinalizersRemain", f"Some content in the namespace has finalizers remaining: {held}") if held
                else ("False", "ContentHasNoFinalizers", "All content-preserving finalizers finished")),
            "NamespaceDeletionContentFailure": (
                ("True", "ContentDeletionFailed", "; ".join(failures)) if failures
                else ("False", "ContentDeleted", "All content successfully deleted, may be waiting on finalization")),
        }
        conditions = [c for c in status.get("conditions") or [] if c.get("type") not in wanted]
        old = {c.get("type"): c for c in status.get("conditions") or []}
        for cond_type, (value, reason, message) in wanted.items():
            prev = old.get(cond_type)
            same = prev is not None and (prev.get("status"), prev.get("reason"), prev.get("message")) == (value, reason, message)
            conditions.append(prev if same else {"type": cond_type, "status": value, "lastTransitionTime": now_rfc3339(),
                                                  "reason": reason, "message": message})
        if conditions == status.get("conditions"):
            return
        status["conditions"] = conditions
        await self.write_status(NAMESPACES, ns, status, tolerate=(404, 409))
