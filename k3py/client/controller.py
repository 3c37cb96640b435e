"""The controller base: informers feed a work queue, N workers call ``reconcile(key)``.

The pattern of kubernetes/sample-controller: event handlers only enqueue keys; workers take a
key, read the *current* state from the informer caches and drive the world towards the
desired state (level-triggered: the same call is correct whatever events were missed or
coalesced). ``reconcile`` may return a delay in seconds to be called again later (waiting for
minReadySeconds, a deadline, a schedule); raising retries the key with exponential backoff,
and a 409 Conflict (a stale cache) retries quickly without logging a failure.

Subclasses set ``name``, register informers and handlers in ``__init__`` (via the shared
:class:`~k3py.client.informer.InformerFactory`), and implement ``reconcile``. Most reconciles
end by writing the status they computed: :meth:`Controller.write_status` writes it only when it
differs from what the object already has (a steady object costs no write), and treats a 404 as
"the object is gone" — its status no longer matters and its deletion enqueues the key anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Hashable

from k3py.api.errors import ApiError
from k3py.client.events import EventRecorder
from k3py.client.informer import Informer, InformerFactory, Obj, object_key
from k3py.client.interface import Client, Resource
from k3py.client.workqueue import ShutDown, WorkQueue

log = logging.getLogger("k3py.controller")

CONFLICT_RETRY_SECONDS = 0.02


class Controller:
    """Base class; see the module docstring."""

    name = "controller"
    # source.component of the Events it records (upstream's names: "replicaset-controller"...)
    component = ""
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        self.client = client
        self.informers = informers
        self.queue = WorkQueue(self.name)
        self.recorder = EventRecorder(client, self.component or f"{self.name}-controller")
        self.reconciles = 0
        self.failures = 0

    # -- handler helpers: enqueue the object's own key, or its controller owner's key --------

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def enqueue_key(self, key: Hashable) -> None:
        self.queue.add(key)

    def enqueue_owner(self, obj: Obj, owner_kind: str) -> None:
        """Enqueue ``namespace/name`` of the object's controller owner when it is ``owner_kind``."""
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") == owner_kind:
                ns = meta.get("namespace")
                self.queue.add(f"{ns}/{ref.get('name')}" if ns else str(ref.get("name")))

    # -- writing what a reconcile computed ------------------------------------------------

    async def write_status(self, resource: Resource, obj: Obj, status: Obj, *,
                           tolerate: Collection[int] = (404,)) -> Obj | None:
        """Write ``status`` to ``obj``'s status subresource unless ``obj`` already has it.

        ``obj`` is the object the status was computed from (its resourceVersion makes a stale
        write a 409, which :meth:`process_one` retries). Returns the object the server stored,
        or None when nothing was written: the status was unchanged, or the server answered one
        of the ``tolerate`` codes (404 by default: the object was deleted meanwhile).
        """
        if status == (obj.get("status") or {}):
            return None
        try:
            return await self.client.update_status(resource, {**obj, "status": status})
        except ApiError as e:
            if e.code in tolerate:
                return None
            raise

    # -- the work loop ---------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> float | None:
        """Drive the object named by ``key`` towards its desired state; see module docstring."""
        raise NotImplementedError

    async def process_one(self, key: Hashable) -> None:
        """Reconcile one key and requeue it as the outcome asks (used by workers and tests)."""
        self.reconciles += 1
        try:
            again = await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except ApiError as e:
            self.failures += 1
            if e.code == 409:
                # A stale cache: the informer is about to deliver the newer object (which
                # enqueues the key too). Retry soon, without growing the key's backoff.
                log.debug("%s: conflict on %s, retrying", self.name, key)
                self.queue.add_after(key, CONFLICT_RETRY_SECONDS)
                return
            log.info("%s: reconcile %s failed: %s %s", self.name, key, e.code, e.message)
            self.queue.add_rate_limited(key)
            return
        except Exception:
            self.failures += 1
            log.exception("%s: reconcile %s crashed", self.name, key)
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        if again is not None:
            self.queue.add_after(key, again)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process_one(key)
            finally:
                self.queue.done(key)

    def own_informers(self) -> list[Informer]:
        """The informers this controller reads (its Informer attributes)."""
        return [v for v in vars(self).values() if isinstance(v, Informer)]

    async def run(self) -> None:
        """Run the workers until cancelled; they start once this controller's caches synced.

        Acting on a cache that has not listed yet would be acting on an empty world (and,
        say, create pods that exist); a resource the server fails to list holds back only
        the controllers that read it.
        """
        await asyncio.gather(*(i.wait_synced() for i in self.own_informers()))
        self.recorder.start()
        workers = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                   for i in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self.recorder.stop()
