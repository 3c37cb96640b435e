"""Container runtime benchmark; prints one JSON document.

Run as root: ``python3 benchmarks/runtime_bench.py [--runs 50]``. Measures

- ``floor``: a bare fork + exec of busybox ``true`` from this Python process, and a
  ``posix_spawn`` of it (what no runtime can beat);
- ``start_to_exit``: ``start_container`` until the supervisor reports the exit, for an already
  created busybox ``true`` container (p50/p99), and ``create_start_exit`` including create;
- ``start_to_running``: until ``start_container`` returns (the process has exec'd);
- ``seccomp``: start-to-exit (and create-start-exit) of the same container without a filter
  and under RuntimeDefault, samples interleaved, and the p50 ratio (goal <= 1.2); the same for a
  syscall-heavy container (``dd`` of 200,000 one-byte blocks: 400,000 filtered calls); the
  cold compile time of RuntimeDefault (later containers reuse the cached program);
- ``exec``: ``exec_sync(["true"])`` in a running container;
- ``memory``: private memory (USS) of the supervisor with 0 and with N idle containers, and so
  the cost per idle container in our processes (the container's own process is not ours);
- ``import``: ``k3py image import`` throughput on the busybox archive and a 64 MiB layer.

Everything lives in a temporary data dir; the supervisor runs in a private mount namespace and
is shut down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))

from imagebuilder import Entry, build_busybox_images, layer_tar, write_docker_archive

from k3py.runtime import seccomp
from k3py.runtime.archive import import_archive
from k3py.runtime.cgroups import Cgroup
from k3py.runtime.containers import ContainerRuntime
from k3py.runtime.images import ImageStore
from k3py.runtime.spec import ContainerSpec, SecurityProfile


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p99_index = min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[p99_index] * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
        "runs": len(ordered),
    }


def fork_exec_true() -> float:
    """One bare fork + exec of busybox ``true`` from this (large) Python process."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/busybox", ["true"])
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
    return time.perf_counter() - start


def posix_spawn_true() -> float:
    start = time.perf_counter()
    pid = os.posix_spawn("/bin/busybox", ["true"], {})
    os.waitpid(pid, 0)
    return time.perf_counter() - start


def uss(pid: int) -> int:
    return psutil.Process(pid).memory_full_info().uss


def our_pss(supervisor: int, container_pids: set[int]) -> int:
    """Proportional memory of the supervisor and its helpers (pre-forked zygotes), not containers."""
    process = psutil.Process(supervisor)
    ours = [process, *(c for c in process.children() if c.pid not in container_pids)]
    return sum(p.memory_full_info().pss for p in ours)


def start_to_exit(rt: ContainerRuntime, spec: ContainerSpec) -> tuple[float, float]:
    """(start until the exit is reported, create + start + exit) of one container."""
    begin = time.perf_counter()
    cid = rt.create_container(spec)
    start = time.perf_counter()
    rt.start_container(cid)
    status = rt.wait_container(cid, 60)
    done = time.perf_counter()
    assert status.exit_code == 0, status
    rt.remove_container(cid)
    return done - start, done - begin


def seccomp_costs(rt: ContainerRuntime, runs: int) -> dict:
    """The same containers without a filter and under RuntimeDefault, interleaved."""
    from k3py.runtime.containerinit import DEFAULT_CAPABILITIES
    from k3py.runtime.linux import capability_mask

    caps = capability_mask(DEFAULT_CAPABILITIES)
    seccomp._runtime_default_cached.cache_clear()
    begin = time.perf_counter()
    compiled = seccomp.runtime_default_filter(caps)
    compile_ms = (time.perf_counter() - begin) * 1000
    begin = time.perf_counter()
    seccomp.runtime_default_filter(caps)
    cached_us = (time.perf_counter() - begin) * 1e6
    out: dict = {
        "runtime_default_compile_ms_cold": round(compile_ms, 2),
        "runtime_default_compile_us_cached": round(cached_us, 1),
        "runtime_default_instructions": compiled.instructions,
    }
    workloads = {
        "true": (["true"], runs),
        "dd_400k_syscalls": (["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=200000"], max(5, runs // 5)),
    }
    for label, (command, count) in workloads.items():
        off_spec = ContainerSpec(name="bench", image="busybox", command=command)
        on_spec = ContainerSpec(
            name="bench", image="busybox", command=command, seccomp=SecurityProfile("RuntimeDefault")
        )
        samples: dict[str, list[float]] = {"off": [], "on": [], "off_full": [], "on_full": []}
        for i in range(count):
            order = (("off", off_spec), ("on", on_spec)) if i % 2 == 0 else (("on", on_spec), ("off", off_spec))
            for name, spec in order:
                started, full = start_to_exit(rt, spec)
                samples[name].append(started)
                samples[f"{name}_full"].append(full)
        off, on = summary(samples["off"]), summary(samples["on"])
        out[label] = {
            "start_to_exit_unconfined": off,
            "start_to_exit_runtime_default": on,
            "ratio_p50": round(on["p50_ms"] / off["p50_ms"], 3),
            "create_start_exit_unconfined": summary(samples["off_full"]),
            "create_start_exit_runtime_default": summary(samples["on_full"]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--idle", type=int, default=20, help="idle containers for the memory figure"
    )
    options = parser.parse_args()
    results: dict = {"runs": options.runs}
    with tempfile.TemporaryDirectory(prefix="k3py-bench-") as tmp:
        tmp_path = Path(tmp)
        docker_archive, _ = build_busybox_images(tmp_path / "images")
        rt = ContainerRuntime(
            tmp_path / "data",
            cgroup_parent=f"k3py-bench-{secrets.token_hex(4)}",
            isolate_mounts=True,
        )
        import_archive(rt.images, docker_archive)
        supervisor = rt.ensure_supervisor()
        try:
            spec = ContainerSpec(name="bench", image="busybox", command=["true"])
            for _ in range(5):  # warm up caches
                rt.remove_container(rt.wait_container(rt.run(spec), 30).id)
            # Floor and container samples alternate, so both see the same load on a shared host.
            floor_fork, floor_spawn, start_to_exit, start_to_running, full = [], [], [], [], []
            for _ in range(options.runs):
                floor_fork.append(fork_exec_true())
                floor_spawn.append(posix_spawn_true())
                cid = rt.create_container(spec)
                start = time.perf_counter()
                rt.start_container(cid)
                running = time.perf_counter()
                status = rt.wait_container(cid, 30)
                done = time.perf_counter()
                assert status.exit_code == 0, status
                start_to_running.append(running - start)
                start_to_exit.append(done - start)
                rt.remove_container(cid)
                start = time.perf_counter()
                cid = rt.run(spec)
                rt.wait_container(cid, 30)
                full.append(time.perf_counter() - start)
                rt.remove_container(cid)
            results["floor"] = {
                "fork_exec": summary(floor_fork),
                "posix_spawn": summary(floor_spawn),
            }
            results["load_average"] = os.getloadavg()
            results["start_to_exit"] = summary(start_to_exit)
            results["start_to_running"] = summary(start_to_running)
            results["create_start_exit"] = summary(full)
            results["start_to_exit_vs_fork_floor"] = round(
                results["start_to_exit"]["p50_ms"] / results["floor"]["fork_exec"]["p50_ms"], 2
            )
            results["seccomp"] = seccomp_costs(rt, options.runs)
            idle = ContainerSpec(name="idle", image="busybox", command=["sleep", "3600"])
            holder = rt.run(idle)
            exec_samples = []
            for _ in range(options.runs):
                start = time.perf_counter()
                result = rt.exec_sync(holder, ["true"])
                exec_samples.append(time.perf_counter() - start)
                assert result.exit_code == 0
            results["exec"] = summary(exec_samples)
            time.sleep(0.5)  # let the pool refill and the page faults of the starts settle
            base = our_pss(supervisor, {rt.container_status(holder).pid})
            ids = [rt.run(idle) for _ in range(options.idle)]
            time.sleep(0.5)
            pids = {rt.container_status(c).pid for c in [holder, *ids]}
            loaded = our_pss(supervisor, pids)
            container_uss = [uss(pid) for pid in pids]
            results["memory"] = {
                "supervisor_and_zygotes_pss_kib_with_1_container": base // 1024,
                f"supervisor_and_zygotes_pss_kib_with_{options.idle + 1}_containers": loaded
                // 1024,
                "our_private_kib_per_idle_container": round(
                    (loaded - base) / options.idle / 1024, 1
                ),
                "container_process_uss_kib_median (busybox sleep, not ours)": int(
                    statistics.median(container_uss)
                )
                // 1024,
                "shim_processes_per_container": 0,
            }
            for cid in [holder, *ids]:
                rt.remove_container(cid, force=True)
        finally:
            for status in rt.list_containers():
                rt.remove_container(status.id, force=True)
            rt.shutdown_supervisor(force=True)
            for directory in Cgroup(rt.cgroup_parent, "").dirs.values():
                if os.path.isdir(directory):
                    os.rmdir(directory)
        big = tmp_path / "big.tar"
        layer = layer_tar([Entry("blob.bin", data=os.urandom(64 << 20))])
        write_docker_archive(big, [layer], ["bench/big:1"])
        imports = {}
        for label, archive in (("busybox", docker_archive), ("64MiB_layer", big)):
            store = ImageStore(tmp_path / f"store-{label}")
            start = time.perf_counter()
            import_archive(store, archive)
            seconds = time.perf_counter() - start
            size = archive.stat().st_size
            imports[label] = {
                "mb": round(size / 1e6, 2),
                "seconds": round(seconds, 3),
                "mb_per_s": round(size / 1e6 / seconds, 1),
            }
        results["import"] = imports
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
