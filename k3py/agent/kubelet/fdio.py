"""Reading and writing pipe and pty descriptors from asyncio, without worker threads.

An exec session's stdio are plain descriptors (pipe ends, or a pty master). Pumping them with
``os.read`` in executor threads parks a thread per stream for as long as the process stays
quiet, and such a thread cannot be interrupted when the client goes away. Here the descriptor is
made non-blocking and the event loop's selector says when it is ready, so a cancelled pump is
simply gone.
"""

from __future__ import annotations

import asyncio
import errno
import os


def make_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


async def _ready(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def read_fd(fd: int, size: int = 65536) -> bytes:
    """The next chunk from ``fd`` (non-blocking); b"" at end of file.

    A pty master reads EIO once the last process holding the terminal has gone: that is its end
    of file.
    """
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await _ready(fd, writable=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def write_fd(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (non-blocking), waiting while the reader is behind."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, writable=True)
            continue
        view = view[written:]
