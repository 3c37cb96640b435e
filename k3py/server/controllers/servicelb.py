"""ServiceLB: LoadBalancer Services get their nodes' addresses as ingress (k3s' built-in LB).

k3s answers ``type: LoadBalancer`` without a cloud: the Service's
``status.loadBalancer.ingress`` lists the InternalIPs of the Ready nodes, and traffic to
``<node IP>:<port>`` reaches the Service (the service proxy's job). Without this status
``kubectl get svc`` shows EXTERNAL-IP ``<pending>`` forever and ``helm --wait`` never
finishes. Real nodes are preferred; simulated nodes (label ``node.k3py.io/simulated``) are
used only in a cluster that has nothing else. A Service that stops being a LoadBalancer has
its ingress cleared. ``spec.loadBalancerClass`` set to anything means another controller
owns the Service, as upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import NODES, SERVICES, Client
from k3py.server.controllers.common import Obj, get_condition, meta

log = logging.getLogger("k3py.controllers.servicelb")

SIMULATED_LABEL = "node.k3py.io/simulated"


def node_ingress(nodes: list[Obj]) -> list[Obj]:
    ready = [n for n in nodes if (get_condition(n, "Ready") or {}).get("status") == "True"]
    real = [n for n in ready if (meta(n).get("labels") or {}).get(SIMULATED_LABEL) != "true"]
    chosen = real or ready
    ips: list[str] = []
    for node in sorted(chosen, key=lambda n: meta(n).get("name", "")):
        for address in (node.get("status") or {}).get("addresses") or ():
            if address.get("type") == "InternalIP" and address.get("address") not in ips:
                ips.append(address["address"])
                break
    return [{"ip": ip, "ipMode": "VIP"} for ip in ips]


class ServiceLBController(Controller):
    """See the module docstring."""

    name = "servicelb"
    component = "svccontroller"
    workers = 1

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.services = informers.informer(SERVICES)
        self.nodes = informers.informer(NODES)
        self.services.add_handler(self.enqueue, lambda _o, n: self.enqueue(n))
        self.nodes.add_handler(self._all, self._node_changed, self._all)

    def _all(self, _node: Obj) -> None:
        for svc in self.services.cache.list():
            if (svc.get("spec") or {}).get("type") == "LoadBalancer":
                self.enqueue(svc)

    def _node_changed(self, old: Obj, new: Obj) -> None:
        if (get_condition(old, "Ready") or {}).get("status") != (get_condition(new, "Ready") or {}).get("status") or (
                (old.get("status") or {}).get("addresses") != (new.get("status") or {}).get("addresses")):
            self._all(new)

    async def reconcile(self, key: Hashable) -> float | None:
        cached = self.services.cache.get(str(key))
        if cached is None or meta(cached).get("deletionTimestamp"):
            return None
        spec = cached.get("spec") or {}
        if spec.get("loadBalancerClass"):
            return None
        current = ((cached.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        wanted = node_ingress(self.nodes.cache.list()) if spec.get("type") == "LoadBalancer" else []
        if current == wanted:
            return None
        status = {**(cached.get("status") or {}), "loadBalancer": {"ingress": wanted} if wanted else {}}
        await self.write_status(SERVICES, cached, status)
        return None
