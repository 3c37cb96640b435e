"""The server's settings, as the CLI collects them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServerConfig:
    data_dir: Path = Path("/var/lib/k3py/server")
    datastore_endpoint: str = ""
    sqlite_synchronous: str = "FULL"
    bind_address: str = "0.0.0.0"
    https_listen_port: int = 6443
    tls_san: list[str] = field(default_factory=list)
    write_kubeconfig: Path = Path("/etc/k3py/k3py.yaml")
    write_kubeconfig_mode: int = 0o600
    token: str = ""
    disable_agent: bool = False
    simulated_nodes: int = 0
    log_level: str = "INFO"
    cluster_dns: str = "10.43.0.10"  # the kube-dns Service's address (--cluster-dns)
    # The API server under hostile clients (see k3py/server/apiserver/{connections,inflight}.py).
    max_requests_inflight: int = 800
    max_mutating_requests_inflight: int = 400
    max_connections: int = 0  # 0: derived from the open-file limit
    request_header_timeout: float = 32.0
    idle_connection_timeout: float = 90.0
    request_timeout: float = 60.0  # for a request body to arrive
