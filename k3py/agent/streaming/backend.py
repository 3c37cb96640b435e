"""What the streaming server asks of the node: the `StreamingBackend` protocol and its stream types.

The wire protocols (SPDY or WebSocket, v4/v5 remotecommand, port-forward) are decoded by this
package; the backend only sees plain async byte streams and answers with an exit code. The
kubelet implements it on top of the container runtime; tests implement it with host processes.

Errors: raise `NotFoundError` for an unknown pod/container (the server answers 404 before any
upgrade when `resolve` raises it), `StreamingError` for other failures the user should read
(its message is reported on the error channel, as the kubelet does).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol


class StreamingError(Exception):
    """A failure to report to the client as the message of a Failure Status."""


class NotFoundError(StreamingError):
    """The pod or container does not exist (or is not running) on this node."""


class InputStream(Protocol):
    async def read(self) -> bytes:
        """The next chunk from the client; b"" at end of input."""
        ...


class OutputStream(Protocol):
    async def write(self, data: bytes) -> None:
        """Send bytes to the client (waits while the client is slow)."""
        ...


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


@dataclass
class ExecStreams:
    """The client's side of an exec or attach: whichever of stdin/stdout/stderr it asked for.

    `resize` receives the terminal size whenever the client's terminal changes (tty only);
    it ends with None when the client goes away.
    """

    stdin: InputStream | None
    stdout: OutputStream | None
    stderr: OutputStream | None
    tty: bool
    resize: asyncio.Queue[TerminalSize | None] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    previous: bool = False
    since_seconds: int | None = None
    since_time: float | None = None  # epoch seconds (sinceTime); at most one of the two is set
    limit_bytes: int | None = None


class StreamingBackend(ABC):
    async def resolve(self, pod: PodRef, container: str | None) -> None:  # noqa: B027 - optional hook
        """Raise NotFoundError when the pod (or container) is not here; called before upgrading."""

    @abstractmethod
    async def exec(
        self, pod: PodRef, container: str, command: list[str], streams: ExecStreams
    ) -> int:
        """Run `command` in the container wired to `streams`; return its exit code."""

    @abstractmethod
    async def attach(self, pod: PodRef, container: str, streams: ExecStreams) -> None:
        """Connect `streams` to the container's main process until either side ends."""

    @abstractmethod
    async def port_forward(
        self, pod: PodRef, port: int, reader: InputStream, writer: OutputStream
    ) -> None:
        """Connect to `port` in the pod's network namespace and pipe bytes both ways until both
        directions are done. Raise StreamingError when the port cannot be reached."""

    @abstractmethod
    async def logs(
        self, pod: PodRef, container: str, options: LogOptions, out: OutputStream
    ) -> None:
        """Write the container's log to `out` (following it when asked) until done."""
