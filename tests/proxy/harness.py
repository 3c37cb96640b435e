"""The service proxy's test harness: a node for real, without an API server.

The node is a network namespace running the real pod network (``NodeNetwork``: bridge,
safety routes, the ``k3py-nat`` table) and the proxy's worker-thread state (``ProxyState``),
driven from a thread that joined the namespace, as the agent would on a host. Its pods are
namespaces of their own set up by ``PodNetwork``, each with a TCP server that answers every
connection with ``"<pod name> <client address>"`` and a UDP server that answers every datagram
with ``"<pod name>"`` — served from threads of the test process (a socket stays in the
namespace it was made in). Services and EndpointSlices are plain dicts, as the informers
would hand them over.

"The outside" is one more namespace wired to the node by a veth pair with TEST-NET-1
addresses (node 192.0.2.1, outside 192.0.2.2): a client on another host, and a server outside
the cluster. Nothing leaves these namespaces; the fixtures delete them all, and with them
every table and route.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.agent.network import NodeNetwork, NodeNetworkConfig, PodNetwork
from k3py.agent.proxy.config import ProxyConfig
from k3py.agent.proxy.proxy import ensure_service_route
from k3py.agent.proxy.state import ProxyState, SyncReport
from k3py.agent.proxy.syncer import RulesetSyncer
from tests.cluster import TestHost

NODE_NAME = "node-a"
NODE_IP = "192.0.2.1"
OUTSIDE_IP = "192.0.2.2"
POD_TCP_PORT = 8080
POD_UDP_PORT = 5353
IO_TIMEOUT = 5.0
_ids = itertools.count()


class Server:
    """TCP and UDP answering servers on sockets made in some namespace."""

    def __init__(self, host: TestHost, name: str, tcp_port: int = POD_TCP_PORT, udp_port: int = POD_UDP_PORT) -> None:
        self.name = name
        self.tcp = host.in_netns(socket.create_server, ("0.0.0.0", tcp_port), backlog=64)
        self.udp = host.in_netns(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", udp_port))
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_tcp, self._serve_udp)]
        for thread in self._threads:
            thread.start()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.peers.append(peer[0])
                with contextlib.suppress(OSError):
                    conn.sendall(f"{self.name} {peer[0]}\n".encode())

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                _data, peer = self.udp.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                self.udp.sendto(self.name.encode(), peer)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self.tcp.close()
        self.udp.close()


@dataclass
class Pod:
    name: str
    uid: str
    host: TestHost
    ip: str
    server: Server | None = None


@dataclass
class ProxyNode:
    host: TestHost
    data_dir: Path
    network: NodeNetwork
    pods: PodNetwork
    state: ProxyState
    nft_scripts: list[str] = field(default_factory=list)
    # What "the API" holds now (as an informer would list it): applied minus deleted.
    services: dict[tuple[str, str], Any] = field(default_factory=dict)
    slices: dict[tuple[str, str], Any] = field(default_factory=dict)
    made: list[TestHost] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)

    # -- cluster objects ---------------------------------------------------------------------

    def sync(self, services: dict[tuple[str, str], Any] | None = None,
             slices: dict[tuple[str, str], Any] | None = None) -> SyncReport:
        for listing, changes in ((self.services, services or {}), (self.slices, slices or {})):
            for key, obj in changes.items():
                if obj is None:
                    listing.pop(key, None)
                else:
                    listing[key] = obj
        return self.host.in_netns(self.state.sync, services or {}, slices or {})

    def restart(self, forget: tuple[tuple[str, str], ...] = ()) -> SyncReport:
        """What a restart of k3py does to the proxy: a new state over the same table, fed what
        the informers list (without the Services in ``forget``, deleted while it was down)."""
        old = self.state
        for key in forget:
            self.services.pop(key, None)
        self.state = ProxyState(old.config, RulesetSyncer(old.config.table))
        old.close()
        return self.host.in_netns(self.state.sync, dict(self.services), dict(self.slices))

    def apply(self, *objects: dict[str, Any]) -> SyncReport:
        services: dict[tuple[str, str], Any] = {}
        slices: dict[tuple[str, str], Any] = {}
        for obj in objects:
            key = (obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])
            (slices if obj.get("kind") == "EndpointSlice" else services)[key] = obj
        return self.sync(services, slices)

    def delete(self, *objects: dict[str, Any]) -> SyncReport:
        services: dict[tuple[str, str], Any] = {}
        slices: dict[tuple[str, str], Any] = {}
        for obj in objects:
            key = (obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])
            (slices if obj.get("kind") == "EndpointSlice" else services)[key] = None
        return self.sync(services, slices)

    # -- namespaces --------------------------------------------------------------------------

    def namespace(self, prefix: str = "k3py-pxc") -> TestHost:
        host = TestHost(prefix)
        self.made.append(host)
        return host

    def add_pod(self, name: str, serve: bool = True) -> Pod:
        host = self.namespace("k3py-pxp")
        uid = f"{name}-{next(_ids)}"
        pod_ip = self.host.in_netns(self.pods.setup, uid, f"/run/netns/{host.name}")
        pod = Pod(name, uid, host, pod_ip.ip)
        if serve:
            pod.server = Server(host, name)
            self.servers.append(pod.server)
        return pod

    def remove_pod(self, pod: Pod) -> None:
        if pod.server is not None:
            pod.server.close()
        self.host.in_netns(self.pods.teardown, pod.uid)

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_in(self.host, *argv, check=check)

    def nft_table(self) -> str:
        return self.sh("nft", "list", "table", "ip", self.state.config.table).stdout

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for host in reversed(self.made):
            host.close()
        self.host.close()


def run_in(host: TestHost, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(host.exec_argv(argv), capture_output=True, text=True, check=check, timeout=60)


def tcp_request(client: TestHost, address: str, port: int, timeout: float = IO_TIMEOUT,
                source_port: int = 0) -> str:
    """Connects from ``client``'s namespace and returns the server's line ("<pod> <peer>")."""

    def attempt() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            if source_port:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                conn.bind(("0.0.0.0", source_port))
            conn.connect((address, port))
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.decode().strip()

    return client.in_netns(attempt)


def connect_error(client: TestHost, address: str, port: int, timeout: float = IO_TIMEOUT) -> tuple[int, float]:
    """The errno of a connect that fails, and how long it took to fail."""

    def attempt() -> tuple[int, float]:
        started = time.monotonic()
        try:
            socket.create_connection((address, port), timeout).close()
        except OSError as exc:
            return exc.errno or -1, time.monotonic() - started
        raise AssertionError(f"connect to {address}:{port} unexpectedly succeeded")

    return client.in_netns(attempt)


def udp_client(client: TestHost) -> socket.socket:
    sock = client.in_netns(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    return sock


def udp_ask(sock: socket.socket, address: str, port: int) -> str | None:
    """One datagram out, the answer back (None if nothing came)."""
    sock.sendto(b"hello", (address, port))
    try:
        return sock.recv(2048).decode()
    except TimeoutError:
        return None


# -- API objects --------------------------------------------------------------------------------


def service(
    name: str,
    cluster_ip: str,
    ports: Sequence[dict[str, Any]] = ({"name": "http", "port": 80, "protocol": "TCP"},),
    namespace: str = "default",
    created: str = "2024-01-01T00:00:00Z",
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                     "annotations": annotations or {}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "ports": [dict(p) for p in ports], **spec},
    }
    if status:
        obj["status"] = status
    return obj


def endpoint(ip: str, node: str = NODE_NAME, ready: bool = True, serving: bool | None = None,
             terminating: bool = False) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node, "conditions": {
        "ready": ready, "serving": ready if serving is None else serving, "terminating": terminating}}


def endpoint_slice(
    service_name: str,
    endpoints: Sequence[dict[str, Any]],
    ports: Sequence[dict[str, Any]] = ({"name": "http", "port": POD_TCP_PORT, "protocol": "TCP"},),
    namespace: str = "default",
    name: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service_name}-abcde", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [dict(p) for p in ports],
        "endpoints": list(endpoints),
    }


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}: last={last!r}")


def make_proxy_node(base: Path, node_name: str = NODE_NAME, pod_cidr: str = "10.42.0.0/24") -> ProxyNode:
    host = TestHost("k3py-pxn")
    try:
        network = NodeNetwork(NodeNetworkConfig(pod_cidr=pod_cidr, data_dir=base / "agent" / "network",
                                                reserved_ports=((6443, "the API server"), (10250, "the kubelet"))))
        host.in_netns(network.start)
        scripts: list[str] = []

        def recording_nft(script: str) -> None:
            from k3py.agent.proxy import nft

            if script:
                scripts.append(script)
            nft.apply(script)

        config = ProxyConfig(node_name=node_name, data_dir=base / "agent", pod_cidr=pod_cidr,
                             reserved_tcp_ports=(6443, 10250))
        state = ProxyState(config, RulesetSyncer(config.table, run_nft=recording_nft))
        host.in_netns(ensure_service_route, config)
        node = ProxyNode(host, base / "agent", network, PodNetwork(network), state, nft_scripts=scripts)
    except BaseException:
        host.close()
        raise
    # The node's uplink and the outside world.
    return node


def connect_outside(node: ProxyNode) -> TestHost:
    outside = node.namespace("k3py-pxo")
    node.sh("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "wan", "netns", f"/run/netns/{outside.name}")
    node.sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "uplink")
    node.sh("ip", "link", "set", "uplink", "up")
    run_in(outside, "ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "wan")
    run_in(outside, "ip", "link", "set", "wan", "up")
    # The outside reaches Services through the node (a static route, as to a load balancer);
    # it has no route to pods.
    run_in(outside, "ip", "route", "add", "default", "via", NODE_IP)
    return outside
