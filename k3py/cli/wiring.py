"""Composition of ``k3py server`` with this host's node agent, in one process.

k3py.server may not import k3py.agent (import-linter), so the server offers a hook
(``run_server(..., node_agent=...)``) that it calls with an in-process client once the API is
up, and this module — part of the CLI, which may import both — fills it with
``run_node_agent``. The node is a control-plane node named after the host; its data dir is
``<server data dir>/../agent`` (``/var/lib/k3py/agent`` for the default server dir), so
``k3py image import --data-dir <that>/runtime`` feeds its image store. Its streaming server gets
a serving certificate signed by the cluster CA and accepts the API server's client certificate.
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


def issue_streaming_certificate(ca_cert: Path, ca_key: Path, tls_dir: Path, names: list[str]) -> tuple[Path, Path]:
    """A serving certificate for the kubelet streaming server, signed by the cluster CA.

    Issued at every start (a few milliseconds), so a changed node IP or CA is always reflected.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from k3py.server.bootstrap.certs import issue_leaf

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key} is not an ECDSA key")
    cert, leaf_key = issue_leaf(ca, key, f"{names[0]}@k3py-kubelet", sans=names, server=True)
    tls_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = tls_dir / "serving-kubelet-cluster.crt", tls_dir / "serving-kubelet-cluster.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def node_agent_config(
    info: ServerInfo, node_name: str = "", node_ip: str = "", cgroup_parent: str = ""
) -> NodeAgentConfig:
    from k3py.agent.kubelet.node import detect_node_ip

    data_dir = agent_data_dir(info.config)
    name = (node_name or socket.gethostname()).lower()
    ip = node_ip or detect_node_ip()
    cert, key = issue_streaming_certificate(
        info.ca_cert, info.ca_key, data_dir / "tls", list(dict.fromkeys([name, ip, "localhost", "127.0.0.1"]))
    )
    return NodeAgentConfig(
        node_name=name,
        data_dir=data_dir,
        node_ip=ip,
        is_control_plane=True,
        client_ca_file=info.ca_cert,
        serving_cert_file=cert,
        serving_key_file=key,
        cgroup_parent=cgroup_parent,
    )


async def run_in_process_agent(
    client: Client, info: ServerInfo, stop: asyncio.Event, *, cgroup_parent: str = ""
) -> None:
    """The ``node_agent`` hook of ``run_server``: this host as a control-plane node."""
    config = await asyncio.to_thread(node_agent_config, info, cgroup_parent=cgroup_parent)
    await run_node_agent(client, config, stop)
