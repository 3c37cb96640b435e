"""Endpoints and EndpointSlices follow a Service's ready pods (in-memory API)."""

from __future__ import annotations

from typing import Any

from k3py.client.interface import DEPLOYMENTS, ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES
from k3py.server.controllers.deployment import DeploymentController
from k3py.server.controllers.endpoints import EndpointsController, EndpointSliceController
from k3py.server.controllers.replicaset import ReplicaSetController
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import SimulatedNodes


def service(name: str = "web", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"selector": selector or {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]}}


def deployment(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                         {"name": "c", "image": "nginx", "ports": [{"name": "web", "containerPort": 8080}]}]}}}}


async def start(plane) -> None:
    await plane.start(EndpointsController, EndpointSliceController, DeploymentController, ReplicaSetController,
                      Scheduler, lambda c, i: SimulatedNodes(c, i, 2))


async def test_endpoints_and_slices_list_ready_pods_with_resolved_ports(plane) -> None:
    await start(plane)
    await plane.client.create(SERVICES, service(), "default")
    await plane.client.create(DEPLOYMENTS, deployment(3), "default")
    ep = await plane.until(lambda: (e := plane.transport.peek(ENDPOINTS, "default", "web")) and e.get("subsets")
                           and len(e["subsets"][0].get("addresses", [])) == 3 and e, what="3 ready addresses")
    pod_ips = sorted(p["status"]["podIP"] for p in plane.transport.all(PODS, "default"))
    (subset,) = ep["subsets"]
    assert sorted(a["ip"] for a in subset["addresses"]) == pod_ips
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    assert all(a["targetRef"]["kind"] == "Pod" and a["nodeName"].startswith("simnode-") for a in subset["addresses"])
    assert ep["metadata"]["labels"] == {"tier": "front"}

    (slice_,) = plane.transport.all(ENDPOINTSLICES, "default")
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert slice_["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert slice_["addressType"] == "IPv4"
    assert sorted(e["addresses"][0] for e in slice_["endpoints"]) == pod_ips
    assert all(e["conditions"] == {"ready": True, "serving": True, "terminating": False} for e in slice_["endpoints"])

    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 1}}, "default")
    await plane.until(lambda: len(plane.transport.peek(ENDPOINTS, "default", "web")["subsets"][0]["addresses"]) == 1
                      and len(plane.transport.all(ENDPOINTSLICES, "default")[0]["endpoints"]) == 1, what="scaled down")


async def test_service_without_matching_pods_has_empty_endpoints_and_is_cleaned_up(plane) -> None:
    await start(plane)
    await plane.client.create(SERVICES, service(selector={"app": "none"}), "default")
    ep = await plane.until(lambda: plane.transport.peek(ENDPOINTS, "default", "web"))
    assert ep["subsets"] == []
    slices = await plane.until(lambda: plane.transport.all(ENDPOINTSLICES, "default"))
    assert slices[0]["endpoints"] == []
    await plane.client.delete(SERVICES, "web", "default")
    await plane.until(lambda: plane.transport.peek(ENDPOINTS, "default", "web") is None, what="endpoints deleted")


# -- readiness, by hand: pods with IPs and conditions set directly, only the two endpoint
# controllers running.

HOLD = "test.k3py.io/hold"


async def backend(plane, name: str, ip: str, ready: bool, phase: str = "Running", **spec: str) -> None:
    pod = await plane.client.create(PODS, {"metadata": {"name": name, "labels": {"app": "web"}},
                                           "spec": {**spec, "nodeName": "n1", "containers": [
                                               {"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": 8080}]}]}},
                                    "default")
    pod["status"] = {"phase": phase, "podIP": ip,
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    await plane.client.update_status(PODS, pod)


async def test_readiness_and_termination_decide_how_pods_are_listed(plane) -> None:
    await plane.start(EndpointsController, EndpointSliceController)
    await backend(plane, "ready", "10.0.0.1", ready=True)
    await backend(plane, "starting", "10.0.0.2", ready=False)
    await backend(plane, "leaving", "10.0.0.3", ready=True)
    await backend(plane, "done", "10.0.0.4", ready=False, phase="Succeeded")
    await plane.client.patch(PODS, "leaving", {"metadata": {"finalizers": [HOLD]}}, "default")
    await plane.client.delete(PODS, "leaving", "default")  # Terminating, still Ready
    await plane.client.create(SERVICES, service(), "default")

    def slice_conditions() -> dict[str, dict[str, bool]]:
        slices = plane.transport.all(ENDPOINTSLICES, "default")
        return {e["addresses"][0]: e["conditions"] for s in slices for e in s.get("endpoints") or []}

    conds = await plane.until(lambda: len(c := slice_conditions()) == 3 and c, what="3 endpoints in slices")
    assert conds == {
        "10.0.0.1": {"ready": True, "serving": True, "terminating": False},
        "10.0.0.2": {"ready": False, "serving": False, "terminating": False},
        # Terminating but still passing its readiness probe: serving, not ready.
        "10.0.0.3": {"ready": False, "serving": True, "terminating": True},
    }
    ep = await plane.until(lambda: (e := plane.transport.peek(ENDPOINTS, "default", "web")) and e.get("subsets") and e)
    (subset,) = ep["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.2"]  # the terminating pod is left out

    # publishNotReadyAddresses: every pod with an IP is ready, terminating or not.
    await plane.client.patch(SERVICES, "web", {"spec": {"publishNotReadyAddresses": True}}, "default")
    await plane.until(lambda: all(c["ready"] for c in slice_conditions().values()), what="all published")
    await plane.until(lambda: sorted(a["ip"] for a in plane.transport.peek(ENDPOINTS, "default", "web")["subsets"][0]["addresses"])
                      == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], what="all addresses ready")
    await plane.client.patch(PODS, "leaving", {"metadata": {"finalizers": None}}, "default")


async def test_pods_whose_subdomain_names_the_service_carry_their_hostname(plane) -> None:
    """Upstream's ShouldSetHostname: what gives StatefulSet pods their DNS names
    (web-0.web.<ns>.svc.<zone>); a pod with another subdomain, or none, gets no hostname."""
    await plane.start(EndpointsController, EndpointSliceController)
    await backend(plane, "web-0", "10.0.0.10", ready=True, hostname="web-0", subdomain="web")
    await backend(plane, "other", "10.0.0.11", ready=True, hostname="other", subdomain="elsewhere")
    await backend(plane, "plain", "10.0.0.12", ready=True)
    await plane.client.create(SERVICES, service(), "default")

    def hostnames() -> dict[str, str]:
        slices = plane.transport.all(ENDPOINTSLICES, "default")
        return {e["addresses"][0]: e.get("hostname", "") for s in slices for e in s.get("endpoints") or []}

    names = await plane.until(lambda: len(h := hostnames()) == 3 and h, what="3 endpoints")
    assert names == {"10.0.0.10": "web-0", "10.0.0.11": "", "10.0.0.12": ""}
    ep = await plane.until(lambda: (e := plane.transport.peek(ENDPOINTS, "default", "web")) and e.get("subsets") and e)
    assert {a["ip"]: a.get("hostname", "") for a in ep["subsets"][0]["addresses"]} == names
