"""Start-up and shutdown of the server process: the store, then the API server.

Order: certificates and token (first start creates them), the store, the watch cache (loads
every object), the registry, the HTTPS listener, the system objects, then the admin
kubeconfig is written — so a client that sees the kubeconfig can already talk to the API.
Components stop in reverse on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time

from k3py.api.resources import builtin_resources
from k3py.server.apiserver.crds import CRDRegistrar
from k3py.server.apiserver.registry import Registry
from k3py.server.apiserver.server import ApiServer, server_ssl_context
from k3py.server.apiserver.system import ensure_system_objects
from k3py.server.apiserver.watchcache import WatchCache
from k3py.server.bootstrap.certs import ensure_certificates
from k3py.server.bootstrap.kubeconfig import write_kubeconfig
from k3py.server.bootstrap.tokens import load_or_create_token
from k3py.server.config import ServerConfig
from k3py.store.factory import open_store

log = logging.getLogger("k3py.server")


def _advertise_ip(bind_address: str) -> str:
    """The address clients (and the `kubernetes` Endpoints) use to reach this server."""
    try:
        addr = ipaddress.ip_address(bind_address)
    except ValueError:
        return "127.0.0.1"
    if addr.is_unspecified:
        return "127.0.0.1"
    return str(addr)


async def run_server(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    started = time.monotonic()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    tls = ensure_certificates(config.data_dir, config.tls_san)
    token = load_or_create_token(config.data_dir, config.token)
    store = open_store(
        config.datastore_endpoint, config.data_dir / "db", synchronous=config.sqlite_synchronous
    )
    await store.start()
    cache = WatchCache(store)
    apiserver: ApiServer | None = None
    try:
        await cache.start()
        table = builtin_resources()
        registry = Registry(store, cache, table)
        crds = CRDRegistrar(registry)
        crds.start()
        advertise_ip = _advertise_ip(config.bind_address)
        apiserver = ApiServer(registry, table, token, f"{advertise_ip}:{config.https_listen_port}")
        context = server_ssl_context(tls.serving_cert, tls.serving_key, tls.ca_cert)
        await apiserver.start(config.bind_address, config.https_listen_port, context)
        await ensure_system_objects(registry, advertise_ip, config.https_listen_port)
        apiserver.ready = True
        host = advertise_ip if ":" not in advertise_ip else f"[{advertise_ip}]"
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
        await stop.wait()
    finally:
        if apiserver is not None:
            await apiserver.stop()
        await cache.close()
        await store.close()


def run_server_forever(config: ServerConfig) -> int:
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_server(config, stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(_main())
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_main())
    return 0
