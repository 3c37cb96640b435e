"""The ``k3py`` command: a typer application whose subcommands wire the layers together.

Imports of the heavy layers happen inside each command, so ``k3py --help`` stays fast and a
missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from k3py import KUBERNETES_VERSION, __version__
from k3py.cli.image import image_app

app = typer.Typer(
    name="k3py",
    help="k3py: a single-command Kubernetes distribution in Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print k3py's version and the Kubernetes version it serves."""
    typer.echo(f"k3py version {__version__} (Kubernetes {KUBERNETES_VERSION})")


@app.command()
def server(
    data_dir: Path = typer.Option(
        Path("/var/lib/k3py/server"), "--data-dir", "-d", help="Folder for the store, certificates and state."
    ),
    datastore_endpoint: str = typer.Option(
        "",
        "--datastore-endpoint",
        envvar="K3PY_DATASTORE_ENDPOINT",
        help="Empty for embedded SQLite under the data dir, or postgres://user:pass@host/db "
        "(prefer the environment variable: a password in argv is visible in ps).",
    ),
    sqlite_synchronous: str = typer.Option(
        "FULL", "--sqlite-synchronous", help="SQLite synchronous mode: FULL (default) or NORMAL."
    ),
    bind_address: str = typer.Option("0.0.0.0", "--bind-address", help="Address the API server listens on."),
    https_listen_port: int = typer.Option(6443, "--https-listen-port", help="HTTPS port of the API server."),
    tls_san: list[str] = typer.Option([], "--tls-san", help="Extra name or IP for the serving certificate."),
    write_kubeconfig: Path = typer.Option(
        Path("/etc/k3py/k3py.yaml"), "--write-kubeconfig", help="Where to write the admin kubeconfig."
    ),
    write_kubeconfig_mode: str = typer.Option(
        "0600", "--write-kubeconfig-mode", help="File mode of the admin kubeconfig."
    ),
    token: str = typer.Option(
        "", "--token", envvar="K3PY_TOKEN",
        help="Shared secret agents use to join (generated when empty); prefer $K3PY_TOKEN or --token-file.",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", envvar="K3PY_TOKEN_FILE", help="File holding the token (instead of --token)."
    ),
    disable_agent: bool = typer.Option(False, "--disable-agent", help="Run no kubelet in this process."),
    simulated_nodes: int = typer.Option(0, "--simulated-nodes", help="Register N simulated nodes."),
    seccomp_default: bool = typer.Option(
        False,
        "--seccomp-default",
        help="Run pods and containers without a seccompProfile under RuntimeDefault (kubelet's SeccompDefault).",
    ),
    cgroup_parent: str = typer.Option(
        "", "--cgroup-parent", help="cgroup of the in-process agent's containers (default: k3py-<hash of its data dir>)."
    ),
    registries_config: Path | None = typer.Option(
        None,
        "--registries-config",
        help="Registry mirrors and credentials (default: $K3PY_REGISTRIES_CONFIG or /etc/k3py/registries.yaml).",
    ),
    cluster_dns: str = typer.Option(
        "10.43.0.10", "--cluster-dns",
        help="Cluster DNS address: the kube-dns Service's, where each node answers, named in pods' resolv.conf.",
    ),
    cluster_domain: str = typer.Option("cluster.local", "--cluster-domain", help="Cluster domain."),
    resolv_conf: str = typer.Option(
        "", "--resolv-conf",
        help="resolv.conf for dnsPolicy Default pods and the cluster DNS's upstreams (default: the host's).",
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    max_requests_inflight: int = typer.Option(
        800, "--max-requests-inflight", help="Read-only API requests served at once; more get 429 (0: no limit)."
    ),
    max_mutating_requests_inflight: int = typer.Option(
        400, "--max-mutating-requests-inflight", help="Mutating API requests served at once; more get 429 (0: no limit)."
    ),
    max_connections: int = typer.Option(0, "--max-connections", hidden=True),
    request_header_timeout: float = typer.Option(32.0, "--request-header-timeout", hidden=True),
    idle_connection_timeout: float = typer.Option(90.0, "--idle-connection-timeout", hidden=True),
    request_timeout: float = typer.Option(60.0, "--request-timeout", hidden=True),
) -> None:
    """Run the API server, scheduler, controllers and (unless --disable-agent) this host's
    kubelet in one process."""
    import functools

    from k3py.server.config import ServerConfig
    from k3py.server.main import run_server_forever

    token = _token(token, token_file)
    cluster_dns = _cluster_dns(cluster_dns, in_service_cidr=True)
    cluster_domain = _cluster_domain(cluster_domain)
    resolv_conf = _resolv_conf(resolv_conf)
    if not disable_agent:
        _use_registries_config(registries_config)
        _check_image_budget_env()
    config = ServerConfig(
        data_dir=data_dir,
        datastore_endpoint=datastore_endpoint,
        sqlite_synchronous=sqlite_synchronous.upper(),
        bind_address=bind_address,
        https_listen_port=https_listen_port,
        tls_san=list(tls_san),
        write_kubeconfig=write_kubeconfig,
        write_kubeconfig_mode=int(write_kubeconfig_mode, 8),
        token=token,
        disable_agent=disable_agent,
        simulated_nodes=simulated_nodes,
        log_level=log_level.upper(),
        cluster_dns=cluster_dns,
        max_requests_inflight=max_requests_inflight,
        max_mutating_requests_inflight=max_mutating_requests_inflight,
        max_connections=max_connections,
        request_header_timeout=request_header_timeout,
        idle_connection_timeout=idle_connection_timeout,
        request_timeout=request_timeout,
    )
    hook = None
    if not disable_agent:
        import functools

        from k3py.cli.wiring import run_in_process_agent

        hook = functools.partial(
            run_in_process_agent,
            seccomp_default=seccomp_default,
            cgroup_parent=_cgroup_parent(cgroup_parent),
            cluster_dns=cluster_dns,
            cluster_domain=cluster_domain,
            resolv_conf=resolv_conf,
        )
    raise typer.Exit(run_server_forever(config, hook))


@app.command()
def agent(
    server_url: str = typer.Option(
        ..., "--server", envvar="K3PY_URL", help="URL of a k3py server, https://host:6443."
    ),
    token: str = typer.Option(
        "", "--token", envvar="K3PY_TOKEN", help="The server's join token; prefer $K3PY_TOKEN or --token-file."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", envvar="K3PY_TOKEN_FILE", help="File holding the join token (instead of --token)."
    ),
    data_dir: Path = typer.Option(
        Path("/var/lib/k3py/agent"), "--data-dir", "-d", help="Folder for images, containers and pod state."
    ),
    node_name: str = typer.Option("", "--node-name", help="Name of the Node (default: the hostname)."),
    node_ip: str = typer.Option("", "--node-ip", help="InternalIP of the Node (default: the default route's)."),
    ca_file: Path | None = typer.Option(
        None, "--ca-file", help="The cluster CA (default: fetched from the server on first start and pinned)."
    ),
    streaming_port: int = typer.Option(10250, "--kubelet-port", help="Port of the kubelet streaming server."),
    seccomp_default: bool = typer.Option(
        False,
        "--seccomp-default",
        help="Run pods and containers without a seccompProfile under RuntimeDefault (kubelet's SeccompDefault).",
    ),
    cgroup_parent: str = typer.Option(
        "", "--cgroup-parent", help="cgroup of this node's containers (default: k3py-<hash of the data dir>)."
    ),
    registries_config: Path | None = typer.Option(
        None,
        "--registries-config",
        help="Registry mirrors and credentials (default: $K3PY_REGISTRIES_CONFIG or /etc/k3py/registries.yaml).",
    ),
    cluster_dns: str = typer.Option(
        "10.43.0.10", "--cluster-dns",
        help="Cluster DNS address: where this node answers, named in pods' resolv.conf (the kube-dns Service's).",
    ),
    cluster_domain: str = typer.Option("cluster.local", "--cluster-domain", help="Cluster domain."),
    resolv_conf: str = typer.Option(
        "", "--resolv-conf",
        help="resolv.conf for dnsPolicy Default pods and the cluster DNS's upstreams (default: the host's).",
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Join this host to a cluster as a node: kubelet, pod network and streaming server."""
    import asyncio
    import logging
    import signal
    import socket

    from k3py.agent.node_agent import NodeAgentConfig, run_node_agent
    from k3py.client.https import client_from_files
    from k3py.util.loopwatch import watching_the_loop

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    token = _token(token, token_file)
    if not token:
        typer.echo("error: the join token is missing: set $K3PY_TOKEN or pass --token-file (or --token)", err=True)
        raise typer.Exit(2)
    _use_registries_config(registries_config)
    _check_image_budget_env()
    cgroup_parent = _cgroup_parent(cgroup_parent)
    cluster_dns = _cluster_dns(cluster_dns, in_service_cidr=False)
    cluster_domain = _cluster_domain(cluster_domain)
    resolv_conf = _resolv_conf(resolv_conf)
    if not server_url.startswith("https://"):
        typer.echo(f"error: --server must be an https:// URL, not {server_url!r}", err=True)
        raise typer.Exit(2)
    data_dir = data_dir.absolute()
    if ca_file is not None and not ca_file.is_file():
        typer.echo(f"error: --ca-file {ca_file} is not a readable file", err=True)
        raise typer.Exit(2)
    try:
        ca = ca_file if ca_file is not None else _pinned_cluster_ca(server_url, token, data_dir / "tls")
    except (OSError, ValueError) as e:
        typer.echo(f"error: cannot get the cluster CA from {server_url}: {e}", err=True)
        raise typer.Exit(1) from None
    config = NodeAgentConfig(
        node_name=(node_name or socket.gethostname()).lower(),
        data_dir=data_dir,
        node_ip=node_ip,
        streaming_port=streaming_port,
        client_ca_file=ca,
        seccomp_default=seccomp_default,
        cgroup_parent=cgroup_parent,
        cluster_dns=cluster_dns,
        cluster_domain=cluster_domain,
        resolv_conf=resolv_conf,
    )

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        client = client_from_files(server_url, ca=ca, token=token, field_manager="k3py-kubelet")
        try:
            with watching_the_loop():
                await run_node_agent(client, config, stop)
        finally:
            await client.close()

    from k3py.agent.kubelet.servingcert import ServingCertificateError
    from k3py.agent.network import NetworkError
    from k3py.runtime.containers import ContainerError

    try:
        asyncio.run(_main())
    except (ContainerError, NetworkError, OSError, ServingCertificateError) as e:
        # The node cannot do its job (runtime, network, a port in use): say so in one line.
        typer.echo(f"error: the agent stopped: {e}", err=True)
        raise typer.Exit(1) from None


def _token(given: str, token_file: Path | None) -> str:
    """The join token: ``--token`` / ``$K3PY_TOKEN`` as given, else the first line of
    ``--token-file`` / ``$K3PY_TOKEN_FILE`` (so the secret need not appear in argv), else ""."""
    given = given.strip()
    if given or token_file is None:
        return given
    try:
        text = token_file.read_text()
    except OSError as e:
        typer.echo(f"error: cannot read --token-file {token_file}: {e.strerror or e}", err=True)
        raise typer.Exit(2) from None
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        typer.echo(f"error: --token-file {token_file} is empty", err=True)
        raise typer.Exit(2)
    return lines[0].strip()


def _check_image_budget_env() -> None:
    """Fail in one line on a malformed $K3PY_IMAGE_MAX_LAYER_SIZE / $K3PY_IMAGE_MAX_SIZE (the
    agent's image store reads them for imports and pulls)."""
    from k3py.runtime.images import ImportBudget

    try:
        ImportBudget.from_env()
    except ValueError as exc:
        typer.echo(f"error: $K3PY_IMAGE_MAX_LAYER_SIZE / $K3PY_IMAGE_MAX_SIZE: {exc}", err=True)
        raise typer.Exit(2) from None


def _cgroup_parent(value: str) -> str:
    """A --cgroup-parent value: a relative cgroup path without ``.`` or ``..`` parts."""
    parts = value.strip("/").split("/")
    if value and (any(part in ("", ".", "..") for part in parts)):
        typer.echo(f"error: --cgroup-parent {value!r} must be a cgroup path such as k3py-node1", err=True)
        raise typer.Exit(2)
    return "/".join(parts) if value else ""


def _cluster_dns(value: str, in_service_cidr: bool) -> str:
    """A --cluster-dns value: one IP address (on a server, inside the service CIDR, where the
    kube-dns Service takes it)."""
    import ipaddress

    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        typer.echo(f"error: --cluster-dns {value!r} is not an IP address", err=True)
        raise typer.Exit(2) from None
    if in_service_cidr and address not in ipaddress.ip_network("10.43.0.0/16"):
        typer.echo(f"error: --cluster-dns {address} is not inside the service CIDR 10.43.0.0/16", err=True)
        raise typer.Exit(2)
    return str(address)


def _cluster_domain(value: str) -> str:
    """A --cluster-domain value: a lowercase DNS name (RFC 1123), no trailing dot."""
    from k3py.api.validation import dns1123_subdomain_errors

    domain = value.strip().removesuffix(".")
    errors = dns1123_subdomain_errors(domain)
    if errors:
        typer.echo(f"error: --cluster-domain {value!r}: {errors[0]}", err=True)
        raise typer.Exit(2)
    return domain


def _resolv_conf(value: str) -> str:
    """A --resolv-conf value: empty (the host's) or a readable file."""
    if value and not Path(value).is_file():
        typer.echo(f"error: --resolv-conf {value} is not a readable file", err=True)
        raise typer.Exit(2)
    return str(Path(value).absolute()) if value else ""


def _pinned_cluster_ca(server_url: str, token: str, tls_dir: Path) -> Path:
    """The cluster CA: pinned under ``tls_dir`` after the first fetch (trust on first use).

    The join token is a bare secret without a CA hash (k3s' short token), so the first fetch
    cannot verify the server; it reads the ``kube-root-ca.crt`` ConfigMap with the token and
    every later connection verifies the server against that CA.
    """
    import http.client
    import json
    import ssl
    import time
    import urllib.parse

    pinned = tls_dir / "server-ca.crt"
    if pinned.exists():
        return pinned
    url = urllib.parse.urlsplit(server_url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPSConnection(url.hostname or "", url.port or 443, context=context, timeout=10)
        try:
            conn.request(
                "GET",
                "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            response = conn.getresponse()
            body = response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        finally:
            conn.close()
        if response.status == 401:
            raise ValueError("the server refused the token")
        if response.status == 200:
            ca = (json.loads(body).get("data") or {}).get("ca.crt", "")
            if "BEGIN CERTIFICATE" in ca:
                break
        if time.monotonic() > deadline:
            raise ValueError(f"no kube-root-ca.crt ConfigMap (HTTP {response.status})")
        time.sleep(0.5)
    from k3py.util.private import private_dir, write_private

    private_dir(tls_dir.parent)
    private_dir(tls_dir)
    write_private(pinned, ca.encode())
    return pinned


def _use_registries_config(path: Path | None) -> None:
    """Load the node's registries config at start, so a malformed file fails here, as in k3s."""
    from k3py.runtime.registries import (
        RegistriesConfigError,
        load_registries,
        set_default_registries,
    )

    try:
        set_default_registries(load_registries(path))
    except RegistriesConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


app.add_typer(image_app, name="image")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
