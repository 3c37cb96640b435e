"""CPU-heavy request work off the event loop: a small pool of its own.

One asyncio loop serves the API, the controllers and the kubelet, so decoding a 3 MiB YAML
body or applying a large patch must not run on it. Such work runs here instead, on at most
``WORKERS`` threads: a flood of heavy requests queues up rather than starting more threads,
each of which would compete with the loop for the GIL (the loop gets it back at every switch
interval, 5 ms, as long as few threads want it). Threads do not bound memory or CPU: the work
sent here must be under its own budget (body size, node counts, the JSON-patch copy limit).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

WORKERS = 2

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="k3py-api-heavy")
    return _pool


async def run_heavy(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the heavy-work pool; its exceptions are raised here."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(fn, *args, **kwargs))
