"""Service proxy benchmark; prints one JSON document.

Run as root from the worktree: ``PYTHONPATH=$PWD python3 benchmarks/service_bench.py``
(``--quick`` for a short run). Everything happens in network namespaces made here and removed
at the end: a node (the real pod network: bridge, routes, ``k3py-nat``) with a server pod and
a client pod. Measures

- ``rule_sync``: the proxy's worker-thread state (``ProxyState.sync``: read, render, nft, netlink)
  on an empty table — 1,000 Services × 10 endpoints from nothing (goal < 1 s to the last
  rule); then one endpoint of one Service changed, N times (p50/p99; goal p99 < 50 ms); the
  table grown to 10,000 Services and the same change again (goal: p99 within 2× of the
  1,000 case). The same from-nothing sync and endpoint change through the whole
  ``ServiceProxy`` (informers over the in-memory API transport, the event loop, the worker
  thread): ``end_to_end``.
- ``data_plane``: ``wrk`` against a pod through a ClusterIP and straight to its pod IP, for a
  keep-alive server (per-packet cost) and busybox ``httpd`` (a new connection, and so a new
  DNAT, per request): rates and their ratio (goal ≥ 0.9), with 10,000 Services in the table.
- ``first_packet``: TCP connect time (SYN to SYN-ACK, a new DNAT each) through a ClusterIP with
  10 Services in the table, with 10,000, and with 10 again (goal: 10,000 within 10% of 10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from k3py.agent.network import NodeNetwork, NodeNetworkConfig, PodNetwork
from k3py.agent.proxy import ProxyConfig, ServiceProxy, remove_service_proxy
from k3py.agent.proxy.proxy import ensure_service_route
from k3py.agent.proxy.state import ProxyState
from k3py.client.interface import ENDPOINTSLICES, SERVICES, Client
from k3py.client.memory import MemoryTransport

CLONE_NEWNET = 0x40000000
NODE = "bench-node"
KEEPALIVE_SERVER = r"""
import asyncio
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
    except Exception:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", 8080, backlog=1024)
    await server.serve_forever()
asyncio.run(main())
"""
ACCEPT_SERVER = r"""
import socket
s = socket.create_server(("0.0.0.0", 9000), backlog=4096)
while True:
    c, _ = s.accept()
    c.close()
"""


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def _service(index: int, cluster_ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{index}", "namespace": "bench", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip,
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}


def _slice(index: int, ips: list[str], port: int = 8080) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{index}-abcde", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc-{index}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": NODE} for ip in ips]}


def _cluster_ip(index: int) -> str:
    value = (10 << 24) | (43 << 16) | (1 << 8) + index + 1  # from 10.43.1.1 on
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def _fake_endpoints(index: int, count: int) -> list[str]:
    base = (10 << 24) | (44 << 16)  # addresses nothing answers on: rules only
    return [socket.inet_ntoa((base + index * count + j).to_bytes(4, "big")) for j in range(count)]


def _objects(first: int, count: int, endpoints: int) -> tuple[dict, dict]:
    services = {("bench", f"svc-{i}"): _service(i, _cluster_ip(i)) for i in range(first, first + count)}
    slices = {("bench", f"svc-{i}-abcde"): _slice(i, _fake_endpoints(i, endpoints)) for i in range(first, first + count)}
    return services, slices


def _endpoint_changes(state: ProxyState, services: int, rounds: int, endpoints: int) -> list[float]:
    """One endpoint of a Service picked at random among ``services`` replaced, ``rounds``
    times; seconds per sync (to the kernel)."""
    pick = random.Random(13)
    took: list[float] = []
    for r in range(rounds):
        index = pick.randrange(services)
        ips = _fake_endpoints(index, endpoints)
        ips[r % endpoints] = f"10.45.{(r // 250) % 250}.{r % 250 + 1}"
        started = time.perf_counter()
        state.sync({}, {("bench", f"svc-{index}-abcde"): _slice(index, ips)})
        took.append(time.perf_counter() - started)
    return took


def rule_sync(work: Path, rounds: int, big: int) -> dict[str, Any]:
    config = ProxyConfig(node_name=NODE, data_dir=work / "rules", pod_cidr="10.42.0.0/24", bridge="")
    state = ProxyState(config)
    result: dict[str, Any] = {}
    try:
        services, slices = _objects(0, 1000, 10)
        started = time.perf_counter()
        report = state.sync(services, slices)
        result["from_nothing_1000x10_seconds"] = round(time.perf_counter() - started, 3)
        result["from_nothing_1000x10_detail"] = {"nft_seconds": round(report.stats.structural_seconds, 3),
                                                 "netlink_seconds": round(report.stats.elements_seconds, 3),
                                                 "chains": report.stats.chains_added, "sets": report.stats.sets_added}
        result["endpoint_change_1000"] = _summary(_endpoint_changes(state, 1000, rounds, 10))
        services, slices = _objects(1000, big - 1000, 10)
        started = time.perf_counter()
        state.sync(services, slices)
        result[f"grow_to_{big}_seconds"] = round(time.perf_counter() - started, 1)
        result[f"endpoint_change_{big}"] = _summary(_endpoint_changes(state, big, rounds, 10))
        ratio = result[f"endpoint_change_{big}"]["p99_ms"] / result["endpoint_change_1000"]["p99_ms"]
        result["p99_ratio"] = round(ratio, 2)
    finally:
        state.close()
        remove_service_proxy(config)
    return result


async def _end_to_end(work: Path, rounds: int) -> dict[str, Any]:
    transport = MemoryTransport()
    client = Client(transport)
    services, slices = _objects(0, 1000, 10)
    for obj in services.values():
        await client.create(SERVICES, obj, "bench")
    for obj in slices.values():
        await client.create(ENDPOINTSLICES, obj, "bench")
    config = ProxyConfig(node_name=NODE, data_dir=work / "e2e", pod_cidr="10.42.0.0/24", bridge="")
    proxy = ServiceProxy(client, config)
    started = time.perf_counter()
    task = asyncio.create_task(proxy.run())
    try:
        await asyncio.wait_for(proxy.synced.wait(), 120)
        from_nothing = time.perf_counter() - started
        took: list[float] = []
        base = _fake_endpoints(500, 10)
        for r in range(rounds):
            ips = list(base)
            ips[r % 10] = f"10.46.{(r // 250) % 250}.{r % 250 + 1}"
            current = transport.peek(ENDPOINTSLICES, "bench", "svc-500-abcde")
            assert current is not None
            body = {**current, "endpoints": _slice(500, ips)["endpoints"]}
            syncs = proxy.syncs
            began = time.perf_counter()
            await client.update(ENDPOINTSLICES, body)
            await proxy.wait_syncs(syncs + 1)
            took.append(time.perf_counter() - began)
        return {"from_nothing_1000x10_seconds": round(from_nothing, 3), "endpoint_change_1000": _summary(took)}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(remove_service_proxy, config)


@contextlib.contextmanager
def _background(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _wait_port(netns: str, address: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                                f"import socket; socket.create_connection(('{address}', {port}), 1).close()"],
                               capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {address}:{port}")


def _wrk(netns: str, url: str, seconds: int) -> float:
    out = subprocess.run(["ip", "netns", "exec", netns, "wrk", "-t2", "-c32", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk printed no rate:\n{out}")


def _first_packets(netns: str, address: str, port: int, count: int) -> float:
    """Median connect time (seconds) over ``count`` new connections from ``netns``."""
    code = (
        "import socket, time, statistics\n"
        f"samples = []\n"
        f"for _ in range({count}):\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\\x01\\0\\0\\0\\0\\0\\0\\0')\n"
        "    t = time.perf_counter()\n"
        f"    s.connect(('{address}', {port}))\n"
        "    samples.append(time.perf_counter() - t)\n"
        "    s.close()\n"
        "print(statistics.median(samples))\n"
    )
    out = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip())


def data_plane(work: Path, node_ns: str, big: int, seconds: int, connects: int) -> dict[str, Any]:
    network = NodeNetwork(NodeNetworkConfig(pod_cidr="10.42.0.0/24", data_dir=work / "network"))
    network.start()
    pods = PodNetwork(network)
    made: list[str] = []
    try:
        addresses = {}
        for name in ("server", "client"):
            netns = f"k3py-bench-{name}-{os.getpid()}"
            subprocess.run(["ip", "netns", "add", netns], check=True)
            made.append(netns)
            addresses[name] = (netns, pods.setup(name, f"/run/netns/{netns}").ip)
        server_ns, server_ip = addresses["server"]
        client_ns, _client_ip = addresses["client"]
        www = work / "www"
        www.mkdir()
        (www / "index.html").write_text("ok\n")
        config = ProxyConfig(node_name=NODE, data_dir=work / "dataplane", pod_cidr="10.42.0.0/24")
        ensure_service_route(config)
        state = ProxyState(config)
        try:
            target = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                      {"name": "busybox", "port": 81, "protocol": "TCP", "targetPort": 8081},
                      {"name": "accept", "port": 82, "protocol": "TCP", "targetPort": 9000}]
            svc = _service(0, "10.43.0.100")
            svc["spec"]["ports"] = target
            endpoints = _slice(0, [server_ip])
            endpoints["ports"] = [{"name": p["name"], "port": p["targetPort"], "protocol": "TCP"} for p in target]
            few_services, few_slices = _objects(1, 9, 1)
            state.sync({("bench", "svc-0"): svc, **few_services}, {("bench", "svc-0-abcde"): endpoints, **few_slices})
            with _background(["ip", "netns", "exec", server_ns, "python3", "-c", KEEPALIVE_SERVER]), \
                    _background(["ip", "netns", "exec", server_ns, "busybox", "httpd", "-f", "-p", "8081", "-h", str(www)]), \
                    _background(["ip", "netns", "exec", server_ns, "python3", "-c", ACCEPT_SERVER]):
                for port in (8080, 8081, 9000):
                    _wait_port(client_ns, server_ip, port)
                first: dict[str, list[float]] = {"10_before": [], big: [], "10_after": []}
                first["10_before"] = [_first_packets(client_ns, "10.43.0.100", 82, connects) for _ in range(3)]
                many_services, many_slices = _objects(1000, big - 10, 1)
                started = time.perf_counter()
                state.sync(many_services, many_slices)
                grow = time.perf_counter() - started
                first[big] = [_first_packets(client_ns, "10.43.0.100", 82, connects) for _ in range(3)]
                rates: dict[str, list[float]] = {"keepalive_direct": [], "keepalive_cluster_ip": [],
                                                 "new_connection_direct": [], "new_connection_cluster_ip": []}
                for _round in range(3):  # interleaved, so drifting load hits both alike
                    rates["keepalive_direct"].append(_wrk(client_ns, f"http://{server_ip}:8080/", seconds))
                    rates["keepalive_cluster_ip"].append(_wrk(client_ns, "http://10.43.0.100:80/", seconds))
                    rates["new_connection_direct"].append(_wrk(client_ns, f"http://{server_ip}:8081/", seconds))
                    rates["new_connection_cluster_ip"].append(_wrk(client_ns, "http://10.43.0.100:81/", seconds))
                state.sync({key: None for key in many_services}, {key: None for key in many_slices})
                first["10_after"] = [_first_packets(client_ns, "10.43.0.100", 82, connects) for _ in range(3)]
        finally:
            state.close()
            remove_service_proxy(config)
        rate = {key: round(statistics.median(values)) for key, values in rates.items()}
        ten = statistics.median(first["10_before"] + first["10_after"])
        many = statistics.median(first[big])
        return {
            "services_in_table": big,
            "grow_seconds": round(grow, 1),
            "wrk_requests_per_second": rate,
            "keepalive_ratio": round(rate["keepalive_cluster_ip"] / rate["keepalive_direct"], 3),
            "new_connection_ratio": round(rate["new_connection_cluster_ip"] / rate["new_connection_direct"], 3),
            "first_packet": {
                "connects_per_sample": connects,
                "median_us_10_services": round(ten * 1e6, 1),
                f"median_us_{big}_services": round(many * 1e6, 1),
                "samples_us": {str(k): [round(v * 1e6, 1) for v in vs] for k, vs in first.items()},
                "ratio": round(many / ten, 3),
            },
        }
    finally:
        for name in ("server", "client"):
            with contextlib.suppress(Exception):
                pods.teardown(name)
        for netns in made:
            subprocess.run(["ip", "netns", "del", netns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 2,000 instead of 10,000 Services")
    args = parser.parse_args()
    rounds, big, seconds, connects = (50, 2000, 2, 300) if args.quick else (200, 10000, 5, 1000)
    node_ns = f"k3py-bench-node-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", node_ns], check=True)
    try:
        _enter_netns(node_ns)  # this thread and every thread it starts from now on
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        with tempfile.TemporaryDirectory(prefix="k3py-service-bench-") as tmp:
            work = Path(tmp)
            result: dict[str, Any] = {"goals": {
                "from_nothing_1000x10_seconds": "< 1", "endpoint_change_1000_p99_ms": "< 50",
                "endpoint_change_p99_ratio_10000_vs_1000": "<= 2", "cluster_ip_vs_direct": ">= 0.9",
                "first_packet_ratio_10000_vs_10": "<= 1.1"}}
            result["rule_sync"] = rule_sync(work, rounds, big)
            result["end_to_end"] = asyncio.run(_end_to_end(work, rounds))
            result["data_plane"] = data_plane(work, node_ns, big, seconds, connects)
        print(json.dumps(result, indent=2))
    finally:
        subprocess.run(["ip", "netns", "del", node_ns], check=False)


if __name__ == "__main__":
    sys.exit(main())
