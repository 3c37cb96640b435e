"""Stopping containers and taking pods apart.

- ``stop_container``: the preStop hook (within the grace period), SIGTERM, then SIGKILL once
  the grace period is over — the grace period is asked again while waiting, so a second,
  shorter delete shortens it; polled without holding a thread.
- ``kill_pod``: every running container of the pod stopped that way (in parallel), then its
  containers, cgroups, pod network, sandbox and volumes removed. A pod the API no longer has
  (force-deleted, or replaced under a new uid) gets 2 s, the kubelet's minimum.
- ``release_finished``: a pod that has finished (Succeeded/Failed, nothing running) keeps its
  exited containers and logs until it is deleted, but gives back its address and — as
  upstream's volume manager once all its containers have terminated — its mounts.

Each pod's termination runs as its own task (``start``): a long grace period must not hold a
pod worker while other pods wait to start; the pod's syncs meanwhile see it ``terminating`` and
leave it alone, and a failed termination is retried a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any

from k3py.agent.kubelet.backoff import RestartBackOff
from k3py.agent.kubelet.containerspec import LABEL_CONTAINER
from k3py.agent.kubelet.hooks import run_hook
from k3py.agent.kubelet.podrecord import PodRecord
from k3py.agent.kubelet.podruntime import PodRuntime
from k3py.agent.kubelet.probes import ProbeManager
from k3py.agent.kubelet.volumes import PodVolumes, VolumeError
from k3py.agent.network import NetworkError, PodNetwork
from k3py.api.errors import ApiError
from k3py.client.workqueue import WorkQueue
from k3py.runtime.containers import ContainerError, ContainerNotFound
from k3py.runtime.spec import ContainerStatus

log = logging.getLogger("k3py.kubelet")

Obj = dict[str, Any]
Grace = Callable[[], float]  # the grace period as it stands now (a later delete may shorten it)
PreStop = Callable[[float], Awaitable[None]]  # runs the preStop hook within the given seconds

ORPHAN_GRACE_SECONDS = 2.0  # the kubelet's minimum for pods that vanished from the API
TERMINATION_RETRY_SECONDS = 1.0


def current_grace(pod: Obj | None, uid: str, default: float) -> float:
    """The grace period of pod ``uid`` as the API has it now (``pod``: its current object, None
    when gone): a second delete may have shortened it; a pod gone or replaced gets the orphan's."""
    if pod is None or pod["metadata"].get("uid") != uid:
        return min(default, ORPHAN_GRACE_SECONDS)
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    return default if grace is None else min(default, float(grace))


class PodTerminator:
    """See the module docstring."""

    def __init__(
        self,
        pod_runtime: PodRuntime,
        probes: ProbeManager,
        pod_network: PodNetwork | None,
        pods_dir: Path,
        record_event: Callable[[Obj, str, str, str], None],
        backoff: RestartBackOff,
        queue: WorkQueue,
    ) -> None:
        self.pod_runtime = pod_runtime
        self.probes = probes
        self.pod_network = pod_network
        self.pods_dir = pods_dir
        self.record_event = record_event
        self.backoff = backoff
        self.queue = queue
        self._running: dict[str, asyncio.Task[None]] = {}  # uid -> its termination in progress

    # ---- the tasks --------------------------------------------------------------------------

    def start(self, uid: str, key: Hashable, work: Callable[[], Awaitable[None]], wake_after: bool = False) -> None:
        """Run ``work`` (a termination of pod ``uid``, work-queue key ``key``) as its own task,
        unless one runs already; with ``wake_after`` the pod is synced again once it is over."""
        if uid in self._running:
            return

        async def run() -> None:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                message = e.message if isinstance(e, ApiError) else str(e)
                log.warning("terminating pod %s failed: %s (retrying)", uid, message)
                self.queue.add_after(key, TERMINATION_RETRY_SECONDS)
            else:
                if wake_after:
                    # Syncs that came while it ran returned early: look again once it is over
                    # (a stopped pod's status; its address and mounts to give back).
                    self._running.pop(uid, None)
                    self.queue.add(key)
            finally:
                self._running.pop(uid, None)

        self._running[uid] = asyncio.create_task(run(), name=f"kubelet-kill-{uid}")

    def terminating(self, uid: str) -> bool:
        return uid in self._running

    async def cancel_all(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- stopping ---------------------------------------------------------------------------

    async def kill_pod(self, uid: str, grace: Grace, pod: Obj | None) -> None:
        """Stop every container of the pod (SIGTERM, SIGKILL after ``grace``), then remove it all."""
        self.probes.pod_removed(uid)
        statuses = await self.pod_runtime.run_blocking(self.pod_runtime.refresh, uid)
        running = [s for s in statuses.values() if s.state == "running"]
        if pod is not None:
            for status in running:
                self.record_event(pod, "Normal", "Killing", f"Stopping container {status.name}")
        specs = {c.get("name"): c for c in ((pod or {}).get("spec") or {}).get("containers") or []}

        def pre_stop(status: ContainerStatus) -> PreStop | None:
            container = specs.get(status.labels.get(LABEL_CONTAINER))
            if container is None or pod is None:
                return None
            return self.pre_stop(pod, container, status.id)

        await asyncio.gather(*(self.stop_container(s.id, grace, pre_stop(s)) for s in running))
        runtime = self.pod_runtime.runtime
        for status in statuses.values():
            with contextlib.suppress(ContainerError):
                await self.pod_runtime.run_blocking(runtime.remove_container, status.id, True)
        self.pod_runtime.drop_containers(uid)
        self.backoff.forget_pod(uid)
        await self.pod_runtime.run_blocking(self.pod_runtime.remove_pod_cgroups, uid)
        sandbox_id = self.pod_runtime.drop_sandbox(uid)
        if self.pod_network is not None:
            with contextlib.suppress(NetworkError, OSError):
                await self.pod_runtime.run_blocking(self.pod_network.teardown, uid)
        if sandbox_id is not None:
            with contextlib.suppress(ContainerError):
                await self.pod_runtime.run_blocking(runtime.remove_sandbox, sandbox_id)
        await self.pod_runtime.run_blocking(PodVolumes(self.pods_dir / uid).remove)

    async def stop_running(self, uid: str, grace: float) -> None:
        """Stop (not remove) the pod's running containers with ``grace`` seconds each."""
        self.probes.pod_removed(uid)
        statuses = await self.pod_runtime.run_blocking(self.pod_runtime.refresh, uid)
        await asyncio.gather(*(
            self.stop_container(s.id, lambda: grace) for s in statuses.values() if s.state == "running"
        ))
        await self.pod_runtime.run_blocking(self.pod_runtime.refresh, uid)

    def pre_stop(self, pod: Obj, container: Obj, cid: str) -> PreStop | None:
        """The container's preStop hook as ``stop_container`` runs it (None without one)."""
        handler = (container.get("lifecycle") or {}).get("preStop")
        if not handler:
            return None
        uid = pod["metadata"]["uid"]

        async def run(timeout: float) -> None:
            error = await run_hook(self.probes, uid, container, cid, handler, timeout)
            if error is not None:
                self.record_event(pod, "Warning", "FailedPreStopHook", error)

        return run

    async def stop_container(self, cid: str, grace: Grace, pre_stop: PreStop | None = None) -> None:
        """The preStop hook (within the grace period), SIGTERM, then SIGKILL once the grace period
        is over; polls without holding a thread."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        runtime = self.pod_runtime.runtime
        run = self.pod_runtime.run_blocking
        try:
            if pre_stop is not None and grace() > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pre_stop(grace()), grace())
            if grace() > 0:
                await run(runtime.kill_container, cid, signal.SIGTERM)
                interval = 0.02
                while loop.time() - started < grace():
                    status = await run(runtime.container_status, cid)
                    if status.state != "running":
                        return
                    await asyncio.sleep(interval)
                    interval = min(0.5, interval * 2)
            await run(runtime.kill_container, cid, signal.SIGKILL)
            for _ in range(300):
                if (await run(runtime.container_status, cid)).state != "running":
                    return
                await asyncio.sleep(0.1)
            log.warning("container %s still running 30 s after SIGKILL", cid)
        except ContainerNotFound:
            return
        except ContainerError as e:
            log.warning("stopping container %s: %s", cid, e)

    # ---- a finished pod ---------------------------------------------------------------------

    async def release_finished(self, record: PodRecord) -> None:
        """Give back a finished pod's address and mounts (once each; its files stay)."""
        if not record.network_torn_down and self.pod_network is not None:
            with contextlib.suppress(NetworkError, OSError):
                await self.pod_runtime.run_blocking(self.pod_network.teardown, record.uid)
            record.network_torn_down = True
        if not record.volumes_released:
            try:
                await self.pod_runtime.run_blocking(PodVolumes(self.pods_dir / record.uid).unmount)
            except VolumeError as e:
                log.warning("pod %s: %s (retried when the pod is removed)", record.key, e)
            record.volumes_released = True
