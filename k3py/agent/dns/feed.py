"""Informers to records: Services, EndpointSlices and Namespaces of the whole cluster.

Three informers (list+watch, shared by nothing else: the records must see every object,
the kubelet's only those of its node) call handlers that only mark keys dirty; one task turns
dirty keys into record changes, reading the informers' caches (level-triggered, so a burst of
updates to one object costs one recomputation). It works in slices of ``SLICE_SECONDS`` and
yields to the loop between them, so the first list of a large cluster, or a relist after the
watch expired, never holds the loop for long.

No Pod informer: an endpoint's ``hostname`` (StatefulSet pods' names) comes on its
EndpointSlice, set by the EndpointSlice controller as upstream's does, and the
``<a>-<b>-<c>-<d>.<ns>.pod`` names are answered for any address, as the specification requires —
so no node has to cache every pod of the cluster to answer.

``ready`` is set once every informer has listed and the dirty keys of that first list have
been applied; the records are then ``synced`` (until then the resolver answers SERVFAIL rather
than NXDOMAIN for names it does not know).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from k3py.agent.dns.records import ClusterRecords
from k3py.client.informer import Informer, object_key
from k3py.client.interface import ENDPOINTSLICES, NAMESPACES, SERVICES, Client

log = logging.getLogger("k3py.agent.dns")

SLICE_SECONDS = 0.005
Obj = dict[str, Any]


class RecordFeed:
    def __init__(self, client: Client, records: ClusterRecords) -> None:
        self.records = records
        self.services = Informer(client, SERVICES)
        self.slices = Informer(client, ENDPOINTSLICES)
        self.namespaces = Informer(client, NAMESPACES)
        self._dirty: dict[tuple[str, str], None] = {}
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        for kind, informer in (("svc", self.services), ("slice", self.slices), ("ns", self.namespaces)):
            informer.add_handler(
                lambda obj, kind=kind: self._mark(kind, obj),
                lambda _old, new, kind=kind: self._mark(kind, new),
                lambda obj, kind=kind: self._mark(kind, obj),
            )

    def _mark(self, kind: str, obj: Obj) -> None:
        self._dirty[(kind, object_key(obj))] = None
        self._wake.set()

    async def run(self) -> None:
        informers = (self.namespaces, self.services, self.slices)
        tasks = [asyncio.create_task(i.run(), name=f"dns-informer-{i.resource.plural}") for i in informers]
        listed = asyncio.ensure_future(asyncio.gather(*(i.synced.wait() for i in informers)))
        try:
            while True:
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([waiter] if listed.done() else [waiter, listed],
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                self._wake.clear()
                await self._drain()
                if listed.done() and not self.ready.is_set():
                    self.records.synced = True
                    self.ready.set()
                    log.info("cluster DNS has the cluster's records (%d services)", self.records.services)
        finally:
            listed.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(listed, *tasks, return_exceptions=True)

    async def _drain(self) -> None:
        started = time.perf_counter()
        while self._dirty:
            kind, key = next(iter(self._dirty))
            del self._dirty[(kind, key)]
            try:
                self._apply(kind, key)
            except Exception:
                log.exception("cluster DNS: cannot apply %s %s", kind, key)
            if time.perf_counter() - started > SLICE_SECONDS:
                await asyncio.sleep(0)
                started = time.perf_counter()

    def _apply(self, kind: str, key: str) -> None:
        records = self.records
        if kind == "ns":
            if self.namespaces.cache.get(key) is not None:
                records.set_namespace(key.lower())
            else:
                records.remove_namespace(key.lower())
        elif kind == "svc":
            obj = self.services.cache.get(key)
            if obj is not None:
                records.set_service(obj)
            else:
                records.remove_service(key.lower())
        else:
            obj = self.slices.cache.get(key)
            if obj is not None:
                records.set_slice(key, obj)
            else:
                records.remove_slice(key)
