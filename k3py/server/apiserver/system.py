"""Objects every cluster has from its first second: system namespaces and the API's Service.

Created through the registry (so they are defaulted, validated and watched like any other
object) when missing, on every start: ``default``, ``kube-system``, ``kube-public``,
``kube-node-lease``; the ``kubernetes`` Service in ``default`` at 10.43.0.1:443 and its
Endpoints / EndpointSlice pointing at this API server; the ``kube-dns`` Service in
``kube-system`` at the cluster DNS address (10.43.0.10 unless ``--cluster-dns``), ports 53/UDP
``dns`` and 53/TCP ``dns-tcp``; the PriorityClasses ``system-cluster-critical`` and
``system-node-critical``.

``kube-dns`` has no selector and no endpoints: every node answers on that address itself (its
node agent's DNS server, k3py/agent/dns). The annotation ``k3py.io/node-local: "true"`` says so
to the service proxy, which programs no rules for such a Service. If the address is taken by
another Service, the server still starts and says why ``kube-dns`` is missing.
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
DEFAULT_CLUSTER_DNS = "10.43.0.10"
NODE_LOCAL_ANNOTATION = "k3py.io/node-local"  # the contract with the service proxy: no rules


def kube_dns_service(cluster_dns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "KubeDNS"},
            "annotations": {NODE_LOCAL_ANNOTATION: "true"},
        },
        "spec": {
            "type": "ClusterIP", "clusterIP": cluster_dns, "clusterIPs": [cluster_dns], "sessionAffinity": "None",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    }  # fmt: skip


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


async def ensure_system_objects(
    registry: Registry, advertise_ip: str, port: int, cluster_dns: str = DEFAULT_CLUSTER_DNS
) -> None:
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
    if cluster_dns:
        try:
            await _ensure(registry, "", "v1", "services", "kube-system", kube_dns_service(cluster_dns))
        except errors.ApiError as e:
            log.error("cannot create the kube-dns Service at %s: %s", cluster_dns, e.message)
    for priority_class in system_priority_classes():
        await _ensure(registry, "scheduling.k8s.io", "v1", "priorityclasses", "", priority_class)
