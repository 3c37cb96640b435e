"""Issue #13, cluster DNS, end to end: names resolved from real pods with Debian's ``dig`` and
``nslookup`` (image ``tools:latest``), busybox's ``nslookup``, and glibc's resolver
(``getent``), against a ``k3py server`` with its in-process node agent on its own test host.

Names outside the cluster go to a test upstream resolver (dnsmasq, authoritative for
``external.test``) that the fixture starts in a network namespace of its own, joined to the
cluster's test host by a veth pair (192.0.2.0/24, TEST-NET-1); the server gets it through
``--resolv-conf``. Nothing leaves the two namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.cluster import TestCluster, TestHost
from tests.dns.upstream import dnsmasq
from tests.e2e.test_kubectl_workloads import _node_ready
from tests.images import busybox_archive, debian_tools_archive

DNS = "10.43.0.10"
UPSTREAM = "192.0.2.53"
HOLD = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def _pod(name: str, image: str, command: list[str], **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"role": "client"}},
            "spec": {"terminationGracePeriodSeconds": 1, **spec,
                     "containers": [{"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": command}]}}


def _manifests() -> list[dict]:
    httpd = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    bulk_endpoints = [{"addresses": [f"10.42.200.{i}"], "conditions": {"ready": True}} for i in range(1, 101)]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
         "spec": {"serviceName": "web", "replicas": 3, "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                      "command": httpd, "ports": [{"name": "http", "containerPort": 80}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "front"},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
         "spec": {"type": "ExternalName", "externalName": "www.external.test"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody"},
         "spec": {"clusterIP": "None", "selector": {"app": "nobody"}, "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bulk"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "bulk-1", "labels": {"kubernetes.io/service-name": "bulk"}},
         "addressType": "IPv4", "endpoints": bulk_endpoints, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        _pod("client", "tools:latest", HOLD),
        _pod("bb", "busybox", HOLD),
        _pod("default-dns", "busybox", HOLD, dnsPolicy="Default"),
        _pod("none-dns", "busybox", HOLD, dnsPolicy="None",
             dnsConfig={"nameservers": ["192.0.2.99"], "searches": ["only.example"],
                        "options": [{"name": "ndots", "value": "2"}]}),
        _pod("hostnet", "tools:latest", HOLD, hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"),
        _pod("hostnet-default", "busybox", HOLD, hostNetwork=True),
    ]


class Upstream:
    """A network namespace with dnsmasq on 192.0.2.53, a veth away from the cluster's test host."""

    def __init__(self, cluster_ns: str) -> None:
        self.host = TestHost("k3py-up")
        self.link = f"up{os.getpid() % 100000}"
        subprocess.run(["ip", "link", "add", f"{self.link}a", "netns", cluster_ns, "type", "veth",
                        "peer", "name", f"{self.link}b", "netns", self.host.name], check=True)
        for ns, dev, address in ((cluster_ns, f"{self.link}a", "192.0.2.1/24"),
                                 (self.host.name, f"{self.link}b", f"{UPSTREAM}/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        self._dnsmasq = dnsmasq(UPSTREAM, 53, netns=self.host.name)
        self._dnsmasq.__enter__()

    def set_link(self, up: bool) -> None:
        subprocess.run(["ip", "-n", self.host.name, "link", "set", f"{self.link}b", "up" if up else "down"], check=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._dnsmasq.__exit__(None, None, None)
        self.host.close()


@pytest.fixture(scope="module")
def upstream_holder() -> Iterator[list[Upstream]]:
    holder: list[Upstream] = []
    yield holder
    for upstream in holder:
        upstream.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, upstream_holder: list[Upstream]) -> Iterator[TestCluster]:
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    base = tmp_path_factory.mktemp("dns-e2e")
    store = ImageStore(base / "agent" / "runtime" / "images")
    import_archive(store, busybox_archive())
    import_archive(store, debian_tools_archive())
    resolv = base / "node-resolv.conf"
    resolv.write_text(f"nameserver {UPSTREAM}\nsearch corp.test\n")
    with TestCluster(base, ["--resolv-conf", str(resolv)], agent=True) as cluster:
        upstream_holder.append(Upstream(cluster.netns))
        cluster.wait_for(lambda: _node_ready(cluster), timeout=60, interval=0.2, what="a Ready node")
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": _manifests()}))
        names = ["client", "bb", "default-dns", "none-dns", "hostnet", "hostnet-default", "web-0", "web-1", "web-2"]

        def all_running() -> bool:
            pods = cluster.kubectl_json("get", "pods")["items"]
            running = {p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Running"
                       and all(c["status"] == "True" for c in p["status"].get("conditions", []) if c["type"] == "Ready")}
            return set(names) <= running

        cluster.wait_for(all_running, timeout=180, interval=0.5, what=f"the pods running\n{cluster.server_log()}")
        yield cluster


@pytest.fixture(scope="module")
def upstream(cluster: TestCluster, upstream_holder: list[Upstream]) -> Upstream:
    return upstream_holder[0]


def _exec(cluster: TestCluster, pod: str, *argv: str, check: bool = True) -> str:
    return cluster.kubectl("exec", pod, "--", *argv, check=check, timeout=60).stdout


def _dig(cluster: TestCluster, *args: str, pod: str = "client") -> str:
    """dig's output, each line's whitespace made single spaces."""
    out = _exec(cluster, pod, "dig", "+time=2", "+tries=2", *args)
    return "\n".join(" ".join(line.split()) for line in out.splitlines())


def _pod_ip(cluster: TestCluster, name: str) -> str:
    return cluster.kubectl_json("get", "pod", name)["status"]["podIP"]


def _until(cluster: TestCluster, check, what: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    return cluster.wait_for(check, timeout=timeout, interval=0.3, what=what)


def test_nslookup_kubernetes_default(cluster: TestCluster) -> None:
    bind = _exec(cluster, "client", "nslookup", "kubernetes.default")
    assert "Name:\tkubernetes.default.svc.cluster.local" in bind and "Address: 10.43.0.1" in bind, bind
    assert f"Server:\t\t{DNS}" in bind
    busybox = _exec(cluster, "bb", "nslookup", "kubernetes.default.svc.cluster.local")
    assert "10.43.0.1" in busybox, busybox


def test_a_service_answers_by_every_name_a_pod_may_use(cluster: TestCluster) -> None:
    front_ip = cluster.kubectl_json("get", "svc", "front")["spec"]["clusterIP"]
    for name in ("front", "front.default", "front.default.svc", "front.default.svc.cluster.local."):
        # (dig tries a name with fewer than ndots dots only with the search domains appended)
        assert _dig(cluster, "+short", "+search", name).split() == [front_ip], name
        # glibc's resolver, with the search list and ndots:5 from the pod's resolv.conf
        assert _exec(cluster, "client", "getent", "hosts", name).split()[0] == front_ip


def test_headless_service_resolves_to_every_ready_pod(cluster: TestCluster) -> None:
    pod_ips = sorted(_pod_ip(cluster, f"web-{i}") for i in range(3))
    assert sorted(_dig(cluster, "+short", "web.default.svc.cluster.local").split()) == pod_ips
    full = _dig(cluster, "web.default.svc.cluster.local")
    assert "status: NOERROR" in full and "flags: qr aa rd ra" in full
    assert all(f"web.default.svc.cluster.local. 5 IN A {ip}" in full for ip in pod_ips), full


def test_statefulset_pods_have_stable_names(cluster: TestCluster) -> None:
    for i in range(3):
        ip = _pod_ip(cluster, f"web-{i}")
        assert _dig(cluster, "+short", f"web-{i}.web.default.svc.cluster.local").split() == [ip]
        assert _exec(cluster, "client", "getent", "hosts", f"web-{i}.web").split()[0] == ip
    # the pod's own FQDN, as its /etc/hosts and hostname -f see it
    assert _exec(cluster, "web-1", "cat", "/etc/hosts").count("web-1.web.default.svc.cluster.local") == 1


def test_external_name_is_a_cname_to_the_upstream_name(cluster: TestCluster, upstream: Upstream) -> None:
    out = _dig(cluster, "ext.default.svc.cluster.local")
    assert "ext.default.svc.cluster.local. 5 IN CNAME www.external.test." in out, out
    assert "www.external.test. 60 IN A 192.0.2.81" in out, out
    assert _exec(cluster, "client", "getent", "hosts", "ext").split()[0] == "192.0.2.81"


def test_srv_records_for_named_ports(cluster: TestCluster) -> None:
    headless = sorted(_dig(cluster, "+short", "SRV", "_http._tcp.web.default.svc.cluster.local").splitlines())
    assert headless == sorted(f"0 33 80 web-{i}.web.default.svc.cluster.local." for i in range(3))
    assert _dig(cluster, "+short", "SRV", "_http._tcp.front.default.svc.cluster.local").split() == [
        "0", "100", "80", "front.default.svc.cluster.local."]
    assert "status: NXDOMAIN" in _dig(cluster, "SRV", "_https._tcp.front.default.svc.cluster.local")


def test_ptr_records_for_service_and_pod_addresses(cluster: TestCluster) -> None:
    front_ip = cluster.kubectl_json("get", "svc", "front")["spec"]["clusterIP"]
    assert _dig(cluster, "+short", "-x", front_ip).split() == ["front.default.svc.cluster.local."]
    assert _dig(cluster, "+short", "-x", "10.43.0.1").split() == ["kubernetes.default.svc.cluster.local."]
    web0 = _pod_ip(cluster, "web-0")
    ptr = set(_dig(cluster, "+short", "-x", web0).split())
    assert "web-0.web.default.svc.cluster.local." in ptr  # (also web-0.front..., its other Service)


def test_nxdomain_versus_nodata(cluster: TestCluster) -> None:
    assert "status: NXDOMAIN" in _dig(cluster, "nosuch.default.svc.cluster.local")
    assert "status: NXDOMAIN" in _dig(cluster, "nobody.default.svc.cluster.local")  # headless, no ready pod
    assert "status: NXDOMAIN" in _dig(cluster, "anything.nosuchns.svc.cluster.local")
    for name, rdtype in (("front.default.svc.cluster.local", "AAAA"), ("default.svc.cluster.local", "A"),
                         ("front.default.svc.cluster.local", "TXT")):
        out = _dig(cluster, rdtype, name)
        assert "status: NOERROR" in out and "ANSWER: 0" in out and "IN SOA ns.dns.cluster.local." in out, out


def test_a_big_answer_is_truncated_over_udp_and_retried_over_tcp(cluster: TestCluster) -> None:
    out = _dig(cluster, "+noedns", "bulk.default.svc.cluster.local")
    assert "Truncated, retrying in TCP mode." in out, out
    assert "ANSWER: 100" in out
    over_tcp = _dig(cluster, "+tcp", "+short", "bulk.default.svc.cluster.local").split()
    assert len(over_tcp) == 100


def test_dns_policies(cluster: TestCluster) -> None:
    assert _exec(cluster, "bb", "cat", "/etc/resolv.conf") == (
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.test\n"
        f"nameserver {DNS}\noptions ndots:5\n")
    node_file = f"search corp.test\nnameserver {UPSTREAM}\n"
    assert _exec(cluster, "default-dns", "cat", "/etc/resolv.conf") == node_file
    assert _exec(cluster, "hostnet-default", "cat", "/etc/resolv.conf") == node_file
    assert _exec(cluster, "none-dns", "cat", "/etc/resolv.conf") == (
        "search only.example\nnameserver 192.0.2.99\noptions ndots:2\n")
    # ClusterFirstWithHostNet: a pod on the node's network still asks the cluster DNS
    assert "ndots:5" in _exec(cluster, "hostnet", "cat", "/etc/resolv.conf")
    assert _dig(cluster, "+short", "+search", "kubernetes.default", pod="hostnet").split() == ["10.43.0.1"]
    # Default: straight to the node's upstream
    assert _exec(cluster, "default-dns", "nslookup", "www.external.test").count("192.0.2.81") == 1


def test_external_names_go_to_the_upstream_and_a_dead_upstream_is_a_clear_servfail(
    cluster: TestCluster, upstream: Upstream,
) -> None:
    assert _dig(cluster, "+short", "www.external.test").split() == ["192.0.2.81"]
    assert _exec(cluster, "client", "getent", "ahostsv4", "api.external.test").split()[0] == "192.0.2.82"
    assert "status: NXDOMAIN" in _dig(cluster, "missing.external.test")
    upstream.set_link(False)
    try:
        out = _dig(cluster, "+time=6", "+tries=1", "not-cached-yet.external.test")  # our answer comes after 2 s
        assert "status: SERVFAIL" in out and "EDE: 22 (No Reachable Authority)" in out, out
        assert f"{UPSTREAM}:53" in out
        assert _dig(cluster, "+short", "front.default.svc.cluster.local")  # cluster names unaffected
    finally:
        upstream.set_link(True)
    _until(cluster, lambda: _dig(cluster, "+short", "again.external.test") == "" and
           "NXDOMAIN" in _dig(cluster, "again.external.test"), "the upstream back")


FLOOD = r"""
import os, socket, struct, sys, time
target, seconds = sys.argv[1], float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setblocking(False)
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    labels = (os.urandom(6).hex().encode(), b"default", b"svc", b"cluster", b"local")
    name = b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
    try:
        sock.sendto(struct.pack("!HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1", (target, 53))
    except BlockingIOError:
        pass
    n += 1
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
print(n)
"""


def test_hostile_queries_and_a_flood_leave_the_server_answering(cluster: TestCluster) -> None:
    def hostile() -> list[bytes | None]:
        replies: list[bytes | None] = []
        for payload in (struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x07garbage",
                        struct.pack("!HHHHHH", 8, 0x0100, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2,
                        struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0) + b"\x00" * 1500):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(3)
                sock.sendto(payload, (DNS, 53))
                replies.append(sock.recv(4096))
        return replies

    for reply in cluster.in_netns(hostile):
        assert reply is not None and reply[3] & 0x0F == 1  # FORMERR
    flood = subprocess.Popen([*cluster.host.exec_argv([sys.executable, "-c", FLOOD, DNS, "6"])],  # type: ignore[union-attr]
                             stdout=subprocess.PIPE)
    try:
        time.sleep(1)  # the flood is running (a measurement window, not a condition)
        answered = 0
        for _ in range(5):
            out = _dig(cluster, "+short", "+tries=3", "+time=1", "kubernetes.default.svc.cluster.local")
            answered += out.split() == ["10.43.0.1"]
        started = time.monotonic()
        cluster.kubectl("get", "pods")  # the API server shares the loop: still quick
        api_seconds = time.monotonic() - started
    finally:
        sent = int(flood.communicate(timeout=60)[0] or 0)
    assert sent > 10_000, "the flood was too weak to test anything"
    assert answered == 5, f"{answered}/5 lookups answered during a flood of {sent} queries"
    assert api_seconds < 5
    # the loop watchdog (tests/e2e/conftest.py) fails this test if the flood held the loop
