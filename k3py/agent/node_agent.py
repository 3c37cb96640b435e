"""Everything one node runs, started by ``run_node_agent`` (in the server process or by ``k3py agent``).

Order: the container runtime's supervisor; the Node (registered or adopted, which also settles
its pod CIDR); the pod network (bridge, routes, NAT) for that CIDR, the node's cluster DNS
server on the cluster DNS address (``dns/``; pods' resolv.conf names it) and the service proxy
(``proxy/``: Services and EndpointSlices into the node's nftables table, a task of its own); the
pod manager (adopting
the containers a previous run left running); the kubelet streaming server on :10250; then the
heartbeat (Lease every 10 s, Node status). On ``stop`` the agent stops managing — containers
keep running in the supervisor, so restarting k3py does not restart pods.

Layout of ``data_dir``: ``runtime/`` (images, containers, sandboxes), ``network/`` (IPAM and
pod records), ``pods/<uid>/`` (volumes and /etc files), ``seccomp/`` (Localhost seccomp
profiles, as upstream's ``/var/lib/kubelet/seccomp``), ``tls/`` (the streaming server's
serving certificate, signed by the cluster CA for this node: ``kubelet/servingcert.py``),
``images/`` (the airgap folder, k3s'
``<data-dir>/agent/images``: every image archive dropped there is imported into the runtime's
store when the agent starts, before anything is scheduled; archives imported before — by
content digest — are skipped, so restarts stay cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from k3py.agent.dns.node import ClusterDNS, ClusterDNSConfig
from k3py.agent.kubelet.node import NodeIdentity, NodeStatusReporter, detect_node_ip
from k3py.agent.kubelet.pods import PodManager, pods_dir_for
from k3py.agent.kubelet.podspec import kubernetes_service_env
from k3py.agent.kubelet.volumes import PodDNS, configure_pod_dns
from k3py.agent.network.config import NetworkError, NodeNetworkConfig
from k3py.agent.proxy import ProxyConfig, ServiceProxy
from k3py.api.errors import ApiError
from k3py.client.interface import SERVICES, Client
from k3py.runtime.containers import ContainerError, ContainerRuntime
from k3py.util.kubelettls import KUBELET_CLIENT_CN
from k3py.util.private import private_dir

log = logging.getLogger("k3py.agent")
AIRGAP_IMAGES_DIR = "images"  # under the agent's data dir, as k3s' <data-dir>/agent/images
T = TypeVar("T")

# Client certificate names allowed to use the streaming server: only the API server's kubelet
# client identity. Not the cluster admin: a kubelet that accepted the admin's certificate would
# let whoever captures the API server's connection to it replay the strongest credential there is.
DEFAULT_STREAMING_CLIENTS = (KUBELET_CLIENT_CN,)


@dataclass
class NodeAgentConfig:
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    data_dir: Path = Path("/var/lib/k3py/agent")
    node_ip: str = ""  # empty: the address of the default route's interface (127.0.0.1 without one)
    is_control_plane: bool = False
    streaming_port: int = 10250  # 0: no streaming server
    streaming_bind_address: str = "0.0.0.0"
    client_ca_file: Path | None = None  # the cluster CA; clients of the streaming server chain to it
    # Empty: requested from the server's signer, kept under data_dir/tls (kubelet/servingcert.py).
    serving_cert_file: Path | None = None
    serving_key_file: Path | None = None
    streaming_clients: tuple[str, ...] = DEFAULT_STREAMING_CLIENTS
    # Other TCP ports k3py listens on on this node (port → what listens: the API server's on a
    # server); with the streaming port, no pod may take them as a hostPort.
    reserved_ports: dict[int, str] = field(default_factory=dict)
    cgroup_parent: str = ""  # empty: the runtime data dir's own (runtime.containers.default_cgroup_parent)
    isolate_mounts: bool = False  # supervisor in a private mount namespace (tests)
    pod_network: bool = True
    workers: int = 16
    node_labels: dict[str, str] = field(default_factory=dict)
    seccomp_default: bool = False  # kubelet's --seccomp-default: RuntimeDefault for pods without a profile
    service_proxy: bool = True  # the node's service proxy (k3py/agent/proxy; needs the pod network)
    # Cluster DNS (--cluster-dns, --cluster-domain, --resolv-conf): what pods' resolv.conf
    # names, and where this node's DNS server listens (k3py/agent/dns; only with the pod
    # network, whose node it serves). An empty cluster_dns runs no DNS server.
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    resolv_conf: str = ""  # empty: /etc/resolv.conf, or systemd-resolved's when that one is loopback-only


@dataclass
class NodeAgent:
    """The running parts, for tests and benchmarks that drive an agent in-process."""

    runtime: ContainerRuntime
    reporter: NodeStatusReporter
    pods: PodManager | None = None
    dns: ClusterDNS | None = None
    proxy: ServiceProxy | None = None
    streaming_port: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def import_airgap_images(runtime: ContainerRuntime, directory: Path) -> int:
    """Import the airgap folder's new archives into the runtime's store, logging each; the count."""
    from k3py.runtime.archive import import_new_archives

    imported, refused = import_new_archives(runtime.images, directory)
    for archive, images in imported:
        names = ", ".join(name for image in images for name in image.names) or "(untagged)"
        log.info("airgap: imported %s from %s", names, archive)
    for archive, why in refused:
        log.error("airgap: cannot import %s: %s", archive, why)
    return len(imported)


async def _retry(what: str, stop: asyncio.Event, fn: Callable[[], Awaitable[T]]) -> T:
    """Call ``fn`` until it succeeds or ``stop`` is set (the API server may still be starting)."""
    delay = 0.2
    while True:
        try:
            return await fn()
        except (ApiError, OSError) as e:
            message = e.message if isinstance(e, ApiError) else str(e)
            log.warning("%s failed: %s; retrying in %.1fs", what, message, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            raise asyncio.CancelledError
        delay = min(delay * 2, 5.0)


async def _service_env(client: Client) -> dict[str, str]:
    try:
        service = await client.get(SERVICES, "kubernetes", "default")
    except ApiError:
        return kubernetes_service_env("10.43.0.1", 443)
    spec = service.get("spec") or {}
    port = next((p.get("port", 443) for p in spec.get("ports") or [] if p.get("name") == "https"), 443)
    return kubernetes_service_env(spec.get("clusterIP") or "10.43.0.1", int(port))


async def run_node_agent(
    client: Client, config: NodeAgentConfig, stop: asyncio.Event, *, started: asyncio.Future | None = None
) -> None:
    """Run this node's agent until ``stop`` is set; see the module docstring."""
    data_dir = config.data_dir.absolute()
    # Keys, pod state and volumes live here: root's eyes only (k3py/util/private.py).
    private_dir(data_dir)
    node_ip = config.node_ip or detect_node_ip()
    runtime = ContainerRuntime(data_dir / "runtime", cgroup_parent=config.cgroup_parent or None,
                               isolate_mounts=config.isolate_mounts)
    await asyncio.to_thread(runtime.ensure_supervisor)
    await asyncio.to_thread(import_airgap_images, runtime, data_dir / AIRGAP_IMAGES_DIR)
    network_ok = {"up": not config.pod_network}

    def health() -> str | None:
        if runtime.supervisor_pid() is None:
            return "container runtime is down"
        if not network_ok["up"]:
            return "network plugin is not ready: pod network not configured"
        return None

    identity = NodeIdentity(
        name=config.node_name, node_ip=node_ip, data_dir=data_dir,
        is_control_plane=config.is_control_plane, streaming_port=config.streaming_port or 10250,
        extra_labels=dict(config.node_labels),
    )
    reporter = NodeStatusReporter(client, identity, health, runtime.images.list)
    agent = NodeAgent(runtime=runtime, reporter=reporter)
    tasks: list[asyncio.Task[None]] = []
    streaming = None
    try:
        await _retry("node registration", stop, reporter.register)
        pod_network = None
        if config.pod_network:
            from k3py.agent.network import NodeNetwork, NodeNetworkConfig, PodNetwork

            reserved = dict(config.reserved_ports)
            if config.streaming_port:
                reserved[config.streaming_port] = "the kubelet"
            node_network = NodeNetwork(NodeNetworkConfig(
                pod_cidr=reporter.pod_cidr, data_dir=data_dir / "network", reserved_ports=tuple(sorted(reserved.items())),
            ))
            await asyncio.to_thread(node_network.start)
            pod_network = PodNetwork(node_network)
            network_ok["up"] = True
            if config.service_proxy:
                agent.proxy = _service_proxy(client, config, node_network.config, reporter.pod_cidr, reserved)
                tasks.append(asyncio.create_task(agent.proxy.run(), name="service-proxy"))
            if config.cluster_dns:
                agent.dns = await _start_cluster_dns(client, config)
        configure_pod_dns(pods_dir_for(data_dir), PodDNS(
            cluster_dns=(config.cluster_dns,) if config.cluster_dns else (),
            cluster_domain=config.cluster_domain, resolv_conf=config.resolv_conf,
        ))
        manager = PodManager(
            client, runtime, pod_network, node_name=config.node_name, node_ip=node_ip,
            pods_dir=pods_dir_for(data_dir), allocatable=lambda: reporter.allocatable,
            workers=config.workers, seccomp_default=config.seccomp_default,
            seccomp_root=seccomp_dir_for(data_dir),
        )
        manager.service_env = await _service_env(client)
        agent.pods = manager
        await _retry("pod manager start", stop, manager.start)
        if config.streaming_port and config.client_ca_file is not None:
            from k3py.agent.kubelet.streaming import KubeletStreamingBackend
            from k3py.agent.streaming.server import StreamingServer

            cert, key = config.serving_cert_file, config.serving_key_file
            if cert is None or key is None:
                from k3py.agent.kubelet.servingcert import ensure_serving_certificate

                ca_file = config.client_ca_file
                cert, key = await _retry("serving certificate request", stop, lambda: ensure_serving_certificate(
                    client, config.node_name, [node_ip], data_dir / "tls", ca_file, stop,
                ))
            streaming = StreamingServer(
                KubeletStreamingBackend(manager, manager.pod_runtime), cert_file=cert, key_file=key,
                client_ca_file=config.client_ca_file, allowed_common_names=config.streaming_clients,
            )
            agent.streaming_port = await streaming.start(config.streaming_bind_address, config.streaming_port)
        await reporter.mark_ready_changed()
        tasks.append(asyncio.create_task(reporter.run(stop), name="kubelet-heartbeat"))
        agent.ready.set()
        if started is not None and not started.done():
            started.set_result(agent)
        log.info("node %s ready (InternalIP %s, pod CIDR %s)", config.node_name, node_ip, reporter.pod_cidr)
        await stop.wait()
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if streaming is not None:
            await streaming.stop()
        if agent.pods is not None:
            await agent.pods.stop()
        if agent.dns is not None:
            await agent.dns.stop()
        if started is not None and not started.done():
            started.cancel()


async def _start_cluster_dns(client: Client, config: NodeAgentConfig) -> ClusterDNS | None:
    """This node's DNS server on the cluster DNS address; None (logged) when it cannot start —
    the node still runs pods, whose lookups then fail at once rather than the node failing."""
    dns = ClusterDNS(client, ClusterDNSConfig(
        address=config.cluster_dns, domain=config.cluster_domain, resolv_conf=config.resolv_conf,
    ))
    try:
        await dns.start()
    except (OSError, ValueError, NetworkError) as e:  # a port in use, a bad address, ip failing
        log.error("cluster DNS cannot start on %s:53: %s", config.cluster_dns, e)
        return None
    return dns


def _service_proxy(
    client: Client, config: NodeAgentConfig, network: NodeNetworkConfig, pod_cidr: str, reserved: dict[int, str]
) -> ServiceProxy:
    """The node's service proxy over its pod network: the same CIDRs, a route for the service
    CIDR just under the network's unreachable one, the node's own TCP ports off limits."""
    return ServiceProxy(client, ProxyConfig(
        node_name=config.node_name, data_dir=config.data_dir.absolute(), pod_cidr=pod_cidr,
        cluster_cidr=str(network.cluster_network), service_cidr=str(network.service_network),
        bridge=network.bridge, route_metric=network.unreachable_metric - 1,
        reserved_tcp_ports=tuple(sorted(reserved)),
    ))  # fmt: skip


def seccomp_dir_for(data_dir: Path) -> Path:
    """Where Localhost seccomp profiles live (``localhostProfile`` is relative to it), as
    upstream's ``/var/lib/kubelet/seccomp``; created (0700) so admins find it."""
    path = data_dir / "seccomp"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def shutdown_runtime(data_dir: Path, cgroup_parent: str = "") -> None:
    """Stop every container and the supervisor of an agent's runtime (tests, uninstall)."""
    runtime = ContainerRuntime(data_dir / "runtime", cgroup_parent=cgroup_parent or None)
    for status in runtime.list_containers():
        with contextlib.suppress(ContainerError):
            runtime.remove_container(status.id, force=True)
    for sandbox in runtime.list_sandboxes():
        with contextlib.suppress(ContainerError):
            runtime.remove_sandbox(sandbox.id)
    runtime.shutdown_supervisor(force=True)
    runtime.remove_cgroup_parent()
