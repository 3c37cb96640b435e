"""The pod manager: runs every Pod bound to this node and reports its status.

It is a controller (``client.controller.Controller``): events only enqueue a pod's key, and the
work queue's one-worker-per-key rule serialises all work on one pod while different pods
proceed in parallel; a failed sync is retried with the queue's per-key back-off. Events in: an
informer on the Pods with ``spec.nodeName=<node>`` (add/update/delete: the pod is synced at
once), the PLEG relist of the runtime (``podruntime``: a container that started or exited
wakes its pod), probe results. ``sync_pod`` is level-triggered — it looks at the Pod and at the
runtime and does the next steps:

1. Pod gone from the API (force-deleted) or replaced by a new uid: its runtime leftovers are
   killed (2 s grace, the kubelet's minimum) and removed (``cleanup_orphan``).
2. ``deletionTimestamp`` set: the pod is stopped and taken apart (``termination``: preStop
   hooks, SIGTERM, SIGKILL once the grace period is over, then containers, sandbox, pod
   network and volumes removed), then the Pod object is deleted with gracePeriodSeconds=0 and
   a uid precondition. Terminations run as their own tasks, so long grace periods never hold
   the workers that start other pods.
3. Otherwise: sandbox (net/ipc/uts namespaces) and pod network; volumes (``volumes``; a volume
   that cannot be set up gets ``FailedMount`` in upstream's words, and after the kubelet's
   2 min 3 s wait ``Unable to attach or mount volumes: ...``); init containers one by one;
   then every container. Each start: the image (``images``: pull policy, pull secrets,
   ErrImagePull/ImagePullBackOff), the runtime spec (``containerspec``, pure: env, mounts,
   security context, resources, cgroup, QoS), the pod's cgroups (``podruntime``), create and
   start, the postStart hook (``hooks``; its failure kills the container). An exited container
   is restarted per restartPolicy after the CrashLoopBackOff delay (``backoff``). Each attempt
   is a new runtime container labelled with its restart count; the previous one is kept for
   ``logs --previous`` and ``lastState``. ``activeDeadlineSeconds`` and a disk emptyDir over
   its sizeLimit fail the pod (DeadlineExceeded, Evicted).
4. The status (``statuswriter``) is written whenever it differs from the last written. Once it
   says Succeeded/Failed and no container runs, the pod gives back its address and its mounts
   (``termination.release_finished``); its exited containers and their logs stay until the
   Pod is deleted. Pods with ConfigMap/Secret volumes are synced again every minute, so the
   files follow changes of those objects (published atomically, see ``volumes``).

What the pod manager keeps beyond the runtime is a ``PodRecord`` per pod; all runtime
knowledge lives in the runtime, so after a restart of k3py ``podruntime.adopt`` rebuilds the
index and running pods keep running with their restart counts. Probes and the streaming
backend see the pod manager only through narrow interfaces (``probes.ProbeHost``,
``streaming.PodDirectory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from k3py.agent.kubelet.backoff import RestartBackOff
from k3py.agent.kubelet.containerspec import (
    ContainerInputs,
    NodeFacts,
    container_spec,
    needs_image_user,
)
from k3py.agent.kubelet.hooks import POST_START_TIMEOUT, run_hook
from k3py.agent.kubelet.images import ImageManager
from k3py.agent.kubelet.podinputs import SECRETS, fetch_claim_sources, fetch_optional
from k3py.agent.kubelet.podrecord import PodRecord
from k3py.agent.kubelet.podruntime import PodRuntime, attempt_of, attempts_in, is_init
from k3py.agent.kubelet.podspec import ContainerConfigError, active_deadline_left, referenced_config
from k3py.agent.kubelet.probes import ProbeManager
from k3py.agent.kubelet.statuswriter import StatusWriter
from k3py.agent.kubelet.termination import ORPHAN_GRACE_SECONDS, PodTerminator, current_grace
from k3py.agent.kubelet.volumes import (
    EMPTY_DIR_CHECK_SECONDS,
    PodVolumes,
    VolumeError,
    VolumeSetUpErrors,
    failed_mount_message,
    referenced_volume_config,
)
from k3py.agent.network import NetworkError, PodNetwork, host_ports_of_pod, uses_pod_network
from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339
from k3py.client.controller import Controller
from k3py.client.events import EventRecorder
from k3py.client.informer import Informer, InformerFactory
from k3py.client.interface import CONFIGMAPS, PODS, SERVICES, Client
from k3py.client.workqueue import WorkQueue
from k3py.runtime.containers import ContainerError, ContainerRuntime
from k3py.runtime.spec import ContainerStatus

Obj = dict[str, Any]

VOLUME_RESYNC_SECONDS = 60.0
SANDBOX_RETRY_SECONDS = 5.0
CONFIG_RETRY_SECONDS = 10.0  # CreateContainerConfigError / CreateContainerError


class PodManager(Controller):
    """See the module docstring."""

    name = "kubelet-pods"
    component = "kubelet"

    def __init__(
        self,
        client: Client,
        runtime: ContainerRuntime,
        pod_network: PodNetwork | None,
        *,
        node_name: str,
        node_ip: str,
        pods_dir: Path,
        allocatable: Callable[[], dict[str, str]],
        workers: int = 16,
        clock: Callable[[], float] = time.time,
        seccomp_default: bool = False,
        seccomp_root: Path | None = None,
    ) -> None:
        super().__init__(client, InformerFactory(client))
        self.queue = WorkQueue(self.name, qps=1000.0, burst=1000)
        self.recorder = EventRecorder(client, self.component, node_name)
        self.workers = workers
        self.pod_network = pod_network
        self.node_name = node_name
        self.node_ip = node_ip
        self.pods_dir = pods_dir
        self.allocatable = allocatable
        # kubelet's --seccomp-default, and where Localhost profiles live (<data dir>/seccomp)
        self.seccomp_default = seccomp_default
        self.seccomp_root = seccomp_root or pods_dir.parent / "seccomp"
        self.service_env: dict[str, str] = {}  # the ``kubernetes`` Service's variables
        self.informer = Informer(client, PODS, field_selector=f"spec.nodeName={node_name}")
        self.services = self.informers.informer(SERVICES)  # for the containers' service variables
        self.pod_runtime = PodRuntime(runtime)
        self.probes = ProbeManager(self.pod_runtime, self)
        self.backoff = RestartBackOff(clock)
        self.images = ImageManager(client, runtime.images, self.pod_runtime.run_blocking, self.event)
        self.status_writer = StatusWriter(client, node_ip, self.pod_runtime, self.probes, self.images, pods_dir)
        self.terminator = PodTerminator(self.pod_runtime, self.probes, pod_network, pods_dir, self.recorder.record,
                                        self.backoff, self.queue)
        self.records: dict[str, PodRecord] = {}  # by uid
        self._tasks: list[asyncio.Task[Any]] = []
        self.informer.add_handler(self.enqueue, self._on_pod_update, self.enqueue)

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.pod_runtime.adopt()
        self.informers.start()
        self._tasks.append(asyncio.create_task(self.informer.run(), name="kubelet-pod-informer"))
        await asyncio.gather(*(i.wait_synced() for i in self.own_informers()))
        live = {p["metadata"]["uid"] for p in self.informer.cache.list()}
        for uid in self.pod_runtime.uids() - live:
            self.queue.add(("orphan", uid))
        self._tasks.append(asyncio.create_task(self.run(), name="kubelet-pod-workers"))
        self._tasks.append(asyncio.create_task(self.pod_runtime.pleg(self.wake, self.records), name="kubelet-pleg"))

    async def stop(self) -> None:
        """Stop managing (containers keep running: they belong to the supervisor)."""
        self.queue.shutdown()
        await self.probes.stop()
        await self.terminator.cancel_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.informers.stop()
        await self.recorder.stop()
        self.pod_runtime.shutdown()

    async def reconcile(self, key: Hashable) -> float | None:
        if isinstance(key, tuple):  # ("orphan", uid): runtime leftovers of a pod the API lacks
            await self.cleanup_orphan(key[1])
            return None
        return await self.sync_pod(str(key))

    # ---- events in, and what probes and streaming ask ----------------------------------------

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        # A status-only change that is our own write echoing back needs nothing; one by someone
        # else (a controller marking the pod not ready) makes us write ours again.
        if old.get("spec") == new.get("spec") and _meta_without_versions(old) == _meta_without_versions(new):
            record = self.records.get((new.get("metadata") or {}).get("uid", ""))
            if record is None or new.get("status") == record.server_status:
                return
            record.last_status = None
        self.enqueue(new)

    def wake(self, uid: str) -> None:
        """Sync pod ``uid`` (its containers changed, or a probe result did)."""
        record = self.records.get(uid)
        self.queue.add(record.key if record is not None else ("orphan", uid))

    def pod_ip(self, uid: str) -> str:
        record = self.records.get(uid)
        return record.pod_ip if record is not None else ""

    def event(self, pod: Obj, kind: str, reason: str, message: str, once: str = "") -> None:
        """Record an Event about ``pod``; with ``once``, only the first time for that tag."""
        record = self.records.get(pod["metadata"]["uid"])
        if once and record is not None:
            if once in record.events_sent:
                return
            record.events_sent.add(once)
        self.recorder.record(pod, kind, reason, message)

    def find_pod(self, namespace: str, name: str) -> Obj | None:
        return self.informer.cache.get(f"{namespace}/{name}")

    # ---- sync -------------------------------------------------------------------------------

    async def sync_pod(self, key: str) -> float | None:
        """One level-triggered pass over pod ``key``; returns seconds until it wants another."""
        pod = self.informer.cache.get(key)
        if pod is None:
            for uid, record in list(self.records.items()):
                if record.key == key:
                    await self.cleanup_orphan(uid)
            return None
        meta = pod["metadata"]
        uid = meta["uid"]
        for other_uid, record in list(self.records.items()):
            if record.key == key and other_uid != uid:
                await self.cleanup_orphan(other_uid)  # a new pod of the same name replaced it
        record = self.records.get(uid)
        if record is None:
            record = PodRecord(uid=uid, key=key)
            self.records[uid] = record
            old_status = pod.get("status") or {}
            record.start_time = old_status.get("startTime") or ""
            record.pod_ip = old_status.get("podIP") or ""
        if meta.get("deletionTimestamp"):
            self.terminator.start(uid, key, lambda: self.terminate_pod(pod, record))
            return None
        if self.terminator.terminating(uid):
            return None  # being torn down (a probe or the PLEG woke it): nothing to start
        phase = (pod.get("status") or {}).get("phase")
        statuses = await self.pod_runtime.run_blocking(self.pod_runtime.refresh, uid)
        if record.volumes_released:
            phase = (record.last_status or {}).get("phase") or phase  # our write may not be back yet
        if phase in ("Succeeded", "Failed") and not any(s.state == "running" for s in statuses.values()):
            await self.terminator.release_finished(record)
            return None
        if not record.start_time:
            record.start_time = now_rfc3339()
        deadline_left = active_deadline_left(pod, record.start_time, time.time())
        if deadline_left is not None and deadline_left <= 0 and record.failure is None:
            record.failure = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
            self.event(pod, "Normal", "DeadlineExceeded", record.failure[1])
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            self.terminator.start(uid, key, lambda: self.terminator.stop_running(uid, grace), wake_after=True)
            return None
        if record.failure is not None:
            await self.status_writer.write(pod, record)  # the containers are stopped: report Failed
            await self._release_if_finished(record)
            return None
        requeue = await self._run_pod(pod, record)
        await self.status_writer.write(pod, record)
        if await self._release_if_finished(record):
            return None
        if any(referenced_volume_config(pod)):
            # ConfigMap and Secret volumes follow their objects: look again every minute.
            requeue = min(requeue, VOLUME_RESYNC_SECONDS) if requeue is not None else VOLUME_RESYNC_SECONDS
        if deadline_left is not None:
            requeue = min(requeue, deadline_left) if requeue is not None else deadline_left
        return requeue

    async def _run_pod(self, pod: Obj, record: PodRecord) -> float | None:
        spec = pod.get("spec") or {}
        uid = record.uid
        try:
            await self._ensure_sandbox(pod, record)
        except (ContainerError, NetworkError, OSError) as e:
            self.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
            for container in spec.get("containers") or []:
                record.waiting[container["name"]] = ("ContainerCreating", "")
            return SANDBOX_RETRY_SECONDS
        try:
            volume_paths = await self._prepare_volumes(pod, record)
        except (VolumeError, ContainerConfigError, OSError) as e:
            self._mount_failed(pod, record, e if isinstance(e, VolumeError) else VolumeError(str(e)))
            return SANDBOX_RETRY_SECONDS
        record.mount_wait.mounted()
        policy = spec.get("restartPolicy", "Always")
        statuses = self.pod_runtime.statuses(uid)
        wake: list[float] = []
        # Init containers, in order: each must succeed before the next starts.
        inits_done = True
        record.init_failed = False
        for container in spec.get("initContainers") or []:
            attempts = attempts_in(statuses, container["name"], True)
            current = attempts[-1] if attempts else None
            if current is not None and current.state == "exited" and current.exit_code == 0:
                continue
            inits_done = False
            if current is not None and current.state == "running":
                break
            if current is not None and current.state == "exited":
                if policy == "Never":
                    record.init_failed = True
                    break
                delay = self._crash_loop(pod, record, container, current)
                if delay > 0:
                    wake.append(delay)
                    break
            wait = await self._start_container(pod, record, container, True, volume_paths, attempts)
            if wait is not None:
                wake.append(wait)
            break
        if inits_done:
            for container in spec.get("containers") or []:
                name = container["name"]
                attempts = attempts_in(statuses, name, False)
                current = attempts[-1] if attempts else None
                if current is not None and current.state in ("running", "created"):
                    record.waiting.pop(name, None)
                    if current.state == "running":
                        # Adopted after a restart of k3py: its probes start over.
                        self.probes.ensure_running(pod, container, current.id)
                    continue
                if current is not None and current.state == "exited":
                    restart = policy == "Always" or (policy == "OnFailure" and current.exit_code != 0)
                    if not restart:
                        record.waiting.pop(name, None)
                        continue
                    delay = self._crash_loop(pod, record, container, current)
                    if delay > 0:
                        wake.append(delay)
                        continue
                wait = await self._start_container(pod, record, container, False, volume_paths, attempts)
                if wait is not None:
                    wake.append(wait)
        else:
            for container in spec.get("containers") or []:
                record.waiting[container["name"]] = ("PodInitializing", "")
        return min(wake) if wake else None

    def _crash_loop(self, pod: Obj, record: PodRecord, container: Obj, current: ContainerStatus) -> float:
        """Seconds before the exited container ``current`` may start again (0: now, see
        ``backoff``); while it waits, it is in CrashLoopBackOff (with upstream's event)."""
        key = (record.uid, container["name"], is_init(current))
        restarts = attempt_of(current)
        started, finished = (current.started_at or current.created_at) / 1e9, current.finished_at / 1e9
        remaining = self.backoff.remaining(key, restarts, started, finished)
        if remaining <= 0:
            return 0.0
        meta = pod["metadata"]
        name = container["name"]
        total = round(self.backoff.delay(key, restarts, finished - started))
        record.waiting[name] = (
            "CrashLoopBackOff",
            f"back-off {total}s restarting failed container={name} "
            f"pod={meta['name']}_{meta['namespace']}({meta['uid']})",
        )
        self.event(
            pod, "Warning", "BackOff",
            f"Back-off restarting failed container {name} in pod {meta['name']}_{meta['namespace']}({meta['uid']})",
            once=f"backoff-{current.id}",
        )
        return remaining

    async def _ensure_sandbox(self, pod: Obj, record: PodRecord) -> None:
        spec = pod.get("spec") or {}
        sandbox_id = record.sandbox_id = await self.pod_runtime.ensure_sandbox(pod)
        if spec.get("hostNetwork"):
            record.pod_ip = self.node_ip
            return
        if self.pod_network is None or not uses_pod_network(spec):
            return
        if record.network_sandbox == sandbox_id:
            return
        # Once per sandbox and agent run: setup is idempotent (an adopted pod keeps its address
        # and veth) and repairs what is missing, e.g. after the host rebooted.
        netns_path = await self.pod_runtime.run_blocking(self.pod_runtime.sandbox_netns, sandbox_id)
        pod_ip = await self.pod_runtime.run_blocking(self.pod_network.setup, record.uid, netns_path, host_ports_of_pod(spec))
        record.pod_ip = pod_ip.ip
        record.network_sandbox = sandbox_id
        record.network_torn_down = False

    async def _prepare_volumes(self, pod: Obj, record: PodRecord) -> dict[str, str]:
        """Set up the pod's volumes (see ``volumes``); VolumeError while one cannot be, e.g. a
        claim not bound yet (the pod stays ContainerCreating and is retried). A disk emptyDir
        over its sizeLimit evicts the pod; pods with such limits are looked at every 10 s."""
        namespace = pod["metadata"]["namespace"]
        cm_names, secret_names = referenced_volume_config(pod)
        config_maps = await fetch_optional(self.client, CONFIGMAPS, namespace, cm_names)
        secrets = await fetch_optional(self.client, SECRETS, namespace, secret_names)
        claim_sources = await fetch_claim_sources(self.client, pod)
        volumes = PodVolumes(self.pods_dir / record.uid)
        allocatable = self.allocatable()
        paths = await self.pod_runtime.run_blocking(
            lambda: volumes.prepare(pod, pod_ip=record.pod_ip, config_maps=config_maps, secrets=secrets,
                                    allocatable=allocatable, claim_sources=claim_sources)
        )
        if any((v.get("emptyDir") or {}).get("sizeLimit") for v in pod["spec"].get("volumes") or []):
            exceeded = await self.pod_runtime.run_blocking(volumes.size_limit_exceeded, pod)
            if exceeded is not None and record.failure is None:
                # The eviction manager's verdict: containers stopped, the pod Failed/Evicted.
                record.failure = ("Evicted", exceeded)
                self.event(pod, "Warning", "Evicted", exceeded)
                grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))

                async def evict() -> None:
                    await self.terminator.stop_running(record.uid, grace)
                    # This sync already reported the pod Failed, and a Failed pod is not synced
                    # again: report its stopped containers here.
                    await self.status_writer.write(self.informer.cache.get(record.key) or pod, record)

                self.terminator.start(record.uid, record.key, evict, wake_after=True)
            elif exceeded is None:
                self.queue.add_after(record.key, EMPTY_DIR_CHECK_SECONDS)
        return paths

    def _mount_failed(self, pod: Obj, record: PodRecord, error: VolumeError) -> None:
        """FailedMount events as upstream words them: one per volume whose set-up failed, and
        once the kubelet's wait for the pod's volumes (2 min 3 s) has run out, the wait's
        summary of the volumes still not mounted; then a new wait begins."""
        errors = list(error.failures.values()) if isinstance(error, VolumeSetUpErrors) else [error]
        for each in errors:
            self.event(pod, "Warning", "FailedMount", failed_mount_message(each))
        timed_out = record.mount_wait.failed((each.volume for each in errors if each.volume), time.monotonic())
        if timed_out is not None:
            self.event(pod, "Warning", "FailedMount", failed_mount_message(timed_out))

    async def _start_container(
        self,
        pod: Obj,
        record: PodRecord,
        container: Obj,
        init: bool,
        volume_paths: dict[str, str],
        attempts: list[ContainerStatus],
    ) -> float | None:
        """Start one attempt of ``container``; seconds until the pod wants a look again (None:
        when the runtime says something changed)."""
        name = container["name"]
        image = await self.images.ensure(pod, container, record.image_backoff)
        if not image.ready:
            record.waiting[name] = (image.reason, image.message)
            return image.retry_after
        namespace = pod["metadata"]["namespace"]
        attempt = attempt_of(attempts[-1]) + 1 if attempts else 0
        try:
            cm_names, secret_names = referenced_config(container)
            image_user = None
            if needs_image_user(pod, container):
                image_user = await self.pod_runtime.run_blocking(self.images.configured_user, container.get("image", ""))
            inputs = ContainerInputs(
                pod_dir=self.pods_dir / record.uid, init=init, attempt=attempt, pod_ip=record.pod_ip,
                sandbox_id=record.sandbox_id,
                config_maps=await fetch_optional(self.client, CONFIGMAPS, namespace, cm_names),
                secrets=await fetch_optional(self.client, SECRETS, namespace, secret_names),
                services=self.services.cache.list(), volume_paths=volume_paths, image_user=image_user,
            )
            node = NodeFacts(node_ip=self.node_ip, allocatable=self.allocatable(), seccomp_default=self.seccomp_default,
                             seccomp_root=str(self.seccomp_root), service_env=self.service_env)
            spec = container_spec(pod, container, node, inputs)
            volumes = PodVolumes(inputs.pod_dir)
            spec.mounts = await self.pod_runtime.run_blocking(volumes.realize_mounts, spec.mounts, container, volume_paths,
                                                       attempt)
        except (ContainerConfigError, VolumeError, OSError) as e:
            record.waiting[name] = ("CreateContainerConfigError", str(e))
            self.event(pod, "Warning", "Failed", f"Error: {e}")
            return CONFIG_RETRY_SECONDS
        runtime = self.pod_runtime.runtime
        try:
            on_node = {p["metadata"]["uid"]: p for p in self.informer.cache.list()}
            on_node[record.uid] = pod
            await self.pod_runtime.run_blocking(self.pod_runtime.ensure_pod_cgroup, pod, list(on_node.values()))
            cid = await self.pod_runtime.run_blocking(runtime.create_container, spec)
        except ContainerError as e:
            record.waiting[name] = ("CreateContainerError", str(e))
            self.event(pod, "Warning", "Failed", f"Error: {e}")
            return CONFIG_RETRY_SECONDS
        self.pod_runtime.track(record.uid, await self.pod_runtime.run_blocking(runtime.container_status, cid))
        self.event(pod, "Normal", "Created", f"Created container {name}")
        try:
            await self.pod_runtime.run_blocking(runtime.start_container, cid)
        except ContainerError as e:
            record.waiting.pop(name, None)
            self.event(pod, "Warning", "Failed", f"Error: {e}")
        else:
            record.waiting.pop(name, None)
            self.event(pod, "Normal", "Started", f"Started container {name}")
            post_start = (container.get("lifecycle") or {}).get("postStart")
            if post_start:
                error = await run_hook(self.probes, record.uid, container, cid, post_start, POST_START_TIMEOUT)
                if error is not None:
                    # As the kubelet: a failed postStart hook kills the container the way any
                    # container is stopped (preStop hook, SIGTERM, SIGKILL after the pod's grace
                    # period); then restartPolicy decides.
                    self.event(pod, "Warning", "FailedPostStartHook", error)
                    grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
                    await self.terminator.stop_container(cid, lambda: grace,
                                                         self.terminator.pre_stop(pod, container, cid))
        status = await self.pod_runtime.run_blocking(runtime.container_status, cid)
        self.pod_runtime.track(record.uid, status)
        # Keep the previous attempt (for logs --previous and lastState) and drop older ones.
        for old in attempts[:-1]:
            with contextlib.suppress(ContainerError):
                await self.pod_runtime.run_blocking(runtime.remove_container, old.id, True)
            self.pod_runtime.untrack(record.uid, old.id)
        if not init:
            self.probes.container_started(pod, container, cid)
        if status.state == "exited":
            # It exited before we looked: the PLEG will see no change, so act on it now.
            return 0.0
        return None

    async def _release_if_finished(self, record: PodRecord) -> bool:
        """After a status write: when it said Succeeded/Failed and no container runs any more,
        release what the pod holds (``termination.release_finished``); True when it did."""
        if (record.last_status or {}).get("phase") not in ("Succeeded", "Failed"):
            return False
        if any(s.state == "running" for s in self.pod_runtime.statuses(record.uid).values()):
            return False
        await self.terminator.release_finished(record)
        return True

    # ---- termination ------------------------------------------------------------------------

    async def terminate_pod(self, pod: Obj, record: PodRecord) -> None:
        """Stop and remove a pod being deleted, then delete its Pod object for good."""
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        uid, key = record.uid, record.key
        await self.terminator.kill_pod(uid, lambda: current_grace(self.informer.cache.get(key), uid, float(grace)),
                                       pod)
        try:
            await self.client.delete(
                PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                preconditions={"uid": record.uid},
            )
        except ApiError as e:
            if e.code not in (404, 409):
                raise
        self.records.pop(record.uid, None)

    async def cleanup_orphan(self, uid: str) -> None:
        """Remove the runtime leftovers of a pod the API no longer has (or has under a new uid)."""
        if any(p["metadata"]["uid"] == uid for p in self.informer.cache.list()):
            return
        record = self.records.pop(uid, None)
        if uid in self.pod_runtime.uids() or record is not None:
            self.terminator.start(uid, ("orphan", uid),
                                  lambda: self.terminator.kill_pod(uid, lambda: ORPHAN_GRACE_SECONDS, None))


def _meta_without_versions(obj: Obj) -> Obj:
    meta = dict(obj.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    return meta


def pods_dir_for(data_dir: Path) -> Path:
    path = data_dir / "pods"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
