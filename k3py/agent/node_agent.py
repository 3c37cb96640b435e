"""Everything one node runs, started by ``run_node_agent`` (in the server process or by ``k3py agent``).

Order: the container runtime's supervisor; the Node (registered or adopted, which also settles
its pod CIDR); the pod network (bridge, routes, NAT) for that CIDR; the pod manager (adopting
the containers a previous run left running); the kubelet streaming server on :10250; then the
heartbeat (Lease every 10 s, Node status). On ``stop`` the agent stops managing — containers
keep running in the supervisor, so restarting k3py does not restart pods.

Layout of ``data_dir``: ``runtime/`` (images, containers, sandboxes), ``network/`` (IPAM and
pod records), ``pods/<uid>/`` (volumes and /etc files), ``tls/`` (the streaming server's
self-signed serving certificate, as a kubelet makes one), ``images/`` (the airgap folder, k3s'
``<data-dir>/agent/images``: every image archive dropped there is imported into the runtime's
store when the agent starts, before anything is scheduled; archives imported before — by
content digest — are skipped, so restarts stay cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from k3py.agent.kubelet.node import NodeIdentity, NodeStatusReporter, detect_node_ip
from k3py.agent.kubelet.pods import PodManager, pods_dir_for
from k3py.agent.kubelet.podspec import kubernetes_service_env
from k3py.api.errors import ApiError
from k3py.client.interface import SERVICES, Client
from k3py.runtime.containers import ContainerError, ContainerRuntime

log = logging.getLogger("k3py.agent")
AIRGAP_IMAGES_DIR = "images"  # under the agent's data dir, as k3s' <data-dir>/agent/images
T = TypeVar("T")

# Client certificate names allowed to use the streaming server: the API server's kubelet client
# identities (k3s and kubeadm spell it differently) and the cluster admin.
DEFAULT_STREAMING_CLIENTS = (
    "kube-apiserver",
    "kube-apiserver-kubelet-client",
    "system:kube-apiserver",
    "system:admin",
)


@dataclass
class NodeAgentConfig:
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    data_dir: Path = Path("/var/lib/k3py/agent")
    node_ip: str = ""  # empty: the address of the default route's interface (127.0.0.1 without one)
    is_control_plane: bool = False
    streaming_port: int = 10250  # 0: no streaming server
    streaming_bind_address: str = "0.0.0.0"
    client_ca_file: Path | None = None  # the cluster CA; clients of the streaming server chain to it
    serving_cert_file: Path | None = None  # empty: a self-signed one under data_dir/tls
    serving_key_file: Path | None = None
    streaming_clients: tuple[str, ...] = DEFAULT_STREAMING_CLIENTS
    cgroup_parent: str = ""  # empty: the runtime data dir's own (runtime.containers.default_cgroup_parent)
    isolate_mounts: bool = False  # supervisor in a private mount namespace (tests)
    pod_network: bool = True
    workers: int = 16
    node_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeAgent:
    """The running parts, for tests and benchmarks that drive an agent in-process."""

    runtime: ContainerRuntime
    reporter: NodeStatusReporter
    pods: PodManager | None = None
    streaming_port: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def ensure_serving_certificate(tls_dir: Path, names: Iterable[str]) -> tuple[Path, Path]:
    """A self-signed serving certificate for the streaming server (kept across restarts)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = tls_dir / "serving-kubelet.crt", tls_dir / "serving-kubelet.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    tls_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys(names))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{names[0]}@k3py-kubelet")])
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


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
    data_dir.mkdir(parents=True, exist_ok=True)
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

            node_network = NodeNetwork(NodeNetworkConfig(pod_cidr=reporter.pod_cidr, data_dir=data_dir / "network"))
            await asyncio.to_thread(node_network.start)
            pod_network = PodNetwork(node_network)
            network_ok["up"] = True
        manager = PodManager(
            client, runtime, pod_network, node_name=config.node_name, node_ip=node_ip,
            pods_dir=pods_dir_for(data_dir), allocatable=lambda: reporter.allocatable,
            workers=config.workers,
        )
        manager.service_env = await _service_env(client)
        agent.pods = manager
        await _retry("pod manager start", stop, manager.start)
        if config.streaming_port and config.client_ca_file is not None:
            from k3py.agent.kubelet.streaming import KubeletStreamingBackend
            from k3py.agent.streaming.server import StreamingServer

            cert, key = config.serving_cert_file, config.serving_key_file
            if cert is None or key is None:
                cert, key = await asyncio.to_thread(
                    ensure_serving_certificate, data_dir / "tls", [config.node_name, node_ip, "localhost", "127.0.0.1"]
                )
            streaming = StreamingServer(
                KubeletStreamingBackend(manager), cert_file=cert, key_file=key,
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
        if started is not None and not started.done():
            started.cancel()


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
