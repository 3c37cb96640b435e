"""Hostile-client benchmark: how long each attack of issue #10 holds the API server. Prints one
JSON object.

A server runs on a test host (see tests/cluster.py). For each attack the JSON holds the HTTP
status it got, the seconds until that answer, the /readyz probes sent every 20 ms from another
connection while it was served (count, median and slowest, in ms; see
tests/apiserver/hostile.py) and the event-loop watchdog's stall reports in that window (count,
longest in ms; 100 ms threshold in test servers). Goal: every attack answered with a 4xx in
well under a second, probe median under 100 ms, no stall report.

- ``json_patch_copy_bomb``: 2 KB JSON patch, 22 ``copy`` operations each doubling a list;
- ``yaml_3_mib``: a 3 MiB ConfigMap in YAML, 43,000 keys;
- ``protobuf_list_300_kb``: a protobuf PodList of 150,000 empty items posted to pods;
- ``yaml_nested_900``: YAML nested 900 levels deep;
- ``idle_tls_1200``: 1,200 idle unauthenticated TLS connections (server started with a soft
  open-file limit of 1024), then an admin request (``seconds`` is its latency).

    python benchmarks/hostile_bench.py
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.apiserver.hostile import ReadyzProber  # noqa: E402
from tests.cluster import TestCluster  # noqa: E402


def _field(number: int, payload: bytes) -> bytes:
    length, varint = len(payload), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | 0x80 if length else byte)
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + payload


def _measure(cluster: TestCluster, attack: Callable[[], int]) -> dict[str, Any]:
    stalls_before = len(cluster.loop_stalls())
    with ReadyzProber(cluster) as prober:
        started = time.monotonic()
        try:
            status: int | str = attack()
        except OSError as e:
            status = repr(e)
        seconds = time.monotonic() - started
        time.sleep(0.2)
    during = [took * 1000 for took in prober.during()]
    stalls = [int(m.group(1)) for r in cluster.loop_stalls()[stalls_before:] if (m := re.search(r"blocked for (\d+) ms", r))]
    return {
        "status": status,
        "seconds": round(seconds, 3),
        "readyz_probes": len(during),
        "readyz_median_ms": round(statistics.median(during), 1) if during else None,
        "readyz_max_ms": round(max(during), 1) if during else None,
        "loop_stall_reports": len(stalls),
        "longest_loop_stall_ms": max(stalls, default=0),
    }


def _body_attacks(cluster: TestCluster) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cluster.kubectl("create", "configmap", "bomb", "--from-literal=a=b")
    ops: list[dict[str, Any]] = [{"op": "add", "path": "/metadata/annotations", "value": {"a": ["xxxxxxxxxx"]}}]
    ops += [{"op": "copy", "from": "/metadata/annotations/a", "path": "/metadata/annotations/a/-"}] * 22
    out["json_patch_copy_bomb"] = _measure(cluster, lambda: cluster.request(
        "PATCH", "/api/v1/namespaces/default/configmaps/bomb", json.dumps(ops),
        {"Content-Type": "application/json-patch+json"}, timeout=300,
    )[0])  # fmt: skip
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: big", "data:"]
    lines += [f"  k{i:07d}: {'v' * 60}" for i in range(43_000)]
    yaml_body = "\n".join(lines) + "\n"
    out["yaml_3_mib"] = _measure(cluster, lambda: cluster.request(
        "POST", "/api/v1/namespaces/default/configmaps?fieldManager=bench", yaml_body,
        {"Content-Type": "application/yaml"}, timeout=300,
    )[0])  # fmt: skip
    proto = b"k8s\x00" + _field(1, _field(1, b"v1") + _field(2, b"PodList")) + _field(2, _field(2, b"") * 150_000)
    out["protobuf_list_300_kb"] = _measure(cluster, lambda: cluster.request(
        "POST", "/api/v1/namespaces/default/pods", proto,
        {"Content-Type": "application/vnd.kubernetes.protobuf"}, timeout=300,
    )[0])  # fmt: skip
    deep = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nx: " + "[" * 900 + "]" * 900 + "\n"
    out["yaml_nested_900"] = _measure(cluster, lambda: cluster.request(
        "POST", "/api/v1/namespaces/default/configmaps", deep, {"Content-Type": "application/yaml"}, timeout=300,
    )[0])  # fmt: skip
    return out


def _idle_flood(base: Path) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    cluster = TestCluster(base)
    try:
        cluster.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets: list[socket.socket] = []
    try:
        context = cluster.ssl_context(client_cert=False)

        def flood() -> int:
            for _ in range(1200):
                raw = socket.create_connection(("127.0.0.1", cluster.port), timeout=5)
                sockets.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
            return len(sockets)

        started = time.monotonic()
        try:
            opened: int | str = cluster.in_netns(flood)
        except OSError as e:
            opened = f"stopped after {len(sockets)}: {e!r}"
        flood_seconds = time.monotonic() - started
        started = time.monotonic()
        try:
            status: int | str = cluster.request("GET", "/api/v1/namespaces", timeout=30)[0]
        except OSError as e:
            status = repr(e)
        assert cluster.process is not None
        rss = int(next(line for line in Path(f"/proc/{cluster.process.pid}/status").read_text().splitlines() if line.startswith("VmRSS")).split()[1])
        return {
            "opened": opened,
            "open_seconds": round(flood_seconds, 2),
            "status": status,
            "seconds": round(time.monotonic() - started, 3),
            "server_rss_mb": round(rss / 1024, 1),
            "log_bytes": cluster.log_path.stat().st_size,
        }
    finally:
        for sock in sockets:
            sock.close()
        cluster.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    with tempfile.TemporaryDirectory(prefix="k3py-hostile-bench-") as tmp:
        with TestCluster(Path(tmp) / "bodies") as cluster:
            result = _body_attacks(cluster)
        result["idle_tls_1200"] = _idle_flood(Path(tmp) / "flood")
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
