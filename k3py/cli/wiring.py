"""Composition of ``k3py server`` with this host's node agent, in one process.

k3py.server may not import k3py.agent (import-linter), so the server offers a hook
(``run_server(..., node_agent=...)``) that it calls with an in-process client once the API is
up, and this module — part of the CLI, which may import both — fills it with
``run_node_agent``. The node is a control-plane node named after the host; its data dir is
``<server data dir>/../agent`` (``/var/lib/k3py/agent`` for the default server dir), so
``k3py image import --data-dir <that>/runtime`` feeds its image store. Its streaming server gets
a serving certificate signed by the cluster CA for the node's name and address (a joining
``k3py agent`` asks the server's signer for the same), and accepts only the API server's
kubelet client certificate (``k3py/util/kubelettls.py``).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from k3py.agent.node_agent import NodeAgentConfig, run_node_agent
from k3py.client.interface import Client
from k3py.server.config import ServerConfig
from k3py.server.main import ServerInfo


def agent_data_dir(config: ServerConfig) -> Path:
    """Where the in-process agent keeps images, containers and pod state."""
    return config.data_dir.absolute().parent / "agent"


def issue_streaming_certificate(
    ca_cert: Path, ca_key: Path, tls_dir: Path, node_name: str, addresses: list[str]
) -> tuple[Path, Path]:
    """The kubelet's serving certificate, signed by the cluster CA for this node: its name and
    addresses as SANs, nothing else (no ``localhost``: the API server checks the node's name and
    the address it dials, and a certificate naming every loopback would fit any node).

    Issued at every start (a few milliseconds), so a changed node IP or CA is always reflected.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    from k3py.server.bootstrap.certs import cert_pem, key_pem
    from k3py.server.bootstrap.kubeletserving import load_ca, sign_kubelet_serving
    from k3py.util.private import private_dir, write_private

    ca, key = load_ca(ca_cert, ca_key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_kubelet_serving(ca, key, leaf_key.public_key(), node_name, addresses)
    private_dir(tls_dir.parent)
    private_dir(tls_dir)
    cert_path, key_path = tls_dir / "serving-kubelet-cluster.crt", tls_dir / "serving-kubelet-cluster.key"
    write_private(key_path, key_pem(leaf_key))
    write_private(cert_path, cert_pem(cert))
    return cert_path, key_path


def node_agent_config(
    info: ServerInfo,
    node_name: str = "",
    node_ip: str = "",
    *,
    seccomp_default: bool = False,
    cgroup_parent: str = "",
    cluster_dns: str = "10.43.0.10",
    cluster_domain: str = "cluster.local",
    resolv_conf: str = "",
) -> NodeAgentConfig:
    from k3py.agent.kubelet.node import detect_node_ip

    data_dir = agent_data_dir(info.config)
    name = (node_name or socket.gethostname()).lower()
    ip = node_ip or detect_node_ip()
    cert, key = issue_streaming_certificate(info.ca_cert, info.ca_key, data_dir / "tls", name, [ip])
    return NodeAgentConfig(
        node_name=name,
        data_dir=data_dir,
        node_ip=ip,
        is_control_plane=True,
        client_ca_file=info.ca_cert,
        serving_cert_file=cert,
        serving_key_file=key,
        seccomp_default=seccomp_default,
        reserved_ports={info.config.https_listen_port: "the API server"},
        cgroup_parent=cgroup_parent,
        cluster_dns=cluster_dns,
        cluster_domain=cluster_domain,
        resolv_conf=resolv_conf,
    )


async def run_in_process_agent(
    client: Client,
    info: ServerInfo,
    stop: asyncio.Event,
    *,
    seccomp_default: bool = False,
    cgroup_parent: str = "",
    cluster_dns: str = "10.43.0.10",
    cluster_domain: str = "cluster.local",
    resolv_conf: str = "",
) -> None:
    """The ``node_agent`` hook of ``run_server``: this host as a control-plane node
    (``seccomp_default``: ``k3py server --seccomp-default``; ``cgroup_parent``: its
    ``--cgroup-parent``; the cluster DNS settings: ``--cluster-dns``, ``--cluster-domain``,
    ``--resolv-conf``)."""
    config = await asyncio.to_thread(
        node_agent_config, info, seccomp_default=seccomp_default, cgroup_parent=cgroup_parent,
        cluster_dns=cluster_dns, cluster_domain=cluster_domain, resolv_conf=resolv_conf,
    )
    await run_node_agent(client, config, stop)
