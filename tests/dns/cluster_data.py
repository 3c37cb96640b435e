"""The in-memory cluster the resolver tests ask about: Services, EndpointSlices and
Namespaces as the API server stores them."""

from __future__ import annotations

from typing import Any

from k3py.agent.dns.records import ClusterRecords

Obj = dict[str, Any]


def service(name: str, namespace: str, cluster_ip: str | None = None, ports: list[tuple[str, int, str]] = (),  # type: ignore[assignment]
            *, cluster_ips: list[str] | None = None, external_name: str = "", annotations: Obj | None = None) -> Obj:
    spec: Obj = {"ports": [{"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
                           for n, p, proto in ports]}
    if external_name:
        spec.update(type="ExternalName", externalName=external_name)
    else:
        spec.update(type="ClusterIP", clusterIP=cluster_ip or (cluster_ips or ["None"])[0])
        if cluster_ips:
            spec["clusterIPs"] = cluster_ips
    return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}}, "spec": spec}


def endpoint_slice(name: str, namespace: str, service_name: str, endpoints: list[Obj],
                   ports: list[tuple[str, int, str]] = (), address_type: str = "IPv4") -> Obj:  # type: ignore[assignment]
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def ready(address: str, hostname: str = "", is_ready: bool | None = True) -> Obj:
    endpoint: Obj = {"addresses": [address]}
    if is_ready is not None:
        endpoint["conditions"] = {"ready": is_ready}
    if hostname:
        endpoint["hostname"] = hostname
    return endpoint


def specification_cluster() -> ClusterRecords:
    """One of each kind the specification describes (its examples, in our address plan)."""
    records = ClusterRecords("cluster.local")
    for namespace in ("default", "shop", "empty-ns"):
        records.set_namespace(namespace)
    records.set_service(service("kubernetes", "default", "10.43.0.1", [("https", 443, "TCP")]))
    records.set_service(service("dual", "shop", cluster_ips=["10.43.0.20", "fd00:43::20"],
                                ports=[("http", 80, "TCP"), ("", 8080, "TCP"), ("dns", 53, "UDP")]))
    records.set_service(service("web", "shop", "None", [("http", 80, "TCP"), ("", 9000, "TCP")]))
    records.set_slice("shop/web-a", endpoint_slice("web-a", "shop", "web", [
        ready("10.42.0.10", "web-0"), ready("10.42.0.11", "web-1"), ready("10.42.0.12"),
        ready("10.42.0.13", "web-3", is_ready=False), ready("10.42.0.14", "web-4", is_ready=None),
    ], [("http", 8080, "TCP"), ("", 9000, "TCP")]))
    records.set_service(service("web6", "shop", "None", [("http", 80, "TCP")]))
    records.set_slice("shop/web6-a", endpoint_slice("web6-a", "shop", "web6", [ready("fd00:42::5", "pet")],
                                                    [("http", 8080, "TCP")], address_type="IPv6"))
    records.set_service(service("empty", "shop", "None", [("http", 80, "TCP")]))
    records.set_slice("shop/empty-a", endpoint_slice("empty-a", "shop", "empty", [ready("10.42.0.20", "e-0", False)]))
    records.set_service(service("tolerant", "shop", "None", [("http", 80, "TCP")],
                                annotations={"service.alpha.kubernetes.io/tolerate-unready-endpoints": "true"}))
    records.set_slice("shop/tolerant-a", endpoint_slice("tolerant-a", "shop", "tolerant", [ready("10.42.0.30", "", False)]))
    records.set_service(service("ext", "shop", external_name="www.external.test"))
    records.set_service(service("alias", "shop", external_name="kubernetes.default.svc.cluster.local"))
    records.set_service(service("loop-a", "shop", external_name="loop-b.shop.svc.cluster.local"))
    records.set_service(service("loop-b", "shop", external_name="loop-a.shop.svc.cluster.local"))
    records.set_service(service("ext-ip", "shop", external_name="192.0.2.1"))
    records.synced = True
    return records
