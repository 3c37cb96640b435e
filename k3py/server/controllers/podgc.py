"""The pod garbage collector: pods bound to nodes that no longer exist.

A pod's graceful deletion is finished by its node's kubelet; when the node itself is deleted
(``kubectl delete node``, a simulated cluster shrinking) nobody would ever finish it, and its
pods would also keep counting as active for their controllers. After a node has been gone
for a short quarantine (upstream waits 40 s, in case the node is being re-registered; k3py
waits 20 s) every pod still bound to it is deleted with grace period 0, so its controller
replaces it elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

from k3py.api.errors import ApiError
from k3py.client.controller import Controller
from k3py.client.informer import NODE_NAME_INDEX, InformerFactory, index_by_node_name
from k3py.client.interface import NODES, PODS, Client
from k3py.server.controllers.common import Obj, name_of, namespace_of, uid_of

log = logging.getLogger("k3py.controllers.podgc")

QUARANTINE_SECONDS = 20.0


class PodGarbageCollector(Controller):
    """See the module docstring. Keys are node names."""

    name = "pod-garbage-collector"
    component = "pod-garbage-collector"
    workers = 1

    def __init__(self, client: Client, informers: InformerFactory, quarantine: float = QUARANTINE_SECONDS) -> None:
        super().__init__(client, informers)
        self.quarantine = quarantine
        self.nodes = informers.informer(NODES)
        self.pods = informers.informer(PODS, {NODE_NAME_INDEX: index_by_node_name})
        self._missing_since: dict[str, float] = {}
        self.nodes.add_handler(on_add=self._node_back, on_delete=lambda n: self.queue.add(name_of(n)))
        self.pods.add_handler(self._pod, lambda _o, n: self._pod(n))

    def _node_back(self, node: Obj) -> None:
        self._missing_since.pop(name_of(node), None)

    def _pod(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and self.nodes.synced.is_set() and self.nodes.cache.get(node) is None:
            self.queue.add(node)

    async def reconcile(self, key: Hashable) -> float | None:
        node = str(key)
        if self.nodes.cache.get(node) is not None:
            self._missing_since.pop(node, None)
            return None
        pods = self.pods.cache.by_index(NODE_NAME_INDEX, node)
        if not pods:
            self._missing_since.pop(node, None)
            return None
        now = time.monotonic()
        since = self._missing_since.setdefault(node, now)
        if now - since < self.quarantine:
            return self.quarantine - (now - since) + 0.05
        # Confirm with the server: the cache may lag a re-registration.
        try:
            await self.client.get(NODES, node)
            self._missing_since.pop(node, None)
            return None
        except ApiError as e:
            if e.code != 404:
                raise
        for pod in pods:
            log.info("deleting pod %s/%s bound to the vanished node %s", namespace_of(pod), name_of(pod), node)
            try:
                await self.client.delete(PODS, name_of(pod), namespace_of(pod), grace_period_seconds=0,
                                         preconditions={"uid": uid_of(pod)})
            except ApiError as e:
                if e.code not in (404, 409):
                    raise
        return None
