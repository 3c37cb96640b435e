"""The node's network, attacked from real pods (a ``k3py server`` with its in-process kubelet).

Localnet (CVE-2020-8558): the bridge has ``route_localnet`` on so that hostPorts answer on the
node's 127.0.0.1. Without upstream's drop rule, a pod can then reach services the node binds to
127.0.0.1 only, by sending to 127.0.0.1 through its gateway. The test opens a TCP listener and
a UDP socket on 127.0.0.1 in the node's network namespace (the cluster's test host) and attacks
them from a running pod's network namespace:

- a raw Ethernet frame carrying a UDP datagram from the pod's address to 127.0.0.1, sent to
  the gateway's MAC — what any pod with the default ``NET_RAW`` capability can do;
- a real UDP datagram and a real TCP connection attempt (SYN) from ordinary sockets, after
  the attacker re-routed 127.0.0.0/8 out of the pod's eth0 (the packets on the wire are the
  same as crafted ones; ordinary sockets make "the listener saw it" unambiguous).

Neither listener may see anything: no datagram, no connection, not even a half-open one (the
kernel cannot route the SYN-ACK from 127.0.0.1 back to the pod, so without the rule a SYN shows
up as a SYN-RECV entry of the listening socket). A control shows the same listeners do receive
from the node itself.

Reserved ports: a pod asking ``hostPort: 10250`` (the kubelet's port — its DNAT rule would
capture the API server's connections to the kubelet) or the API server's port is refused with a
``FailedCreatePodSandBox`` event and never starts; ``kubectl logs`` of another pod keeps
working.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.cluster import TestCluster
from tests.kubelet.conftest import busybox_archive

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
QUIET = 3.0  # seconds a listener must stay silent
_libc = ctypes.CDLL(None, use_errno=True)
MARK = random.randint(100000, 999999)  # makes the attacker's process findable on this host
ATTACKER_SLEEP = f"86{MARK}"


def _pod_running(cluster: TestCluster, name: str) -> bool:
    result = cluster.kubectl("get", "pod", name, "-o", "json", check=False)
    return result.returncode == 0 and json.loads(result.stdout)["status"].get("phase") == "Running"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    base = tmp_path_factory.mktemp("node-net")
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    import_archive(ImageStore(base / "agent" / "runtime" / "images"), busybox_archive())
    with TestCluster(base, agent=True) as cluster:
        pods = {
            "attacker": ["sleep", ATTACKER_SLEEP],
            "talker": ["sh", "-c", "echo hello-from-talker; exec sleep 3600"],
        }
        for name, command in pods.items():
            cluster.kubectl("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent", "--", *command)
        for name in pods:
            cluster.wait_for(lambda n=name: _pod_running(cluster, n), timeout=90, interval=0.2,
                             what=f"pod {name} Running\n{cluster.server_log()}")  # fmt: skip
        yield cluster


def _attacker_netns(cluster: TestCluster) -> str:
    """``/proc/<pid>/ns/net`` of the attacker pod's process (found by its unique command)."""
    wanted = f"sleep\0{ATTACKER_SLEEP}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if cmdline.read() != wanted:
                    continue
        except OSError:
            continue  # gone meanwhile
        path = f"/proc/{entry}/ns/net"
        assert os.stat(path).st_ino != os.stat(f"/run/netns/{cluster.netns}").st_ino, "the pod shares the node's netns"
        return path
    raise AssertionError("the attacker pod's process was not found")


def _in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread that joined the network namespace at ``path``."""
    box: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        try:
            box["result"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _pod_sh(netns: str, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, check=True, timeout=30).stdout


class Listeners:
    """A TCP listener and a UDP socket on 127.0.0.1 in the node's namespace, recording arrivals."""

    def __init__(self, cluster: TestCluster) -> None:
        self.tcp: socket.socket = cluster.in_netns(lambda: socket.create_server(("127.0.0.1", 0)))
        self.udp: socket.socket = cluster.in_netns(lambda: _udp_socket())
        self.tcp.settimeout(0.2)
        self.udp.settimeout(0.2)
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True), threading.Thread(target=self._receive, daemon=True)]
        for thread in self._threads:
            thread.start()

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.getsockname()[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.append(f"tcp connection from {peer[0]}")
            conn.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.append(f"udp {data!r} from {peer[0]}")

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.tcp.close()
        self.udp.close()


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def listeners(node: TestCluster) -> Iterator[Listeners]:
    found = Listeners(node)
    yield found
    found.close()


def _wait_quiet(listeners: Listeners, seconds: float = QUIET) -> list[str]:
    done = threading.Event()
    done.wait(seconds)
    return list(listeners.seen)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_frame(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), MARK & 0xFFFF, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src_ip), socket.inet_aton(dst_ip))  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return dst_mac + src_mac + struct.pack("!H", 0x0800) + header + udp


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def test_a_raw_frame_to_the_nodes_localhost_never_arrives(node: TestCluster, listeners: Listeners) -> None:
    netns = _attacker_netns(node)
    link = json.loads(_pod_sh(netns, "ip", "-j", "addr", "show", "eth0"))[0]
    pod_ip = next(a["local"] for a in link["addr_info"] if a["family"] == "inet")
    gateway = json.loads(_pod_sh(netns, "ip", "-j", "route", "show", "default"))[0]["gateway"]
    bridge_name = json.loads(node.run(["ip", "-j", "addr", "show", "to", gateway]).stdout)[0]["ifname"]
    bridge = json.loads(node.run(["ip", "-j", "link", "show", bridge_name]).stdout)[0]
    frame = _udp_frame(_mac(link["address"]), _mac(bridge["address"]), pod_ip, "127.0.0.1", listeners.udp_port, b"raw-leak")

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind(("eth0", 0))
            for _ in range(3):
                raw.send(frame)

    _in_netns(netns, send)
    assert _wait_quiet(listeners) == []


@pytest.fixture
def rerouted_attacker(node: TestCluster) -> str:
    """The attacker pod's namespace with 127.0.0.0/8 routed out of eth0 to the gateway."""
    netns = _attacker_netns(node)
    for argv in (
        ["ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"],
        ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
        ["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
        ["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"],
    ):
        _pod_sh(netns, *argv)
    gateway = json.loads(_pod_sh(netns, "ip", "-j", "route", "show", "default"))[0]["gateway"]
    _pod_sh(netns, "ip", "route", "replace", "127.0.0.0/8", "via", gateway, "dev", "eth0", "onlink")
    return netns


def test_udp_and_tcp_to_the_nodes_localhost_never_arrive(node: TestCluster, listeners: Listeners, rerouted_attacker: str) -> None:
    def attack() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"routed-leak", ("127.0.0.1", listeners.udp_port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.settimeout(QUIET)
            try:
                tcp.connect(("127.0.0.1", listeners.tcp_port))
            except (TimeoutError, OSError) as e:
                return f"connect failed: {e}"
            return "connected"

    outcome = _in_netns(rerouted_attacker, attack)
    seen = _wait_quiet(listeners, 1.0)
    # Not even the SYN reached the listening socket: it holds no half-open connection.
    half_open = node.run(["ss", "-Htn", "state", "syn-recv", f"( sport = :{listeners.tcp_port} )"]).stdout.strip()
    assert (seen, half_open) == ([], ""), f"the node's 127.0.0.1 listeners were reached: {seen} {half_open!r}"
    assert outcome.startswith("connect failed"), outcome
    # The control: the node itself still reaches both listeners.
    def from_the_node() -> None:
        with socket.create_connection(("127.0.0.1", listeners.tcp_port), timeout=5):
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"local", ("127.0.0.1", listeners.udp_port))

    node.in_netns(from_the_node)
    node.wait_for(lambda: len(listeners.seen) == 2, timeout=10, what="the node's own packets")


def test_the_node_table_holds_upstreams_localnet_rule(node: TestCluster) -> None:
    ruleset = node.run(["nft", "list", "table", "ip", "k3py-nat"]).stdout
    assert "hook input" in ruleset
    assert "block incoming localnet connections" in ruleset
    sysctl = node.run(["sysctl", "-n", "net.ipv4.conf.k3py0.route_localnet"]).stdout.strip()
    assert sysctl == "1"


def _events(cluster: TestCluster, pod: str) -> list[dict[str, Any]]:
    result = cluster.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json")
    return json.loads(result.stdout)["items"]


@pytest.mark.parametrize(("port", "owner"), [(10250, "the kubelet"), (6443, "the API server")])
def test_a_reserved_host_port_is_refused(node: TestCluster, port: int, owner: str) -> None:
    name = f"grabber-{port}"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"],
            "ports": [{"containerPort": port, "hostPort": port}],
        }]},
    }  # fmt: skip
    node.kubectl("apply", "-f", "-", input=json.dumps(pod))
    message = f"hostPort {port}/TCP is reserved on this node: {owner} listens on it"

    def refused() -> bool:
        return any(
            e["reason"] == "FailedCreatePodSandBox" and e["type"] == "Warning" and message in e["message"]
            for e in _events(node, name)
        )

    node.wait_for(refused, timeout=60, interval=0.3, what=f"a FailedCreatePodSandBox event for {name}")
    status = node.kubectl_json("get", "pod", name)["status"]
    assert status["phase"] == "Pending"
    for container in status.get("containerStatuses") or []:
        assert "running" not in container["state"], container
    # The kubelet and the API server are still the ones answering.
    assert node.kubectl("logs", "talker").stdout == "hello-from-talker\n"
    node.kubectl("delete", "pod", name, "--grace-period=0", "--force", check=False)
