"""API server benchmark: ConfigMap creates/s and GETs/s, steady-rate create latency, big Table
LIST, idle memory. Prints one JSON object.

Starts a real ``k3py server`` (its own data dir, on loopback) and drives it over HTTPS with
keep-alive connections and the admin client certificate, like any client would:

- ``creates_per_s``: N ConfigMaps created by C concurrent clients (goal >= 2,000/s);
- ``gets_per_s``: GETs of those ConfigMaps by C concurrent clients (goal >= 5,000/s);
- ``create_p99_ms_at_500_per_s``: creates issued at a steady 500/s for a few seconds, p50/p99
  latency (goal p99 < 50 ms);
- ``list_5000_table_ms``: ``kubectl get``-style LIST of 5,000 ConfigMaps as a Table (goal < 300 ms);
- ``idle_rss_mb``: the server's RSS right after start-up (goal < 80 MB).

Creates, the steady rate and the LIST use an aiohttp client in this process. GETs are driven by
``wrk`` (Debian package ``wrk``; C, event-driven, two threads) when it is installed, because a
Python client needs about as much CPU per request as the server and, on a 2-core machine, would
measure itself; wrk cannot present a client certificate, so it authenticates with the server's
bearer token (passed to the server with ``--token``). Without wrk the GETs fall back to the
aiohttp client, with a message saying how to install it. Either way the JSON also holds the
aiohttp-client GET rate (``aiohttp_client_gets_per_s``) for comparison with older runs, and
``server_cpu_us_per_get`` — the server's own CPU per GET, which does not depend on the client:
``1e6 / server_cpu_us_per_get`` is what one core of server could sustain.

    python benchmarks/api_bench.py [--creates 5000] [--concurrency 64] [--steady-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
BENCH_TOKEN = secrets.token_hex(16)

# wrk script: cycle through the created ConfigMaps; at the end print one JSON line with the
# request count, duration, non-2xx count, socket errors and p99 latency.
WRK_SCRIPT = """
local count = tonumber(os.getenv("BENCH_OBJECTS"))
local prefix = os.getenv("BENCH_PATH")
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", string.format("%s/cm-%06d", prefix, n % count))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(99)))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ssl_context(kubeconfig: Path, workdir: Path) -> ssl.SSLContext:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    (workdir / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (workdir / "client.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (workdir / "client.key").write_bytes(base64.b64decode(user["client-key-data"]))
    context = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
    context.load_cert_chain(str(workdir / "client.crt"), str(workdir / "client.key"))
    return context


def _start_server(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path, float]:
    kubeconfig = workdir / "kubeconfig.yaml"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k3py",
            "server",
            "--data-dir",
            str(workdir / "data"),
            "--write-kubeconfig",
            str(kubeconfig),
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            str(port),
            "--disable-agent",
            "--log-level",
            "WARNING",
            "--token",
            BENCH_TOKEN,
        ],
        stdout=open(workdir / "server.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not kubeconfig.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((workdir / "server.log").read_text())
        time.sleep(0.01)
    return process, kubeconfig, time.monotonic() - started


def _configmap(name: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"bench": "yes"}},
            "data": {"key": "value" * 8},
        }
    ).encode()


async def _run_concurrently(count: int, concurrency: int, one: Any) -> tuple[float, list[float]]:
    next_index = 0
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _bench(
    base: str, context: ssl.SSLContext, args: argparse.Namespace, server: psutil.Process
) -> dict[str, Any]:
    """Wall-clock rates, plus the server's own CPU seconds per operation (robust to a busy
    machine: 1e6 / cpu_us_per_op is what one core of server could sustain)."""
    results: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(ssl=context, limit=args.concurrency + 8)
    async with aiohttp.ClientSession(connector=connector) as session:
        ns_path = f"{base}/api/v1/namespaces/bench/configmaps"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}

        async def create(i: int) -> None:
            async with session.post(ns_path, data=_configmap(f"cm-{i:06d}"), headers=headers) as r:
                await r.read()
                if r.status != 201:
                    raise RuntimeError(f"create answered {r.status}")

        async with session.post(
            f"{base}/api/v1/namespaces",
            data=json.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
            ),
            headers=headers,
        ) as r:
            assert r.status == 201, await r.text()
        # Warm up connections (TLS handshakes are not what is measured).
        await _run_concurrently(
            args.concurrency, args.concurrency, lambda i: create(10_000_000 + i)
        )

        cpu0 = _cpu(server)
        elapsed, lat = await _run_concurrently(args.creates, args.concurrency, create)
        results["server_cpu_us_per_create"] = round((_cpu(server) - cpu0) / args.creates * 1e6)
        results["creates"] = args.creates
        results["creates_per_s"] = round(args.creates / elapsed)
        results["create_p99_ms_under_load"] = round(_pct(lat, 0.99), 1)

        async def get(i: int) -> None:
            async with session.get(
                f"{ns_path}/cm-{i % args.creates:06d}", headers={"Accept": "application/json"}
            ) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"get answered {r.status}")

        gets = args.creates * 3
        cpu0 = _cpu(server)
        elapsed, lat = await _run_concurrently(gets, args.concurrency, get)
        aiohttp_cpu_us = round((_cpu(server) - cpu0) / gets * 1e6)
        results["aiohttp_client_gets_per_s"] = round(gets / elapsed)
        results["aiohttp_client_get_p99_ms"] = round(_pct(lat, 0.99), 1)
        wrk = await _wrk_gets(base, "/api/v1/namespaces/bench/configmaps", args, server)
        if wrk is None:
            results["get_client"] = "aiohttp (in-process)"
            results["server_cpu_us_per_get"] = aiohttp_cpu_us
            results["gets_per_s"] = results["aiohttp_client_gets_per_s"]
            results["get_p99_ms_under_load"] = results["aiohttp_client_get_p99_ms"]
        else:
            results["get_client"] = "wrk"
            results.update(wrk)

        # Steady 500 creates/s: one request every 2 ms, each on its own task.
        rate = 500
        total = rate * args.steady_seconds
        steady_lat: list[float] = []

        async def timed(i: int) -> None:
            t0 = time.perf_counter()
            await create(20_000_000 + i)
            steady_lat.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(i)))
        await asyncio.gather(*tasks)
        results["steady_create_rate_per_s"] = rate
        results["create_p50_ms_at_500_per_s"] = round(_pct(steady_lat, 0.50), 1)
        results["create_p99_ms_at_500_per_s"] = round(_pct(steady_lat, 0.99), 1)

        # LIST of 5,000 objects as a Table, in a namespace holding exactly that many.
        list_ns = f"{base}/api/v1/namespaces/bench/configmaps?labelSelector=bench%3Dyes&limit=5000"
        timings = []
        rows = 0
        for _ in range(5):
            t0 = time.perf_counter()
            async with session.get(list_ns, headers={"Accept": TABLE_ACCEPT}) as r:
                body = await r.read()
            timings.append(time.perf_counter() - t0)
            rows = len(json.loads(body)["rows"])
        results["list_table_rows"] = rows
        results["list_5000_table_ms"] = round(statistics.median(timings) * 1000, 1)
    return results


async def _wrk_gets(
    base: str, path: str, args: argparse.Namespace, server: psutil.Process
) -> dict[str, Any] | None:
    """GETs/s measured with wrk (None, after saying why, when wrk is not installed)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "api_bench: wrk is not installed (Debian: apt-get install wrk); measuring GETs "
            "with the in-process aiohttp client instead, which shares the CPUs with the server",
            file=sys.stderr,
        )
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        env = {**os.environ, "BENCH_OBJECTS": str(args.creates), "BENCH_PATH": path}
        cpu0 = _cpu(server)
        process = await asyncio.create_subprocess_exec(
            wrk, "-t2", f"-c{args.concurrency}", f"-d{args.wrk_seconds}s",
            "-H", f"Authorization: Bearer {BENCH_TOKEN}", "-H", "Accept: application/json",
            "-s", script.name, base,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        cpu = _cpu(server) - cpu0
    text = output.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{text}")
    summary = json.loads(line.removeprefix("WRK_RESULT "))
    if summary["non_2xx"] or summary["socket_errors"] or not summary["requests"]:
        raise RuntimeError(f"wrk saw failed requests:\n{text}")
    return {
        "server_cpu_us_per_get": round(cpu / summary["requests"] * 1e6),
        "gets_per_s": round(summary["requests"] / (summary["duration_us"] / 1e6)),
        "get_p99_ms_under_load": round(summary["p99_us"] / 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--creates", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--steady-seconds", type=int, default=5)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k3py-api-bench-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        process, kubeconfig, startup = _start_server(workdir, port)
        try:
            time.sleep(1.0)  # let start-up allocations settle before measuring idle memory
            idle_rss = psutil.Process(process.pid).memory_info().rss / 2**20
            context = _ssl_context(kubeconfig, workdir)
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            results = asyncio.run(
                _bench(f"https://127.0.0.1:{port}", context, args, psutil.Process(process.pid))
            )
            results["load_average_1m"] = round(os.getloadavg()[0], 2)
            results["startup_to_kubeconfig_s"] = round(startup, 3)
            results["idle_rss_mb"] = round(idle_rss, 1)
            results["rss_after_mb"] = round(
                psutil.Process(process.pid).memory_info().rss / 2**20, 1
            )
            results["cpus"] = os.cpu_count()
        finally:
            process.terminate()
            process.wait(timeout=15)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
