"""The node's service proxy: Services and EndpointSlices made into one nftables table.

What kube-proxy's nftables mode does, on every node that runs a kubelet (the server's
in-process agent and ``k3py agent``): ClusterIPs (from pods and from the node itself),
NodePorts on the node's addresses, LoadBalancer ingress addresses (ServiceLB's), externalIPs;
random balancing over ready endpoints (Serving+Terminating ones only when none is Ready);
sessionAffinity ClientIP with its timeout; externalTrafficPolicy and internalTrafficPolicy
Local (client address kept, healthCheckNodePort answered); hairpin; connection refused at
once for a Service without endpoints; stale UDP flows removed when endpoints go. Services
without a selector work with whatever EndpointSlices name them; ExternalName and headless
Services get no rules (DNS only), nor does a Service annotated ``k3py.io/node-local: "true"``
(the cluster DNS, answered on the node itself).

    model        Services and EndpointSlices read into values; upstream's endpoint categories
    ruleset      the table rendered: the node's fixed part and one group per Service port
    syncer       applies the difference: new chains/sets (nft -f), elements (netlink), removals
    netlink      nf_tables set elements over netlink, in one transaction; names listed
    nft          running ``nft -f``
    conntrack    deleting stale UDP flows (the conntrack tool)
    healthcheck  the healthCheckNodePort HTTP servers
    config       ProxyConfig, the table's name
    state        ProxyState: the worker thread's side (model → rules → syncer, UDP clean-up)
    proxy        ServiceProxy, the task (informers → worker thread → kernel), the service CIDR
                 route, remove_service_proxy

One table per agent, named after its data dir (``k3py-proxy-<12 hex>``), next to the pod
network's ``k3py-nat`` (hostPorts), which it never touches.
"""

from k3py.agent.proxy.config import ProxyConfig, table_name
from k3py.agent.proxy.proxy import ServiceProxy, remove_service_proxy

__all__ = ["ProxyConfig", "ServiceProxy", "remove_service_proxy", "table_name"]
