"""Start-up and shutdown of the server process: the store, then the API server.

Order: certificates and token (first start creates them), the store, the watch cache (loads
every object), the registry, the HTTPS listener, the system objects, then the admin
kubeconfig is written — so a client that sees the kubeconfig can already talk to the API.
Then the control plane, the kubelet serving-certificate signer (``bootstrap/kubeletserving``:
joining agents' certificates) and, when the caller passes a ``node_agent`` hook, this host's
node agent run as tasks over the in-process transport. The hook exists because k3py.server may
not import k3py.agent: the CLI composes the two (``k3py/cli/wiring.py``). Components stop in
reverse on SIGINT/SIGTERM.

The data dir is 0700 and the files in it 0600 (``k3py/util/private.py``); the API server dials
kubelets with its own kubelet-client certificate and trusts only kubelet certificates the
cluster CA signed for the node (``apiserver/streaming.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from k3py.api.resources import builtin_resources
from k3py.client.interface import Client
from k3py.server.apiserver.connections import ConnectionLimits, raise_open_file_limit
from k3py.server.apiserver.crds import CRDRegistrar
from k3py.server.apiserver.inflight import InflightLimits
from k3py.server.apiserver.inprocess import InProcessTransport
from k3py.server.apiserver.registry import Registry
from k3py.server.apiserver.server import ApiServer, server_ssl_context
from k3py.server.apiserver.streaming import KubeletClientTLS
from k3py.server.apiserver.system import ensure_system_objects
from k3py.server.apiserver.watchcache import WatchCache
from k3py.server.bootstrap.certs import TLSFiles, ensure_certificates
from k3py.server.bootstrap.kubeconfig import write_kubeconfig
from k3py.server.bootstrap.kubeletserving import KubeletServingSigner
from k3py.server.bootstrap.tokens import load_or_create_token
from k3py.server.config import ServerConfig
from k3py.server.controllers.manager import run_control_plane
from k3py.store import StoreError
from k3py.store.factory import open_store
from k3py.util.logsummary import LogSummary
from k3py.util.loopwatch import watching_the_loop
from k3py.util.private import private_dir

log = logging.getLogger("k3py.server")


@dataclass(frozen=True)
class ServerInfo:
    """What an in-process node agent needs to know about the server it runs beside."""

    config: ServerConfig
    advertise_ip: str
    ca_cert: Path  # the cluster CA (PEM): the agent's streaming clients chain to it
    ca_key: Path  # to sign the agent's streaming serving certificate


# Runs this host's node agent until the event is set (k3py/cli/wiring.py provides it).
NodeAgentHook = Callable[[Client, ServerInfo, asyncio.Event], Awaitable[None]]


def _tune_gc() -> None:
    """Keep the cyclic GC off the request path.

    Everything loaded at start-up (modules, schemas, the watch cache) lives for the whole
    process: freezing it keeps full collections from rescanning it, and a larger young
    generation makes collections rarer under request load (requests allocate many short-lived
    dicts that reference counting frees anyway).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _make_database_private(store: object) -> None:
    """An embedded SQLite database and its -wal/-shm files: 0600 (SQLite creates them 0644,
    and later -wal/-shm files copy the main file's mode)."""
    path = getattr(store, "path", None)
    if not isinstance(path, Path):
        return  # PostgreSQL: nothing on this host
    for file in path.parent.glob(path.name + "*"):
        with contextlib.suppress(OSError):
            if file.is_file() and file.stat().st_mode & 0o077:
                file.chmod(0o600)


def _advertise_ip(bind_address: str) -> str:
    """The address clients (and the `kubernetes` Endpoints) use to reach this server.

    A specific bind address is used as is; for a wildcard bind, the host's first non-loopback
    IPv4 address (what pods can reach), else loopback.
    """
    try:
        addr = ipaddress.ip_address(bind_address)
    except ValueError:
        return "127.0.0.1"
    if not addr.is_unspecified:
        return str(addr)
    try:
        import psutil

        stats = psutil.net_if_stats()
        for name, addrs in psutil.net_if_addrs().items():
            if name in stats and not stats[name].isup:
                continue
            for a in addrs:
                if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                    return str(a.address)
    except Exception:  # psutil trouble must not stop the server: fall back to loopback
        log.debug("could not list host addresses", exc_info=True)
    return "127.0.0.1"


async def run_server(
    config: ServerConfig, stop: asyncio.Event | None = None, node_agent: NodeAgentHook | None = None
) -> None:
    stop = stop or asyncio.Event()
    started = time.monotonic()
    # Keys, token and database live here: root's eyes only (k3py/util/private.py).
    private_dir(config.data_dir)
    tls = ensure_certificates(config.data_dir, config.tls_san)
    token = load_or_create_token(config.data_dir, config.token)
    try:
        store = open_store(
            config.datastore_endpoint, config.data_dir / "db", synchronous=config.sqlite_synchronous
        )
    except ValueError:
        # The endpoint may carry a password: name only its scheme.
        scheme = urlsplit(config.datastore_endpoint).scheme or "(none)"
        raise StoreError(
            f"unsupported datastore endpoint scheme {scheme!r}: use sqlite://<path> or postgres://..."
        ) from None
    await store.start()
    await asyncio.to_thread(_make_database_private, store)
    cache = WatchCache(store)
    apiserver: ApiServer | None = None
    stack = contextlib.ExitStack()
    try:
        await cache.start()
        table = builtin_resources()
        registry = Registry(store, cache, table)
        crds = CRDRegistrar(registry)
        crds.start()
        advertise_ip = _advertise_ip(config.bind_address)
        apiserver = ApiServer(
            registry, table, token, f"{advertise_ip}:{config.https_listen_port}",
            # The API server's own identity towards kubelets, and the CA their serving
            # certificates chain to (the cluster CA: k3py signs them, see bootstrap/kubeletserving).
            kubelet_client_cert=KubeletClientTLS(tls.kubelet_client_cert, tls.kubelet_client_key, tls.ca_cert),
            connection_limits=ConnectionLimits(
                header_timeout=config.request_header_timeout,
                idle_timeout=config.idle_connection_timeout,
                max_connections=config.max_connections,
            ),
            inflight_limits=InflightLimits(
                max_readonly=config.max_requests_inflight,
                max_mutating=config.max_mutating_requests_inflight,
            ),
            request_timeout=config.request_timeout,
        )  # fmt: skip
        context = server_ssl_context(tls.serving_cert, tls.serving_key, tls.ca_cert)
        await ensure_system_objects(registry, advertise_ip, config.https_listen_port, config.cluster_dns)
        _tune_gc()  # a full collection of the start-up heap: before anyone can connect
        await apiserver.start(config.bind_address, config.https_listen_port, context)
        apiserver.ready = True
        # From here on the loop serves clients: any stretch it is held is reported.
        stack.enter_context(watching_the_loop())
        # As k3s: the admin kubeconfig points at loopback unless a specific address was bound.
        local = "127.0.0.1" if config.bind_address in ("0.0.0.0", "::", "") else advertise_ip
        host = local if ":" not in local else f"[{local}]"
        write_kubeconfig(
            config.write_kubeconfig,
            f"https://{host}:{config.https_listen_port}",
            tls,
            config.write_kubeconfig_mode,
        )
        log.info(
            "API server ready on https://%s:%d in %.0f ms (revision %d); kubeconfig at %s",
            config.bind_address, config.https_listen_port, (time.monotonic() - started) * 1000,
            cache.revision, config.write_kubeconfig,
        )  # fmt: skip
        control_plane = asyncio.create_task(
            _run_control_plane(apiserver, config, tls.ca_cert.read_bytes(), stop), name="control-plane"
        )
        signer = asyncio.create_task(_run_kubelet_serving_signer(apiserver, tls), name="kubelet-serving-signer")
        agent: asyncio.Task[None] | None = None
        if node_agent is not None:
            info = ServerInfo(config, advertise_ip, tls.ca_cert, tls.ca_key)
            agent = asyncio.create_task(_run_node_agent(apiserver, node_agent, info, stop), name="node-agent")
        await stop.wait()
        if agent is not None:
            await _finish(agent)
        await _finish(control_plane)
        signer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await signer
    finally:
        stack.close()
        if apiserver is not None:
            await apiserver.stop()
        await cache.close()
        await store.close()


async def _run_control_plane(apiserver: ApiServer, config: ServerConfig, ca_pem: bytes, stop: asyncio.Event) -> None:
    """Controllers, scheduler and simulated nodes, talking to this API server in-process."""
    client = Client(InProcessTransport(apiserver.rest), field_manager="k3py-controller-manager")
    try:
        await run_control_plane(client, simulated_nodes=config.simulated_nodes, stop=stop, root_ca=ca_pem)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the control plane stopped with an error; the API server keeps serving")


async def _run_kubelet_serving_signer(apiserver: ApiServer, tls: TLSFiles) -> None:
    """Signs the serving certificates joining kubelets ask for (server/bootstrap/kubeletserving)."""
    client = Client(InProcessTransport(apiserver.rest), field_manager="k3py-kubelet-serving-signer")
    try:
        await KubeletServingSigner(client, tls.ca_cert, tls.ca_key).run()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the kubelet serving-certificate signer stopped with an error; joining nodes cannot get certificates")


async def _run_node_agent(apiserver: ApiServer, hook: NodeAgentHook, info: ServerInfo, stop: asyncio.Event) -> None:
    """This host's kubelet, talking to this API server in-process."""
    client = Client(InProcessTransport(apiserver.rest), field_manager="k3py-kubelet")
    try:
        await hook(client, info, stop)
    except asyncio.CancelledError:
        raise
    except Exception:
        # A node that cannot run pods (no cgroups, no nft) must not take the API down with it.
        log.exception("the node agent stopped with an error; the API server keeps serving")


async def _finish(task: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(task, timeout=10)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _summarising_exception_handler() -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's handler for errors nothing else caught, writing each kind once a minute with
    a count: ``accept()`` failing for want of file descriptors, say, is reported for every
    queued connection on every attempt, which once wrote 35 MB of log in 14 s."""
    summary = LogSummary(logging.getLogger("asyncio"))

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = context.get("message") or "unhandled error in the event loop"
        summary.log((message, type(exc).__name__), logging.ERROR, "%s: %r", message, exc, exc_info=exc)

    return handler


def run_server_forever(config: ServerConfig, node_agent: NodeAgentHook | None = None) -> int:
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    raise_open_file_limit()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_summarising_exception_handler())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_server(config, stop, node_agent)

    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(_main())
    except (StoreError, OSError) as e:
        # A damaged database or a port in use is the operator's to fix: say what, no traceback.
        log.error("k3py server cannot start: %s", e)
        return 1
    return 0
