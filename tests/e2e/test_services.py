"""Issue #13 acceptance, the service proxy: Services reached the way users reach them.

One ``k3py server`` with its in-process agent on a test host that also has a "LAN": a veth
pair to one more namespace (TEST-NET-1: the node 192.0.2.1, which is its InternalIP and so
ServiceLB's ingress address; the other host 192.0.2.2, routed to the node). Pods run busybox
``httpd`` (each serving its own name, logging its clients) and Debian's tools image (curl,
netcat, perl) as clients and UDP/TCP echo servers. Everything goes through stock kubectl;
assertions are what a user sees: which pod answered, what its log shows, how a connection
failed and how fast, what ``kubectl get svc`` prints.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import TestCluster, TestHost
from tests.e2e.test_kubectl_workloads import _node_ready
from tests.images import busybox_archive, debian_tools_archive
from tests.proxy.harness import Server

NODE_IP = "192.0.2.1"
LAN_IP = "192.0.2.2"
WEB_REPLICAS = 3

HTTPD = ("touch /tmp/ready; mkdir -p /www; hostname > /www/index.html; "
         "exec httpd -f -vv -p 8080 -h /www")
UDP_ECHO = ("use IO::Socket::INET; chomp(my $h = `hostname`); "
            "my $s = IO::Socket::INET->new(LocalPort => 5353, Proto => 'udp') or die $!; "
            "while ($s->recv(my $m, 512)) { $s->send(\"$h\\n\") }")
TCP_ECHO = ("use IO::Socket::INET; $| = 1; my $s = IO::Socket::INET->new(LocalPort => 7070, Listen => 5, "
            "ReuseAddr => 1) or die $!; while (my $c = $s->accept) { $c->autoflush(1); "
            "while (my $l = <$c>) { print $c \"echo $l\" } }")


class LanCluster(TestCluster):
    """A cluster whose node has an address on a LAN shared with one more test host."""

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = TestHost()
        self.lan = TestHost("k3py-lan")
        node, lan = self.host.name, self.lan.name
        for argv in (
            ["ip", "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", lan],
            ["ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0"],
            ["ip", "-n", node, "link", "set", "eth0", "up"],
            # The node's default route makes 192.0.2.1 its InternalIP (nothing is sent there).
            ["ip", "-n", node, "route", "add", "default", "via", LAN_IP],
            ["ip", "-n", lan, "addr", "add", f"{LAN_IP}/24", "dev", "eth0"],
            ["ip", "-n", lan, "link", "set", "eth0", "up"],
        ):
            subprocess.run(argv, check=True)
        self._spawn_server()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if getattr(self, "lan", None) is not None:
                self.lan.close()

    def on_lan(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.lan.exec_argv(argv), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} on the LAN host exited {result.returncode}: {result.stderr}")
        return result


def _manifests() -> list[dict[str, Any]]:
    web_labels = {"app": "web"}
    probe = {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1,
             "successThreshold": 1}
    web = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": WEB_REPLICAS, "selector": {"matchLabels": web_labels}, "template": {
            "metadata": {"labels": web_labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", HTTPD], "readinessProbe": probe}]}}},
    }

    def svc(name: str, selector: dict[str, str] | None, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {**({"selector": selector} if selector else {}), "ports": ports, **spec}}

    http = [{"name": "http", "port": 80, "targetPort": 8080}]
    echo_labels = {"app": "echo"}
    echo = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": echo_labels}, "template": {
            "metadata": {"labels": echo_labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "udp", "image": "tools:latest", "imagePullPolicy": "IfNotPresent",
                 "command": ["perl", "-e", UDP_ECHO]},
                {"name": "tcp", "image": "tools:latest", "imagePullPolicy": "IfNotPresent",
                 "command": ["perl", "-e", TCP_ECHO]}]}}},
    }
    return [
        web, echo,
        svc("web", web_labels, http),
        svc("web-np", web_labels, [{"name": "http", "port": 80, "targetPort": 8080}], type="NodePort"),
        svc("web-lb", web_labels, [{"name": "http", "port": 8081, "targetPort": 8080}], type="LoadBalancer",
            externalTrafficPolicy="Local"),
        svc("web-sticky", web_labels, http, sessionAffinity="ClientIP"),
        svc("echo", echo_labels, [{"name": "udp", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                                  {"name": "tcp", "port": 7070, "targetPort": 7070, "protocol": "TCP"}]),
        svc("outside-db", None, [{"name": "db", "port": 5432, "targetPort": 9090}]),
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "outside-db-1", "labels": {"kubernetes.io/service-name": "outside-db"}},
         "addressType": "IPv4", "ports": [{"name": "db", "port": 9090, "protocol": "TCP"}],
         "endpoints": [{"addresses": [LAN_IP]}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"}, "spec": {
            "terminationGracePeriodSeconds": 0, "containers": [
                {"name": "tools", "image": "tools:latest", "imagePullPolicy": "IfNotPresent",
                 "command": ["sleep", "infinity"]}]}},
    ]  # fmt: skip


def _ready_endpoints(cluster: TestCluster, service: str) -> list[str]:
    slices = cluster.kubectl_json("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    return sorted(address for s in slices for e in s.get("endpoints") or ()
                  if (e.get("conditions") or {}).get("ready", True) for address in e["addresses"][:1])


def _any_endpoints(cluster: TestCluster, service: str) -> list[str]:
    slices = cluster.kubectl_json("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    return sorted(e["addresses"][0] for s in slices for e in s.get("endpoints") or ())


def _pods(cluster: TestCluster, app: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in cluster.kubectl_json("get", "pods", "-l", f"app={app}")["items"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LanCluster]:
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    tools = debian_tools_archive()
    base = tmp_path_factory.mktemp("services-e2e")
    store = ImageStore(base / "agent" / "runtime" / "images")
    import_archive(store, busybox_archive())
    import_archive(store, tools)
    with LanCluster(base, agent=True) as running:
        running.wait_for(lambda: _node_ready(running), timeout=60, interval=0.2,
                         what=f"a Ready node\n{running.server_log()}")
        running.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": _manifests()}))
        running.wait_for(lambda: len(_ready_endpoints(running, "web")) == WEB_REPLICAS, timeout=180, interval=0.5,
                         what=f"three ready web endpoints\n{running.server_log()}")
        running.wait_for(lambda: _ready_endpoints(running, "echo"), timeout=180, interval=0.5, what="the echo pod")
        running.wait_for(lambda: running.kubectl("get", "pod", "client", "-o", "jsonpath={.status.phase}").stdout
                         == "Running", timeout=180, interval=0.5, what="the client pod")
        running.kubectl("exec", "client", "--", "true")  # the first exec warms kubectl's caches
        yield running


def _ip(cluster: TestCluster, service: str) -> str:
    return cluster.kubectl("get", "service", service, "-o", "jsonpath={.spec.clusterIP}").stdout


def _in_client(cluster: TestCluster, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", "client", "--", "bash", "-c", script, check=False, timeout=timeout)


def _hits(cluster: TestCluster, url: str, count: int) -> Counter[str]:
    out = _in_client(cluster, f"for i in $(seq {count}); do curl -sS -m 5 {url}; done").stdout
    return Counter(line.strip() for line in out.splitlines() if line.strip())


def test_cluster_ip_answers_from_another_pod_and_30_requests_reach_all_3_backends(cluster: LanCluster) -> None:
    web = _ip(cluster, "web")
    seen = _hits(cluster, f"http://{web}/", 30)
    assert sum(seen.values()) == 30 and set(seen) == set(_pods(cluster, "web")), seen
    # From the node itself too.
    assert cluster.run(["curl", "-sS", "-m", "5", f"http://{web}/"]).stdout.strip() in _pods(cluster, "web")


def test_a_failing_readiness_probe_leaves_the_rotation_within_2_seconds(cluster: LanCluster) -> None:
    web = _ip(cluster, "web")
    delays: list[float] = []
    for victim in sorted(_pods(cluster, "web")):
        # The client asks continuously, stamping each answer with the time it came.
        asker = subprocess.Popen(
            cluster.host.exec_argv([*_kubectl(cluster), "exec", "client", "--", "bash", "-c",
                                    f"while true; do echo \"$(date +%s.%N) $(curl -s -m 1 http://{web}/)\"; sleep 0.02; done"]),
            stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(2)
            broken_at = time.time()
            cluster.kubectl("exec", victim, "--", "rm", "/tmp/ready")
            time.sleep(4)
        finally:
            asker.kill()
        answers = [line.split(" ", 1) for line in asker.communicate()[0].splitlines() if " " in line]
        assert any(who == victim for _t, who in answers if float(_t) < broken_at), "the victim never answered"
        last = max((float(t) for t, who in answers if who == victim), default=broken_at)
        assert any(float(t) > broken_at + 3 for t, _who in answers), "the client stopped asking"
        delays.append(last - broken_at)
        cluster.kubectl("exec", victim, "--", "touch", "/tmp/ready")
        cluster.wait_for(lambda: len(_ready_endpoints(cluster, "web")) == WEB_REPLICAS, timeout=30,
                         what="the pod back in rotation")
    assert statistics.median(delays) < 2.0, delays


def _kubectl(cluster: TestCluster) -> list[str]:
    from tests.cluster import find_kubectl

    return [find_kubectl(), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.cache_dir / "default")]


def test_node_port_from_the_nodes_address_and_from_another_host(cluster: LanCluster) -> None:
    node_port = cluster.kubectl_json("get", "service", "web-np")["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    web = set(_pods(cluster, "web"))
    assert cluster.run(["curl", "-sS", "-m", "5", f"http://{NODE_IP}:{node_port}/"]).stdout.strip() in web
    seen = {cluster.on_lan("curl", "-sS", "-m", "5", f"http://{NODE_IP}:{node_port}/").stdout.strip() for _ in range(12)}
    assert seen <= web and len(seen) > 1, seen


def test_load_balancer_shows_its_external_ip_answers_there_and_keeps_the_client_address(cluster: LanCluster) -> None:
    table = cluster.kubectl("get", "service", "web-lb").stdout
    assert re.search(rf"web-lb\s+LoadBalancer\s+\S+\s+{re.escape(NODE_IP)}\s+8081:\d+/TCP", table), table
    who = cluster.on_lan("curl", "-sS", "-m", "5", f"http://{NODE_IP}:8081/").stdout.strip()
    assert who in _pods(cluster, "web")
    # externalTrafficPolicy Local: the backend saw the LAN host's own address.
    cluster.wait_for(lambda: LAN_IP in cluster.kubectl("logs", who).stdout, timeout=10,
                     what=f"{LAN_IP} in the log of {who}")
    # The healthCheckNodePort answers as kube-proxy's: 200 and the count of local endpoints.
    health = cluster.kubectl_json("get", "service", "web-lb")["spec"]["healthCheckNodePort"]
    answer = cluster.on_lan("curl", "-sS", "-m", "5", "-w", "\n%{http_code}", f"http://{NODE_IP}:{health}/healthz").stdout
    body, code = answer.rsplit("\n", 1)
    assert code == "200" and json.loads(body) == {
        "service": {"namespace": "default", "name": "web-lb"}, "localEndpoints": WEB_REPLICAS,
        "serviceProxyHealthy": True}


def test_session_affinity_client_ip_sticks(cluster: LanCluster) -> None:
    seen = _hits(cluster, f"http://{_ip(cluster, 'web-sticky')}/", 12)
    assert sum(seen.values()) == 12 and len(seen) == 1, seen


def test_a_service_without_selector_reaches_a_server_outside_the_cluster(cluster: LanCluster) -> None:
    server = Server(cluster.lan, "the-outside-db", tcp_port=9090, udp_port=9091)
    try:
        answer = _in_client(cluster, f"curl -sS -m 5 telnet://{_ip(cluster, 'outside-db')}:5432 </dev/null").stdout
        assert answer.split() == ["the-outside-db", NODE_IP]  # pod egress is masqueraded off the cluster
    finally:
        server.close()


def test_a_udp_service_keeps_answering_after_its_endpoint_pod_is_replaced(cluster: LanCluster) -> None:
    echo = _ip(cluster, "echo")
    # The same source port every time: one conntrack flow, as a client that keeps its socket.
    ask = f"echo hello | nc -u -w 1 -p 40053 {echo} 53"
    (old,) = _pods(cluster, "echo")
    assert _in_client(cluster, ask).stdout.strip() == old
    cluster.kubectl("delete", "pod", old, "--wait=false")

    def replaced() -> str | None:
        pods = [name for name, pod in _pods(cluster, "echo").items() if name != old
                and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))]
        endpoints = _ready_endpoints(cluster, "echo")
        return pods[0] if pods and len(endpoints) == 1 and old not in endpoints else None

    new = cluster.wait_for(replaced, timeout=120, interval=0.5, what="the echo pod replaced")
    cluster.wait_for(lambda: _in_client(cluster, ask).stdout.strip() == new, timeout=10, interval=0.2,
                     what=f"{new} answering on the same flow")


def test_established_connections_live_through_a_k3py_restart(cluster: LanCluster) -> None:
    echo = _ip(cluster, "echo")
    holder = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "hold", "image": "tools:latest", "imagePullPolicy": "IfNotPresent", "command": ["bash", "-c",
                f"exec 3<>/dev/tcp/{echo}/7070 || exit 1; echo connected; i=0; while true; do i=$((i+1)); "
                "echo \"ping $i\" >&3 || exit 2; read -t 5 line <&3 || exit 3; echo \"$line\"; sleep 0.5; done"]}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(holder))

    def replies() -> int:
        return cluster.kubectl("logs", "holder", check=False).stdout.count("echo ping")

    cluster.wait_for(lambda: replies() >= 2, timeout=120, interval=0.5, what="the holder talking")
    table_before = cluster.run(["nft", "list", "chains", "ip"]).stdout
    cluster.restart(kill=True)
    cluster.wait_for(lambda: _node_ready(cluster), timeout=60, interval=0.5, what="the node back")
    before = replies()
    cluster.wait_for(lambda: replies() >= before + 4, timeout=30, interval=0.5, what="the holder still talking")
    phase = cluster.kubectl("get", "pod", "holder", "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Running" and cluster.kubectl("logs", "holder").stdout.count("connected") == 1
    # The table was reconciled in place, not rebuilt: the same chains (names carry their rules).
    table_after = cluster.run(["nft", "list", "chains", "ip"]).stdout
    assert _chain_names(table_after) == _chain_names(table_before), (table_before, table_after)
    assert _hits(cluster, f"http://{_ip(cluster, 'web')}/", 6)


def _chain_names(listing: str) -> list[str]:
    return sorted(line.split()[1] for line in listing.splitlines() if line.strip().startswith("chain "))


def test_a_flood_of_service_changes_never_blocks_the_event_loop(cluster: LanCluster) -> None:
    count = 300
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"flood-{i}", "labels": {"flood": "yes"}},
                 "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
                for i in range(count)]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": services}),
                    timeout=300)
    last = _ip(cluster, f"flood-{count - 1}")
    cluster.wait_for(lambda: _hits(cluster, f"http://{last}/", 1), timeout=60, interval=0.5,
                     what="the last Service of the flood answering")
    cluster.kubectl("delete", "service", "-l", "flood=yes", timeout=300)
    code = _in_client(cluster, f"curl -sS -m 5 http://{last}/").returncode
    # Gone: refused at once (an unknown service address), not left pointing anywhere.
    cluster.wait_for(lambda: _in_client(cluster, f"curl -sS -m 5 http://{last}/").returncode == 7, timeout=30,
                     what=f"{last} refused (curl said {code})")


def test_scaled_to_zero_the_service_refuses_at_once(cluster: LanCluster) -> None:
    web = _ip(cluster, "web")
    cluster.kubectl("scale", "deployment", "web", "--replicas=0")
    # Terminating pods still serve (and are used while no ready one is left, as upstream):
    # wait until they are gone.
    cluster.wait_for(lambda: not _any_endpoints(cluster, "web"), timeout=60, what="no web endpoints")
    result = _in_client(cluster, f"curl -sv -m 10 -w '%{{time_total}}' http://{web}/")
    assert result.returncode == 7, (result.stdout, result.stderr)  # CURLE_COULDNT_CONNECT
    assert re.search(rf"connect to {re.escape(web)} port 80 .*failed: Connection refused", result.stderr), result.stderr
    assert float(result.stdout or "9") < 1.0, result.stdout  # at once, not a time-out
    # The node itself and the NodePort too.
    node_port = cluster.kubectl_json("get", "service", "web-np")["spec"]["ports"][0]["nodePort"]
    assert cluster.run(["curl", "-sS", "-m", "10", f"http://{web}/"], check=False).returncode == 7
    assert cluster.on_lan("curl", "-sS", "-m", "10", f"http://{NODE_IP}:{node_port}/", check=False).returncode == 7
    # The health check says so as well (503, no local endpoint).
    health = cluster.kubectl_json("get", "service", "web-lb")["spec"]["healthCheckNodePort"]
    answer = cluster.on_lan("curl", "-sS", "-m", "5", "-w", "\n%{http_code}", f"http://{NODE_IP}:{health}/").stdout
    assert answer.endswith("\n503") and '"localEndpoints": 0' in answer
    cluster.kubectl("scale", "deployment", "web", f"--replicas={WEB_REPLICAS}")
    cluster.wait_for(lambda: len(_ready_endpoints(cluster, "web")) == WEB_REPLICAS, timeout=120, what="web back")
