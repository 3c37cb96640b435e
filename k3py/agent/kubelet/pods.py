"""The pod manager: runs every Pod bound to this node and reports its status.

Events in: an informer on the Pods with ``spec.nodeName=<node>`` (add/update/delete), a
PLEG-style relist of the runtime every second (a container that started or exited wakes its
pod), probe results. Each wakes the pod's key in a ``WorkQueue``, whose one-worker-per-key rule
serialises all work on one pod while different pods proceed in parallel; ``sync_pod`` is
level-triggered — it looks at the Pod and at the runtime and does the next steps:

1. Pod gone from the API (force-deleted) or replaced by a new uid: its runtime leftovers are
   killed (2 s grace, the kubelet's minimum) and removed (``cleanup_orphan``).
2. ``deletionTimestamp`` set: the preStop hook runs, containers get SIGTERM, SIGKILL once the
   grace period is over (a later, shorter delete shortens it); the containers, sandbox, pod
   network and volumes are removed, then the Pod object is deleted with gracePeriodSeconds=0
   and a uid precondition. Terminations run as their own tasks, so long grace periods never
   hold the workers that start other pods.
3. Otherwise: sandbox (net/ipc/uts namespaces) and pod network; volumes; init containers one
   by one; then every container. Images are pulled per imagePullPolicy with the runtime's
   registry client and the pod's imagePullSecrets (IfNotPresent: when missing from the store;
   Always: the registry is asked at every start; Never: never), with Pulling/Pulled/Failed
   events, ErrImagePull then ImagePullBackOff (each with its ``Failed "Error: <reason>"``
   event, as upstream's image manager and container start record them). A volume that cannot
   be set up gets ``FailedMount`` in upstream's words (``MountVolume.SetUp failed for volume
   "<name>" : ...``; after the kubelet's 2 min 3 s wait, ``Unable to attach or mount volumes:
   ...``). Each container's imageID is the repo digest containerd would report
   (``image_ref``).
   Each container runs in its pod's cgroup below its QoS class's group (``podspec``), set up
   with the pod's limits before every start, with the QoS class's oom_score_adj.
   A postStart hook runs right after a container starts (its failure kills
   the container). An exited container is restarted per restartPolicy after the
   CrashLoopBackOff delay (immediately, then 10 s doubling to 5 min; reset after 10 min of
   running). Each attempt is a new runtime container labelled with its restart count; the
   previous one is kept for ``logs --previous`` and ``lastState``.
4. The status (``status.pod_status``) is written whenever it differs from the last written.
   Once it says Succeeded/Failed and no container runs, the pod gives back its address and
   its mounts (tmpfs volumes, as upstream's volume manager unmounts a terminated pod's
   volumes); its exited containers and their logs stay until the Pod is deleted.
   Pods with ConfigMap/Secret volumes are synced again every minute, so the files follow
   changes of those objects (published atomically, see ``volumes``).

All runtime knowledge lives in the runtime (labels on containers, the pod uid in the sandbox
name), so after a restart of k3py ``adopt`` rebuilds the index and running pods keep running
with their restart counts.

Blocking runtime and network calls run on the manager's own thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from k3py.agent.kubelet.backoff import RestartBackOff
from k3py.agent.kubelet.podspec import (
    KUBEPODS,
    QOS_GROUPS,
    ContainerConfigError,
    command_and_args,
    container_env,
    oom_score_adj,
    pod_cgroup_path,
    pod_cgroup_paths_of_uid,
    pod_cgroup_resources,
    pod_service_env,
    qos_class,
    qos_group_resources,
    referenced_config,
    runtime_resources,
    seccomp_profile,
)
from k3py.agent.kubelet.probes import ProbeManager
from k3py.agent.kubelet.pullsecrets import credentials_for
from k3py.agent.kubelet.status import ContainerView, pod_status
from k3py.agent.kubelet.volumes import (
    EMPTY_DIR_CHECK_SECONDS,
    PVCS,
    PVS,
    MountWait,
    PodVolumes,
    VolumeError,
    VolumeSetUpErrors,
    bound_volume_name,
    claim_source,
    claimed_volumes,
    failed_mount_message,
    pod_hostname,
    referenced_volume_config,
    unmounted_volumes_error,
)
from k3py.agent.network import NetworkError, PodNetwork, host_ports_of_pod, uses_pod_network
from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339, parse_rfc3339
from k3py.api.quantity import parse_quantity
from k3py.client.events import EventRecorder
from k3py.client.informer import Informer, object_key
from k3py.client.interface import CONFIGMAPS, PODS, SERVICES, Client, Resource
from k3py.client.workqueue import ShutDown, WorkQueue
from k3py.runtime.containers import ContainerError, ContainerNotFound, ContainerRuntime
from k3py.runtime.images import Image, ImageError
from k3py.runtime.reference import ReferenceError_, parse_reference
from k3py.runtime.registry import Credentials
from k3py.runtime.spec import ContainerSpec, ContainerStatus, SandboxSpec

log = logging.getLogger("k3py.kubelet")

T = TypeVar("T")
Obj = dict[str, Any]

SECRETS = Resource("", "v1", "secrets", "Secret")  # not among the client's constants yet

LABEL_UID = "io.kubernetes.pod.uid"
LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_NAME = "io.kubernetes.pod.name"
LABEL_CONTAINER = "io.kubernetes.container.name"
LABEL_ATTEMPT = "io.kubernetes.container.restartCount"
LABEL_INIT = "k3py.io/init-container"
SANDBOX_SEPARATOR = "_"
PLEG_PERIOD = 1.0
IMAGE_BACKOFF_MAX = 300.0
TERMINATION_MESSAGE_MAX = 4096
VOLUME_RESYNC_SECONDS = 60.0
POST_START_TIMEOUT = 30.0
ORPHAN_GRACE_SECONDS = 2.0  # the kubelet's minimum for pods that vanished from the API


def sandbox_name(namespace: str, name: str, uid: str) -> str:
    return SANDBOX_SEPARATOR.join((namespace, name, uid))


def sandbox_uid(sandbox_name_: str) -> str:
    return sandbox_name_.rsplit(SANDBOX_SEPARATOR, 1)[-1]


@dataclass
class PodRecord:
    """What the manager knows about one pod beyond the runtime: timings, probe results, waits."""

    uid: str
    key: str
    sandbox_id: str = ""
    pod_ip: str = ""
    start_time: str = ""
    network_torn_down: bool = False
    volumes_released: bool = False  # a finished pod's mounts are gone (its files stay until deletion)
    mount_wait: MountWait = field(default_factory=MountWait)  # the wait for the pod's volumes
    network_sandbox: str = ""  # the sandbox whose namespace the pod network was set up in
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> (reason, message)
    image_failures: dict[str, int] = field(default_factory=dict)
    image_retry_at: dict[str, float] = field(default_factory=dict)
    last_status: Obj | None = None
    init_failed: bool = False
    events_sent: set[str] = field(default_factory=set)
    messages: dict[str, str] = field(default_factory=dict)  # container id -> termination message
    failure: tuple[str, str] | None = None  # (reason, message) when the kubelet failed the pod
    server_status: Obj | None = None  # the status as the server stored our last write


class PodManager:
    """See the module docstring."""

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
        self.client = client
        self.runtime = runtime
        self.pod_network = pod_network
        self.node_name = node_name
        self.node_ip = node_ip
        self.pods_dir = pods_dir
        self.allocatable = allocatable
        self.workers = workers
        # kubelet's --seccomp-default, and where Localhost profiles live (<data dir>/seccomp)
        self.seccomp_default = seccomp_default
        self.seccomp_root = seccomp_root or pods_dir.parent / "seccomp"
        self.executor = ThreadPoolExecutor(max_workers=48, thread_name_prefix="kubelet")
        self.informer = Informer(client, PODS, field_selector=f"spec.nodeName={node_name}")
        self.services = Informer(client, SERVICES)  # for the containers' service variables
        self.queue = WorkQueue("kubelet-pods", qps=1000.0, burst=1000)
        self.events = EventRecorder(client, "kubelet", node_name)
        self.probes = ProbeManager(self)
        self.backoff = RestartBackOff(clock)
        self.records: dict[str, PodRecord] = {}  # by uid
        self._image_refs: dict[tuple[str, str], str] = {}  # (requested image, image id) -> imageID
        # uid -> {container id -> status}: the runtime's containers of each pod (PLEG keeps it fresh)
        self.containers: dict[str, dict[str, ContainerStatus]] = {}
        self.sandboxes: dict[str, str] = {}  # uid -> sandbox id
        self.service_env: dict[str, str] = {}
        self._supervisor_root: tuple[int, str] | None = None  # (pid, prefix) for sandbox_netns
        self._kills: dict[str, asyncio.Task[None]] = {}  # uid -> its termination in progress
        self._tasks: list[asyncio.Task[Any]] = []
        self.informer.add_handler(self._on_pod, self._on_pod_update, self._on_pod_deleted)

    # ---- plumbing ---------------------------------------------------------------------------

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _on_pod(self, pod: Obj) -> None:
        self.queue.add(object_key(pod))

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        # A status-only change that is our own write echoing back needs nothing; one by someone
        # else (a controller marking the pod not ready) makes us write ours again.
        if old.get("spec") == new.get("spec") and _meta_without_versions(old) == _meta_without_versions(new):
            record = self.records.get((new.get("metadata") or {}).get("uid", ""))
            if record is None or new.get("status") == record.server_status:
                return
            record.last_status = None
        self.queue.add(object_key(new))

    def _on_pod_deleted(self, pod: Obj) -> None:
        self.queue.add(object_key(pod))

    def enqueue_uid(self, uid: str) -> None:
        record = self.records.get(uid)
        if record is not None:
            self.queue.add(record.key)
        else:
            self.queue.add(("orphan", uid))

    # ---- life cycle -------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Index what the runtime already runs (a previous k3py run's pods keep running)."""
        containers, sandboxes = await self.run_blocking(self._scan_runtime)
        self.containers = containers
        self.sandboxes = sandboxes

    def _scan_runtime(self) -> tuple[dict[str, dict[str, ContainerStatus]], dict[str, str]]:
        containers: dict[str, dict[str, ContainerStatus]] = {}
        for status in self.runtime.list_containers():
            uid = status.labels.get(LABEL_UID)
            if uid:
                containers.setdefault(uid, {})[status.id] = status
        sandboxes = {sandbox_uid(s.name): s.id for s in self.runtime.list_sandboxes()}
        return containers, sandboxes

    async def start(self) -> None:
        await self.adopt()
        self.events.start()
        self._tasks.append(asyncio.create_task(self.informer.run(), name="kubelet-pod-informer"))
        self._tasks.append(asyncio.create_task(self.services.run(), name="kubelet-service-informer"))
        await self.informer.wait_synced()
        await self.services.wait_synced()
        for _ in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name="kubelet-pod-worker"))
        self._tasks.append(asyncio.create_task(self._pleg(), name="kubelet-pleg"))
        live = {p["metadata"]["uid"] for p in self.informer.cache.list()}
        for uid in set(self.containers) | set(self.sandboxes):
            if uid not in live:
                self.queue.add(("orphan", uid))

    async def stop(self) -> None:
        """Stop managing (containers keep running: they belong to the supervisor)."""
        self.queue.shutdown()
        await self.probes.stop()
        for task in list(self._kills.values()):
            task.cancel()
        await asyncio.gather(*self._kills.values(), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.events.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                if isinstance(key, tuple):
                    await self.cleanup_orphan(key[1])
                    requeue = None
                else:
                    requeue = await self.sync_pod(str(key))
                self.queue.forget(key)
                if requeue is not None:
                    self.queue.add_after(key, requeue)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.info("pod %s: %s (retrying)", key, e.message)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("pod %s: sync failed (retrying)", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def _pleg(self) -> None:
        """Relist the runtime; wake the pods whose containers changed state."""
        while True:
            await asyncio.sleep(PLEG_PERIOD)
            try:
                containers, sandboxes = await self.run_blocking(self._scan_runtime)
            except OSError as e:
                log.warning("runtime relist failed: %s", e)
                continue
            changed: set[str] = set()
            # Merge, never replace: a sync may have created a container after this scan began.
            for uid, current in containers.items():
                known = self.containers.setdefault(uid, {})
                for cid, status in current.items():
                    old = known.get(cid)
                    if old is None or old.state != status.state:
                        known[cid] = status
                        changed.add(uid)
            for uid, sandbox in sandboxes.items():
                if uid not in self.sandboxes and uid not in self.records:
                    self.sandboxes[uid] = sandbox
                    changed.add(uid)
            for uid in changed:
                self.enqueue_uid(uid)

    # ---- the pod's runtime view ---------------------------------------------------------

    def _refresh(self, uid: str) -> dict[str, ContainerStatus]:
        """Re-read the statuses of the pod's known containers (blocking)."""
        fresh: dict[str, ContainerStatus] = {}
        for cid in list(self.containers.get(uid, {})):
            with contextlib.suppress(ContainerNotFound, FileNotFoundError):
                fresh[cid] = self.runtime.container_status(cid)
        self.containers[uid] = fresh
        return fresh

    @staticmethod
    def _attempts(statuses: dict[str, ContainerStatus], name: str, init: bool) -> list[ContainerStatus]:
        """The runtime's containers for one spec container, oldest attempt first."""
        found = [
            s for s in statuses.values()
            if s.labels.get(LABEL_CONTAINER) == name and (s.labels.get(LABEL_INIT) == "true") == init
        ]
        return sorted(found, key=lambda s: int(s.labels.get(LABEL_ATTEMPT, "0")))

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
            self._start_kill(uid, key, lambda: self.terminate_pod(pod, record))
            return None
        if uid in self._kills:
            return None  # being torn down (a probe or the PLEG woke it): nothing to start
        phase = (pod.get("status") or {}).get("phase")
        statuses = await self.run_blocking(self._refresh, uid)
        if record.volumes_released:
            phase = (record.last_status or {}).get("phase") or phase  # our write may not be back yet
        if phase in ("Succeeded", "Failed") and not any(s.state == "running" for s in statuses.values()):
            await self._release_finished(pod, record)
            return None
        if not record.start_time:
            record.start_time = now_rfc3339()
        deadline_left = self._deadline_left(pod, record)
        if deadline_left is not None and deadline_left <= 0 and record.failure is None:
            record.failure = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
            self._event(pod, "Normal", "DeadlineExceeded", record.failure[1])
            self._start_kill(uid, key, lambda: self._stop_all(pod, record), wake_after=True)
            return None
        if record.failure is not None:
            await self._write_status(pod, record)  # the containers are stopped: report Failed
            await self._release_if_finished(pod, record)
            return None
        requeue = await self._run_pod(pod, record)
        await self._write_status(pod, record)
        if await self._release_if_finished(pod, record):
            return None
        if any(referenced_volume_config(pod)):
            # ConfigMap and Secret volumes follow their objects: look again every minute.
            requeue = min(requeue, VOLUME_RESYNC_SECONDS) if requeue is not None else VOLUME_RESYNC_SECONDS
        if deadline_left is not None:
            requeue = min(requeue, deadline_left) if requeue is not None else deadline_left
        return requeue

    @staticmethod
    def _deadline_left(pod: Obj, record: PodRecord) -> float | None:
        """Seconds until ``activeDeadlineSeconds`` runs out (counted from startTime), or None."""
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if not deadline:
            return None
        started = parse_rfc3339(record.start_time).timestamp()
        return started + float(deadline) - time.time()

    async def _stop_all(self, pod: Obj, record: PodRecord) -> None:
        """Stop (not remove) the pod's running containers with its grace period; then resync."""
        self.probes.pod_removed(record.uid)
        grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        statuses = await self.run_blocking(self._refresh, record.uid)
        await asyncio.gather(*(
            self._stop_container(s.id, lambda: grace) for s in statuses.values() if s.state == "running"
        ))
        await self.run_blocking(self._refresh, record.uid)
        self.queue.add(record.key)

    async def _run_pod(self, pod: Obj, record: PodRecord) -> float | None:
        spec = pod.get("spec") or {}
        uid = record.uid
        try:
            await self._ensure_sandbox(pod, record)
        except (ContainerError, NetworkError, OSError) as e:
            self._event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
            for container in spec.get("containers") or []:
                record.waiting[container["name"]] = ("ContainerCreating", "")
            return 5.0
        try:
            volume_paths = await self._prepare_volumes(pod, record)
        except (VolumeError, ContainerConfigError, OSError) as e:
            self._mount_failed(pod, record, e if isinstance(e, VolumeError) else VolumeError(str(e)))
            return 5.0
        record.mount_wait.mounted()
        policy = spec.get("restartPolicy", "Always")
        statuses = self.containers.get(uid, {})
        wake: list[float] = []
        # Init containers, in order: each must succeed before the next starts.
        inits_done = True
        record.init_failed = False
        for container in spec.get("initContainers") or []:
            attempts = self._attempts(statuses, container["name"], True)
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
                delay = self._backoff_remaining(record.uid, current)
                if delay > 0:
                    self._crash_loop(pod, record, container, current, delay)
                    wake.append(delay)
                    break
            wait = await self._start_container(pod, record, container, True, volume_paths, attempts)
            if wait is not None:
                wake.append(wait)
            break
        if inits_done:
            for container in spec.get("containers") or []:
                name = container["name"]
                attempts = self._attempts(statuses, name, False)
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
                    delay = self._backoff_remaining(record.uid, current)
                    if delay > 0:
                        self._crash_loop(pod, record, container, current, delay)
                        wake.append(delay)
                        continue
                wait = await self._start_container(pod, record, container, False, volume_paths, attempts)
                if wait is not None:
                    wake.append(wait)
        else:
            for container in spec.get("containers") or []:
                record.waiting[container["name"]] = ("PodInitializing", "")
        return min(wake) if wake else None

    def _mount_failed(self, pod: Obj, record: PodRecord, error: VolumeError) -> None:
        """FailedMount events as upstream words them: one per volume whose set-up failed, and
        once the kubelet's wait for the pod's volumes (2 min 3 s) has run out, the wait's
        summary of the volumes still not mounted; then a new wait begins."""
        errors = list(error.failures.values()) if isinstance(error, VolumeSetUpErrors) else [error]
        for each in errors:
            self._event(pod, "Warning", "FailedMount", failed_mount_message(each))
        timed_out = record.mount_wait.failed((each.volume for each in errors if each.volume), time.monotonic())
        if timed_out is not None:
            self._event(pod, "Warning", "FailedMount", failed_mount_message(timed_out))

    def _backoff_remaining(self, uid: str, current: ContainerStatus) -> float:
        """Seconds before the exited container ``current`` may start again (``backoff``)."""
        restarts = int(current.labels.get(LABEL_ATTEMPT, "0"))
        started = (current.started_at or current.created_at) / 1e9
        key = (uid, current.labels.get(LABEL_CONTAINER, ""), current.labels.get(LABEL_INIT) == "true")
        return self.backoff.remaining(key, restarts, started, current.finished_at / 1e9)

    def _crash_loop(
        self, pod: Obj, record: PodRecord, container: Obj, current: ContainerStatus, delay: float
    ) -> None:
        meta = pod["metadata"]
        name = container["name"]
        total = round(self.backoff.delay(
            (record.uid, name, current.labels.get(LABEL_INIT) == "true"), int(current.labels.get(LABEL_ATTEMPT, "0")),
            (current.finished_at - (current.started_at or current.created_at)) / 1e9,
        ))
        record.waiting[name] = (
            "CrashLoopBackOff",
            f"back-off {total}s restarting failed container={name} "
            f"pod={meta['name']}_{meta['namespace']}({meta['uid']})",
        )
        self._event(
            pod, "Warning", "BackOff",
            f"Back-off restarting failed container {name} in pod {meta['name']}_{meta['namespace']}({meta['uid']})",
            once=f"backoff-{current.id}",
        )

    async def _ensure_sandbox(self, pod: Obj, record: PodRecord) -> None:
        spec = pod.get("spec") or {}
        meta = pod["metadata"]
        uid = record.uid
        sandbox_id = self.sandboxes.get(uid)
        if sandbox_id is None:
            sandbox = await self.run_blocking(
                self.runtime.create_sandbox,
                SandboxSpec(
                    name=sandbox_name(meta["namespace"], meta["name"], uid),
                    hostname=pod_hostname(pod)[:63],
                    host_network=bool(spec.get("hostNetwork")),
                    host_ipc=bool(spec.get("hostIPC")),
                ),
            )
            sandbox_id = sandbox.id
            self.sandboxes[uid] = sandbox_id
        record.sandbox_id = sandbox_id
        if spec.get("hostNetwork"):
            record.pod_ip = self.node_ip
            return
        if self.pod_network is None or not uses_pod_network(spec):
            return
        if record.network_sandbox == sandbox_id:
            return
        # Once per sandbox and agent run: setup is idempotent (an adopted pod keeps its address
        # and veth) and repairs what is missing, e.g. after the host rebooted.
        netns_path = await self.run_blocking(self.sandbox_netns, sandbox_id)
        pod_ip = await self.run_blocking(self.pod_network.setup, uid, netns_path, host_ports_of_pod(spec))
        record.pod_ip = pod_ip.ip
        record.network_sandbox = sandbox_id
        record.network_torn_down = False

    def sandbox_netns(self, sandbox_id: str) -> str:
        """The path of the sandbox's network namespace file as this process can open it.

        The namespace files are bind mounts the supervisor made in its own mount namespace; when
        ours differs (an agent restarted in a fresh private mount namespace, as tests run it) they
        are reached through the supervisor's root, ``/proc/<pid>/root``. The supervisor's pid is
        asked once (it answers on the same socket every runtime call queues on) and again only
        when that process is gone.
        """
        path = self.runtime.get_sandbox(sandbox_id).netns_path
        cached = self._supervisor_root
        if cached is None or not os.path.exists(f"/proc/{cached[0]}/ns/mnt"):
            pid = self.runtime.supervisor_pid()
            if pid is None:
                return path
            try:
                same = os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{pid}/ns/mnt")
            except OSError:
                return path
            cached = self._supervisor_root = (pid, "" if same else f"/proc/{pid}/root")
        return cached[1] + path

    async def _fetch_optional(self, resource: Resource, namespace: str, names: set[str]) -> dict[str, Obj | None]:
        found: dict[str, Obj | None] = {}
        for name in names:
            try:
                found[name] = await self.client.get(resource, name, namespace)
            except ApiError as e:
                if e.code != 404:
                    raise
                found[name] = None
        return found

    async def _prepare_volumes(self, pod: Obj, record: PodRecord) -> dict[str, str]:
        """Set up the pod's volumes (see ``volumes``); VolumeError while one cannot be, e.g. a
        claim not bound yet (the pod stays ContainerCreating and is retried). A disk emptyDir
        over its sizeLimit evicts the pod; pods with such limits are looked at every 10 s."""
        namespace = pod["metadata"]["namespace"]
        cm_names, secret_names = referenced_volume_config(pod)
        config_maps = await self._fetch_optional(CONFIGMAPS, namespace, cm_names)
        secrets = await self._fetch_optional(SECRETS, namespace, secret_names)
        claims = claimed_volumes(pod)
        found_claims = await self._fetch_optional(PVCS, namespace, set(claims.values()))
        claim_sources: dict[str, Obj] = {}
        failures: dict[str, str] = {}
        for volume_name, claim_name in claims.items():
            try:
                bound_to = bound_volume_name(namespace, claim_name, found_claims.get(claim_name))
                found_volume = (await self._fetch_optional(PVS, "", {bound_to}))[bound_to]
                claim = found_claims[claim_name] or {}
                claim_sources[volume_name] = claim_source(namespace, claim, bound_to, found_volume)
            except VolumeError as e:
                failures[volume_name] = str(e)
        if failures:
            raise unmounted_volumes_error(failures)
        volumes = PodVolumes(self.pods_dir / record.uid)
        allocatable = self.allocatable()
        paths = await self.run_blocking(
            lambda: volumes.prepare(pod, pod_ip=record.pod_ip, config_maps=config_maps, secrets=secrets,
                                    allocatable=allocatable, claim_sources=claim_sources)
        )
        if any((v.get("emptyDir") or {}).get("sizeLimit") for v in pod["spec"].get("volumes") or []):
            exceeded = await self.run_blocking(volumes.size_limit_exceeded, pod)
            if exceeded is not None and record.failure is None:
                # The eviction manager's verdict: containers stopped, the pod Failed/Evicted.
                record.failure = ("Evicted", exceeded)
                self._event(pod, "Warning", "Evicted", exceeded)

                async def evict() -> None:
                    await self._stop_all(pod, record)
                    # This sync already reported the pod Failed, and a Failed pod is not synced
                    # again: report its stopped containers here.
                    await self._write_status(self.informer.cache.get(record.key) or pod, record)

                self._start_kill(record.uid, record.key, evict, wake_after=True)
            elif exceeded is None:
                self.queue.add_after(record.key, EMPTY_DIR_CHECK_SECONDS)
        return paths

    # ---- images -----------------------------------------------------------------------------

    async def _ensure_image(self, pod: Obj, record: PodRecord, container: Obj) -> bool:
        """True when the image is in the store (pulling it if the policy allows).

        ``Always`` asks the registry on every container start, as the kubelet's CRI pull does:
        the tag is resolved there and only what the store lacks is downloaded (nothing when the
        digest is unchanged). A registry that cannot be reached fails the start with
        ErrImagePull even when an image of that name is present, as upstream does; airgapped
        nodes use ``IfNotPresent`` (or a tag other than ``latest``) for their imported images."""
        image = container.get("image", "")
        name = container["name"]
        policy = container.get("imagePullPolicy") or "IfNotPresent"
        present = await self.run_blocking(self._has_image, image)
        if present and policy != "Always":
            self._event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine',
                        once=f"pulled-{name}-{image}")
            record.image_failures.pop(name, None)
            return True
        if policy == "Never":
            record.waiting[name] = (
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
            self._event(pod, "Warning", "ErrImageNeverPull", record.waiting[name][1], once=f"never-{name}")
            return False
        now = time.monotonic()
        retry_at = record.image_retry_at.get(name, 0.0)
        if now < retry_at:
            record.waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            self._event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"')
            self._event(pod, "Warning", "Failed", "Error: ImagePullBackOff")
            return False
        self._event(pod, "Normal", "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        names = [ref.get("name", "") for ref in pod["spec"].get("imagePullSecrets") or [] if ref.get("name")]
        found = await self._fetch_optional(SECRETS, pod["metadata"]["namespace"], set(names))
        credentials = credentials_for(image, [found.get(n) for n in names])
        try:
            size = await self.run_blocking(self._pull, image, credentials)
        except (ImageError, OSError) as e:
            failures = record.image_failures.get(name, 0) + 1
            record.image_failures[name] = failures
            record.image_retry_at[name] = time.monotonic() + min(IMAGE_BACKOFF_MAX, 10.0 * 2 ** (failures - 1))
            message = f'Failed to pull image "{image}": {e}'
            record.waiting[name] = ("ErrImagePull", message)
            self._event(pod, "Warning", "Failed", message)
            self._event(pod, "Warning", "Failed", "Error: ErrImagePull")
            return False
        record.image_failures.pop(name, None)
        took = _go_duration(time.monotonic() - started)
        self._event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}" in {took} '
                                             f"({took} including waiting). Image size: {size} bytes.")
        return True

    def _ensure_pod_cgroup(self, pod: Obj) -> None:
        """The pod's group and its QoS class's, with their limits (blocking; idempotent, so a
        group pruned meanwhile, or changed by someone else, is put right before each start)."""
        qos = qos_class(pod)
        self.runtime.ensure_cgroup(KUBEPODS, qos_group_resources("Guaranteed"))
        if QOS_GROUPS[qos] != KUBEPODS:
            on_node = {p["metadata"]["uid"]: p for p in self.informer.cache.list()}
            on_node[pod["metadata"]["uid"]] = pod
            self.runtime.ensure_cgroup(QOS_GROUPS[qos], qos_group_resources(qos, list(on_node.values())))
        self.runtime.ensure_cgroup(pod_cgroup_path(pod), pod_cgroup_resources(pod))

    def _memory_capacity(self) -> int:
        with contextlib.suppress(KeyError, ValueError, ArithmeticError):
            return int(parse_quantity(self.allocatable()["memory"]))
        return 0

    def _root_user_problem(self, image: str, run_as_user: int | None) -> str:
        """Why ``runAsNonRoot`` refuses this container ("" when it may run), as the kubelet says it."""
        if run_as_user is not None:
            return "container's runAsUser breaks non-root policy" if int(run_as_user) == 0 else ""
        try:
            configured = str(self.runtime.images.get(image).exec_config.get("User") or "")
        except ImageError:
            return ""
        name = configured.split(":", 1)[0]
        if name in ("", "0", "root"):
            return "container has runAsNonRoot and image will run as root"
        if not name.isdigit():
            return f"container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
        return ""

    def _has_image(self, image: str) -> bool:
        try:
            self.runtime.images.get(image)
        except ImageError:
            return False
        return True

    def _pull(self, image: str, credentials: Credentials | None) -> int:
        """Pull (blocking); the image's size in bytes, for the Pulled event."""
        from k3py.runtime.registry import pull_image

        return pull_image(self.runtime.images, image, credentials=credentials).size

    # ---- containers -------------------------------------------------------------------------

    async def _start_container(
        self,
        pod: Obj,
        record: PodRecord,
        container: Obj,
        init: bool,
        volume_paths: dict[str, str],
        attempts: list[ContainerStatus],
    ) -> float | None:
        name = container["name"]
        if not await self._ensure_image(pod, record, container):
            reason = record.waiting.get(name, ("",))[0]
            if reason == "ErrImageNeverPull":
                return 30.0
            if reason == "ErrImagePull":
                return 1.0  # then ImagePullBackOff for the rest of the back-off, as users see it
            return max(1.0, record.image_retry_at.get(name, 0.0) - time.monotonic())
        meta = pod["metadata"]
        attempt = int(attempts[-1].labels.get(LABEL_ATTEMPT, "0")) + 1 if attempts else 0
        try:
            cm_names, secret_names = referenced_config(container)
            config_maps = await self._fetch_optional(CONFIGMAPS, meta["namespace"], cm_names)
            secrets = await self._fetch_optional(SECRETS, meta["namespace"], secret_names)
            env_pod = {**pod, "status": {**(pod.get("status") or {}), "podIP": record.pod_ip,
                                         "hostIP": self.node_ip,
                                         "podIPs": [{"ip": record.pod_ip}] if record.pod_ip else [],
                                         "hostIPs": [{"ip": self.node_ip}]}}
            env = container_env(env_pod, container, config_maps=config_maps, secrets=secrets,
                                service_env={**self.service_env,
                                             **pod_service_env(pod, self.services.cache.list())},
                                node_allocatable=self.allocatable())
            command, args = command_and_args(container, env)
            mounts = PodVolumes(self.pods_dir / record.uid).container_mounts(container, volume_paths, pod, attempt, env=env)
            seccomp = seccomp_profile(pod, container, seccomp_default=self.seccomp_default,
                                      profile_root=str(self.seccomp_root))
        except (ContainerConfigError, VolumeError, OSError) as e:
            record.waiting[name] = ("CreateContainerConfigError", str(e))
            self._event(pod, "Warning", "Failed", f"Error: {e}")
            return 10.0
        security = container.get("securityContext") or {}
        pod_security = pod["spec"].get("securityContext") or {}
        user = ""
        run_as_user = security.get("runAsUser", pod_security.get("runAsUser"))
        run_as_group = security.get("runAsGroup", pod_security.get("runAsGroup"))
        if run_as_user is not None:
            user = str(run_as_user) + (f":{run_as_group}" if run_as_group is not None else "")
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            problem = await self.run_blocking(self._root_user_problem, container.get("image", ""), run_as_user)
            if problem:
                record.waiting[name] = ("CreateContainerConfigError", problem)
                self._event(pod, "Warning", "Failed", f"Error: {problem}")
                return 10.0
        try:
            await self.run_blocking(self._ensure_pod_cgroup, pod)
        except ContainerError as e:
            record.waiting[name] = ("CreateContainerError", str(e))
            self._event(pod, "Warning", "Failed", f"Error: {e}")
            return 10.0
        capabilities = security.get("capabilities") or {}
        spec = ContainerSpec(
            name=name,
            image=container.get("image", ""),
            command=command,
            args=args,
            env=env,
            working_dir=container.get("workingDir", ""),
            user=user,
            supplemental_groups=list(pod_security.get("supplementalGroups") or [])
            + ([int(pod_security["fsGroup"])] if pod_security.get("fsGroup") is not None else []),
            capabilities_add=list(capabilities.get("add") or []),
            capabilities_drop=list(capabilities.get("drop") or []),
            privileged=bool(security.get("privileged")),
            no_new_privs=security.get("allowPrivilegeEscalation") is False,
            seccomp=seccomp,
            host_pid=bool(pod["spec"].get("hostPID")),
            readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
            mounts=mounts,
            stdin=bool(container.get("stdin")),
            tty=bool(container.get("tty")),
            resources=runtime_resources(container),
            cgroup_parent=pod_cgroup_path(pod),
            oom_score_adj=oom_score_adj(pod, container, self._memory_capacity()),
            # The sandbox holds what the pod's containers share: its own network, ipc and uts
            # namespaces, or the node's for hostNetwork (net, uts) and hostIPC (ipc).
            sandbox_id=record.sandbox_id,
            labels={
                LABEL_UID: record.uid,
                LABEL_NAMESPACE: meta["namespace"],
                LABEL_NAME: meta["name"],
                LABEL_CONTAINER: name,
                LABEL_ATTEMPT: str(attempt),
                LABEL_INIT: "true" if init else "false",
            },
        )
        try:
            cid = await self.run_blocking(self.runtime.create_container, spec)
        except ContainerError as e:
            record.waiting[name] = ("CreateContainerError", str(e))
            self._event(pod, "Warning", "Failed", f"Error: {e}")
            return 10.0
        self.containers.setdefault(record.uid, {})[cid] = await self.run_blocking(self.runtime.container_status, cid)
        self._event(pod, "Normal", "Created", f"Created container {name}")
        try:
            await self.run_blocking(self.runtime.start_container, cid)
        except ContainerError as e:
            record.waiting.pop(name, None)
            self._event(pod, "Warning", "Failed", f"Error: {e}")
        else:
            record.waiting.pop(name, None)
            self._event(pod, "Normal", "Started", f"Started container {name}")
            post_start = (container.get("lifecycle") or {}).get("postStart")
            if post_start:
                error = await self.run_hook(record, container, cid, post_start, POST_START_TIMEOUT)
                if error is not None:
                    # As the kubelet: a failed postStart hook kills the container the way any
                    # container is stopped (preStop hook, SIGTERM, SIGKILL after the pod's grace
                    # period); then restartPolicy decides.
                    self._event(pod, "Warning", "FailedPostStartHook", error)
                    grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
                    await self._stop_container(cid, lambda: grace, self._pre_stop_runner(pod, record, container, cid))
        self.containers[record.uid][cid] = await self.run_blocking(self.runtime.container_status, cid)
        # Keep the previous attempt (for logs --previous and lastState) and drop older ones.
        for old in attempts[:-1]:
            with contextlib.suppress(ContainerError):
                await self.run_blocking(self.runtime.remove_container, old.id, True)
            self.containers[record.uid].pop(old.id, None)
        if not init:
            self.probes.container_started(pod, container, cid)
        if self.containers[record.uid][cid].state == "exited":
            # It exited before we looked: the PLEG will see no change, so act on it now.
            return 0.0
        return None

    async def run_hook(
        self, record: PodRecord, container: Obj, cid: str, handler: Obj, timeout: float
    ) -> str | None:
        """Run a lifecycle hook (exec, httpGet, sleep); None on success, else what failed."""
        if handler.get("sleep"):
            await asyncio.sleep(float((handler["sleep"] or {}).get("seconds", 0)))
            return None
        probe = {key: handler[key] for key in ("exec", "httpGet", "tcpSocket") if handler.get(key)}
        if not probe:
            return "lifecycle hook has no handler"
        probe["timeoutSeconds"] = max(1, int(timeout))
        fake_pod = {"metadata": {"uid": record.uid}}
        ok, message = await self.probes.check(fake_pod, container, cid, probe)
        if ok:
            return None
        kind = "Exec" if "exec" in probe else "HTTP"
        return f"{kind} lifecycle hook for Container \"{container.get('name')}\" failed: {message}"

    # ---- termination ------------------------------------------------------------------------

    def _start_kill(
        self, uid: str, key: Any, work: Callable[[], Awaitable[None]], wake_after: bool = False
    ) -> None:
        """Run a pod's termination as its own task: a long grace period must not hold a worker
        (other pods keep starting), and the pod's later syncs see it in ``_kills`` and wait."""
        if uid in self._kills:
            return

        async def run() -> None:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                message = e.message if isinstance(e, ApiError) else str(e)
                log.warning("terminating pod %s failed: %s (retrying)", uid, message)
                self.queue.add_after(key, 1.0)
            else:
                if wake_after:
                    # Syncs that came while it ran returned early: look again once it is over
                    # (a stopped pod's status; its address and mounts to give back).
                    self._kills.pop(uid, None)
                    self.queue.add(key)
            finally:
                self._kills.pop(uid, None)

        self._kills[uid] = asyncio.create_task(run(), name=f"kubelet-kill-{uid}")

    def _grace_of(self, key: str, uid: str, default: float) -> float:
        """The pod's current grace period (a second delete may shorten it while it stops)."""
        pod = self.informer.cache.get(key)
        if pod is None or pod["metadata"].get("uid") != uid:
            return min(default, ORPHAN_GRACE_SECONDS)
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        return default if grace is None else min(default, float(grace))

    async def terminate_pod(self, pod: Obj, record: PodRecord) -> None:
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        uid, key = record.uid, record.key
        await self.kill_pod(uid, lambda: self._grace_of(key, uid, float(grace)), pod)
        try:
            await self.client.delete(
                PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                preconditions={"uid": record.uid},
            )
        except ApiError as e:
            if e.code not in (404, 409):
                raise
        self.records.pop(record.uid, None)

    async def kill_pod(self, uid: str, grace: Callable[[], float], pod: Obj | None) -> None:
        """Stop every container of the pod (SIGTERM, SIGKILL after ``grace``), then remove it all."""
        self.probes.pod_removed(uid)
        statuses = await self.run_blocking(self._refresh, uid)
        running = [s for s in statuses.values() if s.state == "running"]
        if pod is not None and running:
            for status in running:
                self._event(pod, "Normal", "Killing", f"Stopping container {status.name}")
        specs = {
            c.get("name"): c for c in ((pod or {}).get("spec") or {}).get("containers") or []
        }
        record = self.records.get(uid)

        def pre_stop(status: ContainerStatus) -> Callable[[float], Awaitable[None]] | None:
            container = specs.get(status.labels.get(LABEL_CONTAINER))
            if container is None or record is None or pod is None:
                return None
            return self._pre_stop_runner(pod, record, container, status.id)

        await asyncio.gather(*(self._stop_container(s.id, grace, pre_stop(s)) for s in running))
        for status in statuses.values():
            with contextlib.suppress(ContainerError):
                await self.run_blocking(self.runtime.remove_container, status.id, True)
        self.containers.pop(uid, None)
        self.backoff.forget_pod(uid)
        for group in pod_cgroup_paths_of_uid(uid):
            with contextlib.suppress(ContainerError, OSError):
                await self.run_blocking(self.runtime.remove_empty_cgroup, group)
        sandbox_id = self.sandboxes.pop(uid, None)
        if self.pod_network is not None:
            with contextlib.suppress(NetworkError, OSError):
                await self.run_blocking(self.pod_network.teardown, uid)
        if sandbox_id is not None:
            with contextlib.suppress(ContainerError):
                await self.run_blocking(self.runtime.remove_sandbox, sandbox_id)
        await self.run_blocking(PodVolumes(self.pods_dir / uid).remove)

    def _pre_stop_runner(
        self, pod: Obj, record: PodRecord, container: Obj, cid: str
    ) -> Callable[[float], Awaitable[None]] | None:
        """The container's preStop hook as ``_stop_container`` runs it (None without one)."""
        handler = (container.get("lifecycle") or {}).get("preStop")
        if not handler:
            return None

        async def run(timeout: float) -> None:
            error = await self.run_hook(record, container, cid, handler, timeout)
            if error is not None:
                self._event(pod, "Warning", "FailedPreStopHook", error)

        return run

    async def _stop_container(
        self, cid: str, grace: Callable[[], float], pre_stop: Callable[[float], Awaitable[None]] | None = None
    ) -> None:
        """The preStop hook (within the grace period), SIGTERM, then SIGKILL once the grace period
        is over; polls without holding a thread."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if pre_stop is not None and grace() > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pre_stop(grace()), grace())
            if grace() > 0:
                await self.run_blocking(self.runtime.kill_container, cid, signal.SIGTERM)
                interval = 0.02
                while loop.time() - started < grace():
                    status = await self.run_blocking(self.runtime.container_status, cid)
                    if status.state != "running":
                        return
                    await asyncio.sleep(interval)
                    interval = min(0.5, interval * 2)
            await self.run_blocking(self.runtime.kill_container, cid, signal.SIGKILL)
            for _ in range(300):
                if (await self.run_blocking(self.runtime.container_status, cid)).state != "running":
                    return
                await asyncio.sleep(0.1)
            log.warning("container %s still running 30 s after SIGKILL", cid)
        except ContainerNotFound:
            return
        except ContainerError as e:
            log.warning("stopping container %s: %s", cid, e)

    async def cleanup_orphan(self, uid: str) -> None:
        """Remove the runtime leftovers of a pod the API no longer has (or has under a new uid)."""
        if any(p["metadata"]["uid"] == uid for p in self.informer.cache.list()):
            return
        record = self.records.pop(uid, None)
        if uid in self.containers or uid in self.sandboxes or record is not None:
            self._start_kill(uid, ("orphan", uid), lambda: self.kill_pod(uid, lambda: ORPHAN_GRACE_SECONDS, None))

    async def _release_if_finished(self, pod: Obj, record: PodRecord) -> bool:
        """After a status write: when it said Succeeded/Failed and no container runs any more,
        release what the pod holds (``_release_finished``); True when it did."""
        if (record.last_status or {}).get("phase") not in ("Succeeded", "Failed"):
            return False
        if any(s.state == "running" for s in self.containers.get(record.uid, {}).values()):
            return False
        await self._release_finished(pod, record)
        return True

    async def _release_finished(self, pod: Obj, record: PodRecord) -> None:
        """A finished pod keeps its exited containers (logs) but gives back its address and, as
        upstream's volume manager does once all its containers have terminated, its mounts."""
        if not record.network_torn_down and self.pod_network is not None:
            with contextlib.suppress(NetworkError, OSError):
                await self.run_blocking(self.pod_network.teardown, record.uid)
            record.network_torn_down = True
        if not record.volumes_released:
            try:
                await self.run_blocking(PodVolumes(self.pods_dir / record.uid).unmount)
            except VolumeError as e:
                log.warning("pod %s: %s (retried when the pod is removed)", record.key, e)
            record.volumes_released = True

    # ---- status -----------------------------------------------------------------------------

    def _views(self, pod: Obj, record: PodRecord) -> tuple[list[ContainerView], list[ContainerView]]:
        statuses = self.containers.get(record.uid, {})
        spec = pod.get("spec") or {}
        result = []
        for init in (True, False):
            views = []
            for container in spec.get("initContainers" if init else "containers") or []:
                name = container["name"]
                attempts = self._attempts(statuses, name, init)
                current = self._with_message(record, container, attempts[-1]) if attempts else None
                previous = self._with_message(record, container, attempts[-2]) if len(attempts) > 1 else None
                reason, message = record.waiting.get(name, ("", ""))
                if current is not None and current.state == "running":
                    reason, message = "", ""
                running = current is not None and current.state == "running"
                started = running and self.probes.started(record.uid, name)
                ready = started and self.probes.ready(record.uid, name)
                if init:
                    ready = current is not None and current.state == "exited" and current.exit_code == 0
                views.append(ContainerView(
                    name=name, image=container.get("image", ""), current=self._with_image_ref(current),
                    previous=self._with_image_ref(previous),
                    restart_count=int(current.labels.get(LABEL_ATTEMPT, "0")) if current else 0,
                    ready=ready, started=started, waiting_reason=reason, waiting_message=message,
                ))
            result.append(views)
        return result[0], result[1]

    def _with_message(self, record: PodRecord, container: Obj, status: ContainerStatus) -> ContainerStatus:
        """The status with its termination message (the file the container wrote, or with
        FallbackToLogsOnError the end of its log after a failure); read once per container."""
        if status.state != "exited":
            return status
        message = record.messages.get(status.id)
        if message is None:
            message = ""
            attempt = int(status.labels.get(LABEL_ATTEMPT, "0"))
            path = PodVolumes(self.pods_dir / record.uid).termination_log(container["name"], attempt)
            with contextlib.suppress(OSError):
                with open(path, "rb") as handle:
                    message = handle.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
            if (not message and status.exit_code != 0
                    and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"):
                message = _log_tail(status.log_path)
            record.messages[status.id] = message
        if not message:
            return status
        return dataclasses.replace(status, message=message)

    def _resolve_image_refs(self, wanted: list[tuple[str, str]]) -> None:
        """Fill the imageID cache for (requested image, image id) pairs (blocking: reads the store)."""
        try:
            images = self.runtime.images.list()
        except (ImageError, OSError):
            images = []
        for requested, image_id in wanted:
            self._image_refs[(requested, image_id)] = image_ref(image_id, requested, images)

    def _with_image_ref(self, status: ContainerStatus | None) -> ContainerStatus | None:
        if status is None:
            return None
        ref = self._image_refs.get((status.image, status.image_id))
        return dataclasses.replace(status, image_id=ref) if ref else status

    async def _write_status(self, pod: Obj, record: PodRecord) -> None:
        wanted = sorted({(s.image, s.image_id) for s in self.containers.get(record.uid, {}).values()
                         if s.image_id and (s.image, s.image_id) not in self._image_refs})
        if wanted:
            await self.run_blocking(self._resolve_image_refs, wanted)
        init_views, views = self._views(pod, record)
        status = pod_status(
            pod, init_views=init_views, views=views, pod_ip=record.pod_ip, host_ip=self.node_ip,
            start_time=record.start_time, sandbox_ready=bool(record.sandbox_id), init_failed=record.init_failed,
            failure=record.failure,
        )
        status["qosClass"] = qos_class(pod)
        if status == record.last_status:
            return
        old = pod.get("status") or {}
        patch = {"status": {**{k: None for k in old if k not in status and k not in ("qosClass",)}, **status}}
        meta = pod["metadata"]
        try:
            written = await self.client.patch(PODS, meta["name"], patch, meta["namespace"], subresource="status")
        except ApiError as e:
            if e.code == 404:
                return
            raise
        record.last_status = status
        record.server_status = written.get("status")

    async def refresh_status(self, uid: str) -> None:
        """Probe results changed: wake the pod so its status is rewritten."""
        self.enqueue_uid(uid)

    # ---- events -----------------------------------------------------------------------------

    def _event(self, pod: Obj, kind: str, reason: str, message: str, once: str = "") -> None:
        record = self.records.get(pod["metadata"]["uid"])
        if once and record is not None:
            if once in record.events_sent:
                return
            record.events_sent.add(once)
        self.events.record(pod, kind, reason, message)

    # ---- lookups for the streaming backend --------------------------------------------------

    def find_pod(self, namespace: str, name: str) -> Obj | None:
        return self.informer.cache.get(f"{namespace}/{name}")

    def container_attempts(self, uid: str, name: str) -> list[ContainerStatus]:
        statuses = self._refresh(uid)
        return self._attempts(statuses, name, False) or self._attempts(statuses, name, True)


def _meta_without_versions(obj: Obj) -> Obj:
    meta = dict(obj.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    return meta


def image_ref(image_id: str, requested: str, images: list[Image]) -> str:
    """A container's imageID as containerd's CRI reports it: a repo digest
    (``docker.io/library/busybox@sha256:<manifest digest>``) of the image it runs — the
    requested repository's when the image has that name, else its first name's — or the
    image ID (config digest) when the store knows no name for it."""
    image = next((i for i in images if i.id == image_id), None)
    if image is None:
        return image_id
    repositories: list[str] = []
    for name in image.names:
        with contextlib.suppress(ReferenceError_):
            repositories.append(parse_reference(name).name)
    if not repositories:
        return image_id
    try:
        wanted = parse_reference(requested).name
    except ReferenceError_:
        wanted = ""
    repository = wanted if wanted in repositories else sorted(repositories)[0]
    return f"{repository}@{image.manifest_digest}"


def _go_duration(seconds: float) -> str:
    """A duration as Go prints it in the kubelet's events ("532.1ms", "1.204s")."""
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.3f}s"


def _log_tail(log_path: str, lines: int = 80, limit: int = 2048) -> str:
    """The last lines of a CRI log as plain text (FallbackToLogsOnError)."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            raw = handle.read()
    except OSError:
        return ""
    text = []
    for line in raw.splitlines()[-lines:]:
        parts = line.split(b" ", 3)
        if len(parts) == 4:
            text.append(parts[3] + (b"\n" if parts[2] == b"F" else b""))
    return b"".join(text)[-limit:].decode(errors="replace")


def pods_dir_for(data_dir: Path) -> Path:
    path = data_dir / "pods"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
