"""Objects every cluster has from its first second: system namespaces and the API's Service.

Created through the registry (so they are defaulted, validated and watched like any other
object) when missing, on every start: ``default``, ``kube-system``, ``kube-public``,
``kube-node-lease``; the ``kubernetes`` Service in ``default`` at 10.43.0.1:443 and its
Endpoints / EndpointSlice pointing at this API server; the PriorityClasses
``system-cluster-critical`` and ``system-node-critical``.
"""

from __future__ import annotations

import logging
from typing import Any

from k3py.api import errors
from k3py.server.apiserver.allocators import KUBERNETES_SERVICE_IP
from k3py.server.apiserver.priority import system_priority_classes
from k3py.server.apiserver.registry import Registry, WriteOptions

log = logging.getLogger("k3py.apiserver.system")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _ensure(registry: Registry, group: str, version: str, plural: str, namespace: str, obj: dict[str, Any]) -> None:
    info = registry.table.lookup(group, version, plural)
    if info is None:
        return
    try:
        await registry.get(info, namespace, obj["metadata"]["name"])
        return
    except errors.ApiError as e:
        if e.code != 404:
            raise
    try:
        await registry.create(info, namespace, obj, WriteOptions(field_manager="kube-apiserver"))
    except errors.ApiError as e:
        if e.reason != "AlreadyExists":
            raise


async def ensure_system_objects(registry: Registry, advertise_ip: str, port: int) -> None:
    for name in SYSTEM_NAMESPACES:
        await _ensure(
            registry, "", "v1", "namespaces", "",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}},
        )  # fmt: skip
    await _ensure(
        registry, "", "v1", "services", "default",
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP", "clusterIP": KUBERNETES_SERVICE_IP, "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            },
        },
    )  # fmt: skip
    await _ensure(
        registry, "", "v1", "endpoints", "default",
        {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        },
    )  # fmt: skip
    await _ensure(
        registry, "discovery.k8s.io", "v1", "endpointslices", "default",
        {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [advertise_ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    )  # fmt: skip
    for priority_class in system_priority_classes():
        await _ensure(registry, "scheduling.k8s.io", "v1", "priorityclasses", "", priority_class)
