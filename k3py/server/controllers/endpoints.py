"""Service endpoints: the Endpoints and EndpointSlice objects of every Service with a selector.

Both controllers share :class:`ServiceBackends` — which pods back a Service, and at which port:
pods in the Service's namespace that match ``spec.selector``, have a pod IP, are not finished,
and (unless they are terminating) are listed as ready or not ready by their Ready condition.
Each Service port's ``targetPort`` is resolved per pod (a number, or a container port name
looked up in that pod), so pods whose named ports differ land in different subsets / slices.

- :class:`EndpointsController` writes ``v1 Endpoints`` named like the Service (subsets of
  addresses / notReadyAddresses with targetRefs, grouped by resolved ports) — what
  ``kubectl get endpoints`` and ``kubectl describe service`` show;
- :class:`EndpointSliceController` writes ``discovery.k8s.io/v1`` EndpointSlices labelled
  ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by``, owned by the
  Service, with ready/serving/terminating conditions — what the service proxy and DNS read.

Services without a selector are left alone (their endpoints are managed by hand, like the
``kubernetes`` Service's).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.selectors import SelectorError, label_selector_from_dict
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES, Client
from k3py.server.controllers.common import (
    Obj,
    is_deleting,
    is_pod_ready,
    meta,
    name_of,
    namespace_of,
    pod_phase,
    uid_of,
)

log = logging.getLogger("k3py.controllers.endpoints")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100


def _service_selector(svc: Obj) -> Any:
    selector = (svc.get("spec") or {}).get("selector")
    if not selector:
        return None
    try:
        return label_selector_from_dict({"matchLabels": selector})
    except SelectorError:
        return None


def resolve_port(pod: Obj, target: Any, protocol: str) -> int | None:
    """The pod's port for a Service targetPort (a number or a container port name)."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port.get("containerPort", 0)) or None
    return None


class ServiceBackends(Controller):
    """Shared informers and the pod → service mapping; subclasses write one kind of object."""

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.services = informers.informer(SERVICES)
        self.pods = informers.informer(PODS)
        self.services.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.pods.add_handler(self._pod_changed, self._pod_updated, self._pod_changed)

    def _pod_changed(self, pod: Obj) -> None:
        labels = meta(pod).get("labels") or {}
        for svc in self.services.cache.list(namespace_of(pod)):
            sel = _service_selector(svc)
            if sel is not None and sel.matches(labels):
                self.enqueue(svc)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if meta(old).get("labels") != meta(new).get("labels"):
            self._pod_changed(old)
        self._pod_changed(new)

    def backends(self, svc: Obj) -> list[tuple[tuple[tuple[str, int, str], ...], Obj, bool, bool]]:
        """(resolved ports, pod, serving, terminating) for each pod backing ``svc``: *serving*
        is the pod's Ready condition (or publishNotReadyAddresses), whether or not it is
        terminating — upstream's EndpointSlice ``serving``."""
        sel = _service_selector(svc)
        if sel is None:
            return []
        spec = svc.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        out = []
        for pod in self.pods.cache.list(namespace_of(svc)):
            if not sel.matches(meta(pod).get("labels") or {}):
                continue
            if not (pod.get("status") or {}).get("podIP") or pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            ports = []
            for sp in spec.get("ports") or ():
                protocol = sp.get("protocol") or "TCP"
                target = sp.get("targetPort", sp.get("port"))
                resolved = resolve_port(pod, target, protocol)
                if resolved is not None:
                    ports.append((sp.get("name") or "", resolved, protocol))
            out.append((tuple(ports), pod, publish_not_ready or is_pod_ready(pod), is_deleting(pod)))
        return out


def _hostname_for(pod: Obj, svc: Obj) -> str:
    """The endpoint's ``hostname``: the pod's, when its ``subdomain`` names this Service
    (upstream's ShouldSetHostname) — what gives StatefulSet pods their DNS names."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == name_of(svc) and namespace_of(pod) == namespace_of(svc):
        return str(spec["hostname"])
    return ""


def _target_ref(pod: Obj) -> Obj:
    return {"kind": "Pod", "namespace": namespace_of(pod), "name": name_of(pod), "uid": uid_of(pod)}


class EndpointsController(ServiceBackends):
    """See the module docstring."""

    name = "endpoints"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.endpoints = informers.informer(ENDPOINTS)
        self.endpoints.add_handler(on_delete=self.enqueue)

    async def reconcile(self, key: Hashable) -> float | None:
        svc = self.services.cache.get(str(key))
        namespace, _, name = str(key).rpartition("/")
        current = self.endpoints.cache.get(str(key))
        if svc is None:
            if current is not None and not (meta(current).get("labels") or {}).get("endpoints.k3py.io/manual"):
                try:
                    await self.client.delete(ENDPOINTS, name, namespace)
                except ApiError as e:
                    if e.code != 404:
                        raise
            return None
        if _service_selector(svc) is None:
            return None
        groups: dict[tuple[tuple[str, int, str], ...], Obj] = {}
        publish_not_ready = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        for ports, pod, serving, terminating in sorted(self.backends(svc), key=lambda b: b[1]["status"]["podIP"]):
            if terminating and not publish_not_ready:
                continue  # v1 Endpoints never list terminating pods (unless told to publish all)
            subset = groups.setdefault(ports, {})
            address = {"ip": pod["status"]["podIP"], "targetRef": _target_ref(pod)}
            if _hostname_for(pod, svc):
                address["hostname"] = _hostname_for(pod, svc)
            if (pod.get("spec") or {}).get("nodeName"):
                address["nodeName"] = pod["spec"]["nodeName"]
            subset.setdefault("addresses" if serving else "notReadyAddresses", []).append(address)
        subsets = []
        for ports, subset in groups.items():
            if ports:
                subset["ports"] = [{"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
                                   for n, p, proto in ports]
            subsets.append(subset)
        labels = dict(meta(svc).get("labels") or {})
        desired: Obj = {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "subsets": subsets,
        }
        if current is None:
            try:
                await self.client.create(ENDPOINTS, desired, namespace)
            except ApiError as e:
                if e.code not in (409, 403):
                    raise
            return None
        if (current.get("subsets") or []) == subsets and (meta(current).get("labels") or {}) == labels:
            return None
        updated = copy.deepcopy(current)
        updated["subsets"] = subsets
        updated["metadata"]["labels"] = labels
        await self.client.update(ENDPOINTS, updated)
        return None


class EndpointSliceController(ServiceBackends):
    """See the module docstring."""

    name = "endpointslice"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.slices = informers.informer(ENDPOINTSLICES, {"service": self._slice_service})
        self.slices.add_handler(on_delete=self._slice_deleted, on_update=lambda _o, n: self._slice_deleted(n))

    @staticmethod
    def _slice_service(obj: Obj) -> list[str]:
        labels = meta(obj).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or SERVICE_NAME_LABEL not in labels:
            return []
        return [f"{namespace_of(obj)}/{labels[SERVICE_NAME_LABEL]}"]

    def _slice_deleted(self, obj: Obj) -> None:
        for key in self._slice_service(obj):
            self.queue.add(key)

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        svc = self.services.cache.get(key)
        existing = sorted(self.slices.cache.by_index("service", key), key=lambda s: name_of(s))
        if svc is None or _service_selector(svc) is None:
            # The Service's garbage collection removes owned slices; stale ones without an
            # owner (selector removed) are deleted here.
            if svc is not None:
                for s in existing:
                    await self._delete(s)
            return None
        groups: dict[tuple[tuple[str, int, str], ...], list[Obj]] = {}
        publish_not_ready = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        for ports, pod, serving, terminating in sorted(self.backends(svc), key=lambda b: b[1]["status"]["podIP"]):
            # Never ready while terminating, unless every address is to be published.
            ready = publish_not_ready or (serving and not terminating)
            endpoint: Obj = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "targetRef": _target_ref(pod),
            }
            if _hostname_for(pod, svc):
                endpoint["hostname"] = _hostname_for(pod, svc)
            if (pod.get("spec") or {}).get("nodeName"):
                endpoint["nodeName"] = pod["spec"]["nodeName"]
            groups.setdefault(ports, []).append(endpoint)
        if not groups:
            groups[()] = []  # upstream keeps one empty placeholder slice per Service
        desired: list[tuple[list[Obj], list[Obj]]] = []
        for ports, endpoints in groups.items():
            port_list = [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]
            for start in range(0, max(1, len(endpoints)), MAX_ENDPOINTS_PER_SLICE):
                desired.append((port_list, endpoints[start:start + MAX_ENDPOINTS_PER_SLICE]))
        for i, (ports, endpoints) in enumerate(desired):
            if i < len(existing):
                current = existing[i]
                # The server may omit empty lists: compare them as lists.
                if (current.get("endpoints") or []) == endpoints and (current.get("ports") or []) == ports:
                    continue
                updated = copy.deepcopy(current)
                updated["endpoints"] = endpoints
                updated["ports"] = ports
                await self.client.update(ENDPOINTSLICES, updated)
            else:
                await self._create(svc, ports, endpoints)
        for stale in existing[len(desired):]:
            await self._delete(stale)
        return None

    async def _create(self, svc: Obj, ports: list[Obj], endpoints: list[Obj]) -> None:
        labels = {k: v for k, v in (meta(svc).get("labels") or {}).items()}
        labels.update({SERVICE_NAME_LABEL: name_of(svc), MANAGED_BY_LABEL: MANAGED_BY})
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{name_of(svc)}-",
                "namespace": namespace_of(svc),
                "labels": labels,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name_of(svc), "uid": uid_of(svc),
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        try:
            await self.client.create(ENDPOINTSLICES, body, namespace_of(svc))
        except ApiError as e:
            if e.code != 403:  # namespace terminating
                raise

    async def _delete(self, s: Obj) -> None:
        try:
            await self.client.delete(ENDPOINTSLICES, name_of(s), namespace_of(s), preconditions={"uid": uid_of(s)})
        except ApiError as e:
            if e.code not in (404, 409):
                raise
