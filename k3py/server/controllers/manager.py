"""Start-up and shutdown of the control plane: controllers, scheduler and simulated nodes.

:func:`run_control_plane` is what ``k3py/server/main.py`` calls once the API server serves
requests, with a :class:`~k3py.client.interface.Client` over whichever transport the server
provides (HTTPS with the admin kubeconfig today, in-process later). It:

1. makes sure ``kube-system`` exists (leader-election Leases live there);
2. builds every component, which registers the informers it needs on one shared factory;
3. starts the informers and waits (up to 30 s, then warns) until each has listed once; every
   controller also waits for its own caches, so none acts on an empty cache and, say,
   creates pods that already exist;
4. runs the controllers under the ``kube-controller-manager`` Lease and the scheduler under
   the ``kube-scheduler`` Lease (several servers: one active of each), and the simulated
   nodes unconditionally (they are kubelets, not controllers);
5. on ``stop``, cancels everything in reverse order, waits for it to finish and releases
   the Leases so a restarted server leads again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable

from k3py.api.errors import ApiError
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory
from k3py.client.interface import NAMESPACES, Client
from k3py.client.leaderelection import LeaderElector
from k3py.server.controllers.cronjob import CronJobController
from k3py.server.controllers.daemonset import DaemonSetController
from k3py.server.controllers.deployment import DeploymentController
from k3py.server.controllers.disruption import DisruptionController
from k3py.server.controllers.endpoints import EndpointsController, EndpointSliceController
from k3py.server.controllers.garbagecollector import GarbageCollector
from k3py.server.controllers.job import JobController
from k3py.server.controllers.localpath import LocalPathProvisioner
from k3py.server.controllers.namespace import NamespaceController
from k3py.server.controllers.nodelifecycle import NodeLifecycleController
from k3py.server.controllers.podgc import PodGarbageCollector
from k3py.server.controllers.replicaset import ReplicaSetController, ReplicationControllerManager
from k3py.server.controllers.serviceaccount import ServiceAccountController
from k3py.server.controllers.servicelb import ServiceLBController
from k3py.server.controllers.statefulset import StatefulSetController
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import SimulatedNodes

log = logging.getLogger("k3py.controllers.manager")

SYNC_WARNING_SECONDS = 30

CONTROLLERS: tuple[Callable[[Client, InformerFactory], Controller], ...] = (
    ReplicaSetController,
    ReplicationControllerManager,
    DeploymentController,
    JobController,
    CronJobController,
    DaemonSetController,
    StatefulSetController,
    GarbageCollector,
    NamespaceController,
    NodeLifecycleController,
    PodGarbageCollector,
    DisruptionController,
    ServiceAccountController,
    EndpointsController,
    EndpointSliceController,
    ServiceLBController,
    LocalPathProvisioner,
)


async def _ensure_namespace(client: Client, name: str) -> None:
    try:
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as e:
        if e.code != 409:
            raise


async def _run_all(components: list[Controller]) -> None:
    tasks = [asyncio.create_task(c.run(), name=f"run-{c.name}") for c in components]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in reversed(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("control plane component %s failed", task.get_name(), exc_info=task.exception())


async def run_control_plane(
    client: Client,
    *,
    simulated_nodes: int,
    stop: asyncio.Event,
    leader_election: bool = True,
    root_ca: bytes | None = None,
) -> None:
    """Run the control plane until ``stop`` is set; see the module docstring.

    ``root_ca`` is the cluster CA certificate (PEM) published in every namespace's
    ``kube-root-ca.crt`` ConfigMap; by default it is taken from the client's HTTPS settings.
    """
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    await _ensure_namespace(client, "kube-system")
    informers = InformerFactory(client)
    if root_ca is None:
        root_ca = getattr(getattr(client.transport, "config", None), "ca_data", None)
    controllers: list[Controller] = []
    for make in CONTROLLERS:
        if make is ServiceAccountController:
            controllers.append(ServiceAccountController(client, informers, root_ca=root_ca))
        else:
            controllers.append(make(client, informers))
    scheduler = Scheduler(client, informers)
    nodes = SimulatedNodes(client, informers, simulated_nodes) if simulated_nodes > 0 else None

    informers.start()
    runners: list[asyncio.Task[None]] = []
    electors: list[LeaderElector] = []
    try:
        synced = asyncio.create_task(informers.wait_synced())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED, timeout=SYNC_WARNING_SECONDS)
        synced.cancel()
        stopped.cancel()
        if stop.is_set():
            return
        unsynced = informers.unsynced()
        if unsynced:
            # Each controller still waits for its own caches; the others go ahead.
            log.warning("caches not synced after %ds: %s", SYNC_WARNING_SECONDS, ", ".join(unsynced))
        else:
            log.info("control plane caches synced; starting %d controllers", len(controllers))

        def elected(name: str, lead: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
            if not leader_election:
                return asyncio.create_task(lead(), name=name)
            elector = LeaderElector(client, name, identity)
            electors.append(elector)
            return asyncio.create_task(elector.run(lead), name=f"elect-{name}")

        if nodes is not None:
            runners.append(asyncio.create_task(nodes.run(), name="simulated-nodes"))
        runners.append(elected("kube-controller-manager", lambda: _run_all(controllers)))
        runners.append(elected("kube-scheduler", scheduler.run))
        for task in runners:
            task.add_done_callback(_report_failure)
        await stop.wait()
    finally:
        for task in reversed(runners):
            task.cancel()
        for task in reversed(runners):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for elector in electors:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(elector.release(), 2)
        await informers.stop()
        log.info("control plane stopped")
