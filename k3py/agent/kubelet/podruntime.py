"""The container runtime as the kubelet uses it: blocking calls on a thread pool, and an index
of which runtime containers and sandbox belong to which pod, kept fresh by a PLEG-style relist.

The index is rebuilt from the runtime alone (``adopt``): containers carry the pod's uid,
container name and attempt as labels, sandbox names end with the pod uid
(``containerspec``), so after a restart of k3py the kubelet knows every pod's containers and
restart counts again. ``pleg`` relists the runtime every second and wakes the pods whose
containers changed state (a container that exited, one a previous run left behind).

Blocking runtime calls (the supervisor's socket, the image store, namespace files) run on the
kubelet's own thread pool through ``run_blocking``, never on the event loop. The pod cgroups
(``ensure_pod_cgroup``) are the runtime groups of the kubelet's QoS layout (``podspec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from k3py.agent.kubelet.containerspec import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER,
    LABEL_INIT,
    LABEL_UID,
    sandbox_spec,
    sandbox_uid,
)
from k3py.agent.kubelet.podspec import (
    KUBEPODS,
    QOS_GROUPS,
    pod_cgroup_path,
    pod_cgroup_paths_of_uid,
    pod_cgroup_resources,
    qos_class,
    qos_group_resources,
)
from k3py.runtime.containers import ContainerError, ContainerNotFound, ContainerRuntime
from k3py.runtime.spec import ContainerStatus

log = logging.getLogger("k3py.kubelet")

T = TypeVar("T")
Obj = dict[str, Any]
Scan = tuple[dict[str, dict[str, ContainerStatus]], dict[str, str]]

PLEG_PERIOD = 1.0


def attempt_of(status: ContainerStatus) -> int:
    """The restart count a runtime container was started with."""
    return int(status.labels.get(LABEL_ATTEMPT, "0"))


def is_init(status: ContainerStatus) -> bool:
    return status.labels.get(LABEL_INIT) == "true"


def attempts_in(statuses: dict[str, ContainerStatus], name: str, init: bool) -> list[ContainerStatus]:
    """The runtime's containers for one spec container, oldest attempt first."""
    found = [s for s in statuses.values() if s.labels.get(LABEL_CONTAINER) == name and is_init(s) == init]
    return sorted(found, key=attempt_of)


class PodRuntime:
    """See the module docstring."""

    def __init__(self, runtime: ContainerRuntime, threads: int = 48) -> None:
        self.runtime = runtime
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubelet")
        # uid -> {container id -> status}: the runtime's containers of each pod
        self.containers: dict[str, dict[str, ContainerStatus]] = {}
        self.sandboxes: dict[str, str] = {}  # uid -> sandbox id
        self._supervisor_root: tuple[int, str] | None = None  # (pid, prefix) for sandbox_netns

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- the index --------------------------------------------------------------------------

    def _scan(self) -> Scan:
        containers: dict[str, dict[str, ContainerStatus]] = {}
        for status in self.runtime.list_containers():
            uid = status.labels.get(LABEL_UID)
            if uid:
                containers.setdefault(uid, {})[status.id] = status
        sandboxes = {sandbox_uid(s.name): s.id for s in self.runtime.list_sandboxes()}
        return containers, sandboxes

    async def adopt(self) -> None:
        """Index what the runtime already runs (a previous k3py run's pods keep running)."""
        self.containers, self.sandboxes = await self.run_blocking(self._scan)

    def uids(self) -> set[str]:
        """Every pod the runtime holds something of."""
        return set(self.containers) | set(self.sandboxes)

    async def relist(self, tracked: Collection[str]) -> set[str]:
        """Read the runtime again; the uids of pods whose containers changed state, and of pods
        not ``tracked`` that have a sandbox we did not know of."""
        containers, sandboxes = await self.run_blocking(self._scan)
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
            if uid not in self.sandboxes and uid not in tracked:
                self.sandboxes[uid] = sandbox
                changed.add(uid)
        return changed

    async def pleg(self, wake: Callable[[str], None], tracked: Collection[str]) -> None:
        """Relist every ``PLEG_PERIOD`` seconds and ``wake`` each pod whose containers changed."""
        while True:
            await asyncio.sleep(PLEG_PERIOD)
            try:
                changed = await self.relist(tracked)
            except OSError as e:
                log.warning("runtime relist failed: %s", e)
                continue
            for uid in changed:
                wake(uid)

    def refresh(self, uid: str) -> dict[str, ContainerStatus]:
        """Re-read the statuses of the pod's known containers (blocking)."""
        fresh: dict[str, ContainerStatus] = {}
        for cid in list(self.containers.get(uid, {})):
            with contextlib.suppress(ContainerNotFound, FileNotFoundError):
                fresh[cid] = self.runtime.container_status(cid)
        self.containers[uid] = fresh
        return fresh

    def statuses(self, uid: str) -> dict[str, ContainerStatus]:
        """The pod's containers as last read (no runtime call)."""
        return self.containers.get(uid, {})

    def track(self, uid: str, status: ContainerStatus) -> None:
        self.containers.setdefault(uid, {})[status.id] = status

    def untrack(self, uid: str, cid: str) -> None:
        self.containers.get(uid, {}).pop(cid, None)

    def container_attempts(self, uid: str, name: str) -> list[ContainerStatus]:
        """The attempts of the pod's container ``name`` (an app container's, else an init
        container's), oldest first, freshly read (blocking)."""
        statuses = self.refresh(uid)
        return attempts_in(statuses, name, False) or attempts_in(statuses, name, True)

    # ---- sandboxes --------------------------------------------------------------------------

    def sandbox_of(self, uid: str) -> str | None:
        return self.sandboxes.get(uid)

    async def ensure_sandbox(self, pod: Obj) -> str:
        """The pod's sandbox id, creating the sandbox (``containerspec.sandbox_spec``) if it has none."""
        uid = pod["metadata"]["uid"]
        sandbox_id = self.sandboxes.get(uid)
        if sandbox_id is None:
            sandbox = await self.run_blocking(self.runtime.create_sandbox, sandbox_spec(pod))
            sandbox_id = self.sandboxes[uid] = sandbox.id
        return sandbox_id

    def sandbox_netns(self, sandbox_id: str) -> str:
        """The path of the sandbox's network namespace file as this process can open it (blocking).

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

    # ---- cgroups ----------------------------------------------------------------------------

    def ensure_pod_cgroup(self, pod: Obj, node_pods: Sequence[Obj]) -> None:
        """The pod's group and its QoS class's, with their limits (blocking; idempotent, so a
        group pruned meanwhile, or changed by someone else, is put right before each start).
        ``node_pods`` are the pods on this node (the Burstable group weighs their requests)."""
        qos = qos_class(pod)
        self.runtime.ensure_cgroup(KUBEPODS, qos_group_resources("Guaranteed"))
        if QOS_GROUPS[qos] != KUBEPODS:
            self.runtime.ensure_cgroup(QOS_GROUPS[qos], qos_group_resources(qos, node_pods))
        self.runtime.ensure_cgroup(pod_cgroup_path(pod), pod_cgroup_resources(pod))

    def remove_pod_cgroups(self, uid: str) -> None:
        """Remove the pod's group wherever its QoS class put it (blocking; empty groups only)."""
        for group in pod_cgroup_paths_of_uid(uid):
            with contextlib.suppress(ContainerError, OSError):
                self.runtime.remove_empty_cgroup(group)

    def drop_containers(self, uid: str) -> None:
        """Forget the pod's containers (they have been removed)."""
        self.containers.pop(uid, None)

    def drop_sandbox(self, uid: str) -> str | None:
        """Forget the pod's sandbox (about to be removed); its id, if it had one."""
        return self.sandboxes.pop(uid, None)
