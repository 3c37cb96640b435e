"""The service-account controller: every active namespace gets ``default`` and the root CA.

Kubernetes creates a ``default`` ServiceAccount in each namespace (pods without
``serviceAccountName`` use it, and admission refuses pods whose account is missing) and
publishes the cluster CA as the ``kube-root-ca.crt`` ConfigMap (key ``ca.crt``) that
projected service-account volumes mount. This controller keeps both present: it reacts to
namespaces appearing and to either object being deleted or edited, and leaves namespaces
that are terminating alone.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from k3py.api.errors import ApiError
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import CONFIGMAPS, NAMESPACES, SERVICEACCOUNTS, Client

log = logging.getLogger("k3py.controllers.serviceaccount")

DEFAULT_SA = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"

Obj = dict[str, Any]


class ServiceAccountController(Controller):
    """See the module docstring. Keys are namespace names."""

    name = "serviceaccount"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory, root_ca: bytes | None = None) -> None:
        super().__init__(client, informers)
        self.root_ca = root_ca.decode() if root_ca else ""
        self.namespaces = informers.informer(NAMESPACES)
        self.accounts = informers.informer(SERVICEACCOUNTS)
        self.configmaps = informers.informer(CONFIGMAPS)
        self.namespaces.add_handler(self.enqueue, lambda _o, n: self.enqueue(n))
        self.accounts.add_handler(on_delete=self._namespace_of)
        self.configmaps.add_handler(on_update=lambda _o, n: self._namespace_of(n), on_delete=self._namespace_of)

    def _namespace_of(self, obj: Obj) -> None:
        self.queue.add((obj.get("metadata") or {}).get("namespace", ""))

    async def reconcile(self, key: Hashable) -> float | None:
        namespace = str(key)
        ns = self.namespaces.cache.get(namespace)
        if ns is None or (ns.get("metadata") or {}).get("deletionTimestamp"):
            return None
        if self.accounts.cache.get_by_name(namespace, DEFAULT_SA) is None:
            await self._create(SERVICEACCOUNTS, namespace, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_SA, "namespace": namespace},
            })
        if self.root_ca:
            await self._ensure_root_ca(namespace)
        return None

    async def _ensure_root_ca(self, namespace: str) -> None:
        existing = self.configmaps.cache.get_by_name(namespace, ROOT_CA_CONFIGMAP)
        data = {"ca.crt": self.root_ca}
        if existing is None:
            await self._create(CONFIGMAPS, namespace, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                             "annotations": {"kubernetes.io/description": (
                                 "Contains a CA bundle that can be used to verify the kube-apiserver "
                                 "when using internal endpoints such as the internal service IP or "
                                 "kubernetes.default.svc. No other usage is guaranteed across "
                                 "distributions of Kubernetes clusters.")}},
                "data": data,
            })
        elif existing.get("data") != data:
            try:
                await self.client.update(CONFIGMAPS, {**existing, "data": data})
            except ApiError as e:
                if e.code != 404:
                    raise

    async def _create(self, resource: Any, namespace: str, obj: Obj) -> None:
        try:
            await self.client.create(resource, obj, namespace)
        except ApiError as e:
            # 409: it exists (our cache lags); 403: the namespace started terminating.
            if e.code not in (409, 403, 404):
                raise
