"""Child process for test_crash.py: write forever, print each acknowledged write.

Usage: python crash_child.py <db path> <tag>. Each line on stdout is "<revision> <key>",
printed only after the store acknowledged the write (the commit's fsync has returned).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from k3py.store.sqlite import SqliteStore


async def main(path: Path, tag: str) -> None:
    store = SqliteStore(path, "FULL")
    await store.start()
    out = sys.stdout

    async def worker(n: int) -> None:
        i = 0
        while True:
            key = f"/crash/{tag}/{n}/{i}"
            kv = await store.create(key, b"v" * 100)
            out.write(f"{kv.mod_revision} {key}\n")
            for j in range(3):
                result = await store.update(key, b"u%d" % j, kv.mod_revision)
                kv = result.kv
                out.write(f"{kv.mod_revision} {key}\n")
            out.flush()
            i += 1

    print("ready", flush=True)
    await asyncio.gather(*(worker(n) for n in range(16)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
