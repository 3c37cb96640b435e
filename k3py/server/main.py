"""Start-up and shutdown of the server process: the store, then the API server.

Each component is an asyncio task started explicitly in dependency order and stopped in
reverse on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from k3py.server.config import ServerConfig
from k3py.store.factory import open_store

log = logging.getLogger("k3py.server")


async def run_server(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(
        config.datastore_endpoint, config.data_dir / "db", synchronous=config.sqlite_synchronous
    )
    await store.start()
    log.info("store open (revision %d)", await store.current_revision())
    try:
        await stop.wait()
    finally:
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

    asyncio.run(_main())
    return 0
