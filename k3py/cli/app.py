"""The ``k3py`` command: a typer application whose subcommands wire the layers together.

Imports of the heavy layers happen inside each command, so ``k3py --help`` stays fast and a
missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from k3py import KUBERNETES_VERSION, __version__

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
        help="Empty for embedded SQLite under the data dir, or postgres://user:pass@host/db.",
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
    token: str = typer.Option("", "--token", help="Shared secret agents use to join (generated when empty)."),
    disable_agent: bool = typer.Option(False, "--disable-agent", help="Run no kubelet in this process."),
    simulated_nodes: int = typer.Option(0, "--simulated-nodes", help="Register N simulated nodes."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run the API server, scheduler and controllers (and, later, a kubelet) in one process."""
    from k3py.server.config import ServerConfig
    from k3py.server.main import run_server_forever

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
    )
    raise typer.Exit(run_server_forever(config))


@app.command()
def agent(
    server_url: str = typer.Option(..., "--server", help="URL of a k3py server, https://host:6443."),
    token: str = typer.Option(..., "--token", help="The server's join token."),
) -> None:
    """Join this host to a cluster as a node (not built yet)."""
    typer.echo("error: 'k3py agent' is not implemented yet", err=True)
    raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
