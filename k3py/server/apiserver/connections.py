"""The API server's connections: TLS, a header timeout and a cap, so idle clients cannot lock it up.

Every accepted TCP connection is registered with the ``ConnectionGuard`` before anything else
happens on it — before the TLS handshake, which is where an attacker who never finishes one
would otherwise sit unseen. The guard enforces:

* **Header timeout** (upstream's ``ReadHeaderTimeout``, 32 s): a connection that has not
  completed the TLS handshake *and* sent a complete request head within it is closed. The TLS
  layer's own handshake timeout is set to the same value.
* **Idle timeout** (upstream's ``IdleTimeout``, 90 s): a keep-alive connection with no request
  in progress is closed after it. aiohttp enforces this one (its keep-alive timer, which also
  closes a connection whose next request head arrives too slowly); the guard passes it on.
* **A cap on open connections.** When a new connection would exceed it, the guard closes the
  oldest connection that is not serving a request and has not authenticated (still in the
  handshake, or connected without a client certificate and without a valid token yet), else
  the oldest idle authenticated keep-alive connection; only when every connection is serving a
  request is the new one refused. So a flood of idle unauthenticated connections displaces
  itself, and a client with credentials still gets in. Closing is an abort (no TLS goodbye):
  cheap, and counted in one log line a minute rather than one per connection.

The default cap is derived from the open-file limit (which ``raise_open_file_limit`` lifts to
the hard limit at start) so the process runs out of connections before it runs out of file
descriptors — ``accept()`` failing with EMFILE is what locked the admin out before — and is
bounded by ``MAX_CONNECTIONS_CEILING`` because every connection costs memory.

TLS is layered by hand: the listening socket is plain TCP, and the guard's acceptor wraps each
connection in asyncio's ``SSLProtocol`` itself (what ``loop.create_server(ssl=...)`` does
internally). That is what lets the guard see connections still in the handshake, and it lets
the per-connection read buffer be 32 KiB instead of asyncio's 256 KiB (an idle connection would
otherwise cost a quarter of a megabyte).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k3py.util.logsummary import LogSummary

log = logging.getLogger("k3py.apiserver.connections")

HEADER_TIMEOUT = 32.0  # upstream kube-apiserver's ReadHeaderTimeout
IDLE_TIMEOUT = 90.0  # upstream kube-apiserver's IdleTimeout
MAX_CONNECTIONS_CEILING = 8192
# File descriptors kept free for everything else the process opens (store, kubelet, logs).
RESERVED_FILES = 256
TLS_READ_BUFFER = 32 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = 0  # 0: derived from the open-file limit


def default_max_connections(open_files: int) -> int:
    """The connection cap for a process allowed ``open_files`` descriptors."""
    return max(64, min(MAX_CONNECTIONS_CEILING, open_files - RESERVED_FILES, open_files * 3 // 4))


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (as Go programs do at start); returns the
    soft limit now in force. Many hosts start services with a soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
            return soft
        log.info("raised the open-file limit from %d to %d", soft, target)
        return target
    return soft


class Connection:
    """One accepted TCP connection, as the guard tracks it."""

    __slots__ = ("accepted", "authenticated", "busy", "requests", "transport")

    def __init__(self, transport: asyncio.Transport, accepted: float) -> None:
        self.transport = transport  # the raw TCP transport: aborting it ends TLS and HTTP too
        self.accepted = accepted
        self.requests = 0  # request heads received so far
        self.busy = 0  # requests being served now
        self.authenticated = False

    def abort(self) -> None:
        """Close at once, without a TLS goodbye (idempotent)."""
        self.transport.abort()


class ConnectionGuard:
    """Registers every connection; enforces the header timeout and the connection cap."""

    def __init__(self, limits: ConnectionLimits, open_files: int | None = None) -> None:
        if open_files is None:
            open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if open_files == resource.RLIM_INFINITY:
                open_files = 1 << 20
        self.limits = limits
        self.max_connections = limits.max_connections or default_max_connections(open_files)
        # Insertion order is accept order: the first candidates found are the oldest.
        self._open: dict[Connection, None] = {}
        self._summary = LogSummary(log)
        # Other summaries the periodic sweep flushes (the server's error log).
        self.summaries: list[LogSummary] = [self._summary]
        self._sweeper: asyncio.Task[None] | None = None
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def __len__(self) -> int:
        return len(self._open)

    # -- life cycle of a connection ---------------------------------------------------------

    def admit(self, transport: asyncio.Transport) -> Connection | None:
        """Register a new connection, making room if at the cap; None: refuse it."""
        if len(self._open) >= self.max_connections:
            victim = self._eviction_candidate()
            if victim is None:
                self.refused += 1
                self._summary.log(
                    "refused", logging.WARNING,
                    "connection limit (%d) reached with every connection serving a request: refusing new connections",
                    self.max_connections,
                )  # fmt: skip
                return None
            self.evicted += 1
            self._summary.log(
                "evicted", logging.WARNING,
                "connection limit (%d) reached: closing the oldest idle connections that have not authenticated",
                self.max_connections,
            )  # fmt: skip
            self._forget(victim)
            victim.abort()
        conn = Connection(transport, time.monotonic())
        self._open[conn] = None
        return conn

    def request_started(self, conn: Connection) -> None:
        conn.requests += 1
        conn.busy += 1

    def request_finished(self, conn: Connection) -> None:
        conn.busy -= 1

    def authenticated(self, conn: Connection) -> None:
        conn.authenticated = True

    def closed(self, conn: Connection) -> None:
        self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        self._open.pop(conn, None)

    def _eviction_candidate(self) -> Connection | None:
        idle_authenticated: Connection | None = None
        for conn in self._open:
            if conn.busy:
                continue
            if not conn.authenticated:
                return conn
            if idle_authenticated is None and conn.requests:
                idle_authenticated = conn
        return idle_authenticated

    # -- timeouts ---------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Close connections past the header timeout; returns how many."""
        now = time.monotonic() if now is None else now
        deadline = now - self.limits.header_timeout
        expired = []
        for conn in self._open:
            if conn.accepted > deadline:
                break  # accept order: every later connection is younger still
            if not conn.requests:
                expired.append(conn)
        for conn in expired:
            self._forget(conn)
            conn.abort()
        if expired:
            self.timed_out += len(expired)
            self._summary.log(
                "header-timeout", logging.INFO,
                "closed %d connections that sent no request within %.0f s", len(expired), self.limits.header_timeout,
            )  # fmt: skip
        for summary in self.summaries:
            summary.flush()
        return len(expired)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="connection-sweeper")

    async def _sweep_forever(self) -> None:
        interval = min(5.0, max(0.05, self.limits.header_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    async def stop(self) -> None:
        """Stop sweeping and abort every connection still open."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for conn in list(self._open):
            self._forget(conn)
            conn.abort()


class _GuardedTLS(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a smaller read buffer, telling the guard when it is gone."""

    max_size = TLS_READ_BUFFER

    def __init__(self, *args: Any, on_lost: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._on_lost()


class TLSAcceptor(asyncio.Protocol):
    """The listening socket's protocol: registers the connection, then layers TLS and the
    HTTP handler (``handler_factory(conn)``) on it."""

    def __init__(
        self,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext,
        handler_factory: Callable[[Connection], asyncio.BaseProtocol],
    ) -> None:
        self.guard = guard
        self.ssl_context = ssl_context
        self.handler_factory = handler_factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        conn = self.guard.admit(transport)
        if conn is None:
            transport.abort()
            return
        guard = self.guard
        tls = _GuardedTLS(
            asyncio.get_running_loop(),
            self.handler_factory(conn),
            self.ssl_context,
            None,
            server_side=True,
            ssl_handshake_timeout=guard.limits.header_timeout,
            on_lost=lambda: guard.closed(conn),
        )
        # No byte has been read yet (the transport adds its reader after this call returns),
        # so the TLS protocol sees the connection from its first byte.
        transport.set_protocol(tls)
        tls.connection_made(transport)
