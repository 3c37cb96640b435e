"""Cluster DNS: a DNS server in the node agent, answering from informer caches, forwarding
the rest (what CoreDNS does in k3s, placed node-local like NodeLocal DNSCache).

    records     ClusterRecords: the specification's records from Services, EndpointSlices and
                Namespaces, changed incrementally, with existence counts (NXDOMAIN vs NODATA)
    feed        RecordFeed: the three informers, applied to the records in budgeted slices
    resolver    Resolver: one question → one answer (the specification, record for record);
                what is not ours becomes a Forward
    forwarder   Forwarder: upstream resolvers from the node's resolv.conf, cache, SERVFAIL + EDE
    resolvconf  which resolv.conf the node uses, its parsing, which nameservers may be used
    wire        QueryProcessor: bytes in, bytes out — checks, FORMERR/NOTIMP/REFUSED, sizes,
                truncation, the response cache
    server      DNSServer: UDP and TCP listeners on the asyncio loop, with a per-iteration budget
    interface   the dummy interface ``k3py-dns`` holding the cluster DNS address on the node
    node        ClusterDNS: all of it, started and stopped by the node agent

Every node runs one, listening on the cluster DNS address (10.43.0.10) which it holds on its
own interface, so pods' queries never leave their node. The API server creates the Service
``kube-system/kube-dns`` at that address with the annotation ``k3py.io/node-local: "true"``,
which tells the service proxy to leave its traffic alone.

Nothing is imported here, so the kubelet can read ``resolvconf`` without loading dnspython.
"""
