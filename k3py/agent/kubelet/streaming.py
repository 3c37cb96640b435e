"""The kubelet's ``StreamingBackend``: logs, exec, attach and port-forward over the runtime.

- logs: read the container's CRI log files (``<RFC3339Nano> stdout|stderr F|P <text>``; the
  rotated ``.N`` files first, then the current one, followed across rotations), joining
  partial lines; ``tailLines``, ``timestamps``, ``sinceSeconds`` or ``sinceTime``, ``limitBytes`` and
  ``previous`` (the attempt before the current one) as kubectl asks; ``follow`` keeps reading
  until the container has exited and the file has no more.
- exec: a process in the container's namespaces and cgroup (``ContainerRuntime.exec``), its
  stdio pumped to the client streams by executor threads; terminal resizes are applied.
- attach: the container's own stdio through the runtime's attach session: output as it is
  produced, stdin when the container was created with ``stdin`` (closed after the client's
  end of input when ``stdinOnce`` and no ``tty``), terminal resizes.
- port-forward: a socket created inside the pod's network namespace (setns on a worker
  thread, then back) connects to 127.0.0.1:<port> there — what the kubelet does.

The backend needs two narrow things of the kubelet: ``PodDirectory`` (the pods bound to this
node, by name — the pod manager's informer) and ``PodContainers`` (the runtime, its thread
pool, a pod's container attempts and sandbox — ``podruntime.PodRuntime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol, TypeVar

from k3py.agent.kubelet.fdio import make_nonblocking, read_fd, write_fd
from k3py.agent.streaming.backend import (
    ExecStreams,
    InputStream,
    LogOptions,
    NotFoundError,
    OutputStream,
    PodRef,
    StreamingBackend,
    StreamingError,
)
from k3py.runtime.containers import AttachSession, ContainerError, ContainerRuntime, ExecSession
from k3py.runtime.spec import ContainerStatus

CLONE_NEWNET = 0x40000000
S = TypeVar("S", ExecSession, AttachSession)
T = TypeVar("T")
Obj = dict[str, Any]
_FOLLOW_CHUNK = 1 << 20  # bytes read per step while following a log
PORT_FORWARD_LINGER = 1.0  # seconds the other direction gets once one is done (containerd's)
_libc = ctypes.CDLL(None, use_errno=True)


def parse_cri_line(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """(timestamp, stream, full line?, content) of one CRI log line; None when malformed."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(errors="replace"), parts[1].decode(errors="replace"), parts[2] == b"F", content


def _timestamp_seconds(stamp: str) -> float:
    try:
        main, _, frac = stamp.rstrip("Z").partition(".")
        base = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        return base + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return 0.0


def render_log_lines(raw: bytes, timestamps: bool) -> Iterator[tuple[float, bytes]]:
    """Output lines (with the first fragment's time) from CRI log content; partial records at
    the end (output without its newline yet, or ever) come last, as they are."""
    pending = b""
    pending_stamp = ""
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # the writer is mid-line; the caller reads it next time
        parsed = parse_cri_line(line)
        if parsed is None:
            continue
        stamp, _stream, full, content = parsed
        if not pending:
            pending_stamp = stamp
        pending += content
        if full:
            text = pending + b"\n"
            if timestamps:
                text = pending_stamp.encode() + b" " + text
            yield _timestamp_seconds(pending_stamp), text
            pending = b""
    if pending:
        yield _timestamp_seconds(pending_stamp), (pending_stamp.encode() + b" " if timestamps else b"") + pending


def _read_rotated(log_path: str, keep: int = 10) -> bytes:
    """The rotated files of a log (``<path>.N`` ... ``<path>.1``, oldest first)."""
    parts = []
    for n in range(keep, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            with open(f"{log_path}.{n}", "rb") as handle:
                parts.append(handle.read())
    return b"".join(parts)


def _rotated_away(handle: BinaryIO, log_path: str) -> bool:
    """True when ``log_path`` is now another file than the one ``handle`` reads."""
    try:
        return os.stat(log_path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


class PodDirectory(Protocol):
    """The pods bound to this node."""

    def find_pod(self, namespace: str, name: str) -> Obj | None: ...


class PodContainers(Protocol):
    """The runtime side of this node's pods."""

    @property
    def runtime(self) -> ContainerRuntime: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...

    def container_attempts(self, uid: str, name: str) -> list[ContainerStatus]:
        """The attempts of the pod's container ``name``, oldest first (blocking)."""
        ...

    def sandbox_of(self, uid: str) -> str | None: ...

    def sandbox_netns(self, sandbox_id: str) -> str:
        """The sandbox's network namespace file, as this process can open it (blocking)."""
        ...


class KubeletStreamingBackend(StreamingBackend):
    def __init__(self, pods: PodDirectory, containers: PodContainers) -> None:
        self.pods = pods
        self.containers = containers

    # ---- lookups ----------------------------------------------------------------------------

    def _pod(self, ref: PodRef) -> dict:
        pod = self.pods.find_pod(ref.namespace, ref.name)
        if pod is None or (ref.uid and pod["metadata"]["uid"] != ref.uid):
            raise NotFoundError(f'pods "{ref.name}" not found')
        return pod

    def _default_container(self, pod: dict, container: str | None) -> str:
        if container:
            names = [c["name"] for c in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])]
            if container not in names:
                raise NotFoundError(f"container {container} is not valid for pod {pod['metadata']['name']}")
            return container
        return pod["spec"]["containers"][0]["name"]

    async def _attempts(self, ref: PodRef, container: str | None) -> tuple[dict, list[ContainerStatus]]:
        pod = self._pod(ref)
        name = self._default_container(pod, container)
        attempts = await self.containers.run_blocking(self.containers.container_attempts, pod["metadata"]["uid"], name)
        return pod, attempts

    async def _running(self, ref: PodRef, container: str) -> str:
        pod, attempts = await self._attempts(ref, container)
        if not attempts or attempts[-1].state != "running":
            raise StreamingError(
                f"container {container} is not running in pod {pod['metadata']['name']}"
            )
        return attempts[-1].id

    async def resolve(self, pod: PodRef, container: str | None) -> None:
        found = self._pod(pod)
        if container:
            self._default_container(found, container)

    # ---- logs -------------------------------------------------------------------------------

    async def logs(self, pod: PodRef, container: str, options: LogOptions, out: OutputStream) -> None:
        found, attempts = await self._attempts(pod, container)
        if options.previous:
            if len(attempts) < 2:
                raise StreamingError(
                    f'previous terminated container "{container}" in pod "{found["metadata"]["name"]}" not found'
                )
            target = attempts[-2]
        elif attempts:
            target = attempts[-1]
        else:
            raise StreamingError(
                f'container "{container}" in pod "{found["metadata"]["name"]}" is waiting to start: ContainerCreating'
            )
        since = time.time() - options.since_seconds if options.since_seconds else options.since_time
        remaining = options.limit_bytes
        run = self.containers.run_blocking
        try:
            handle = await run(open, target.log_path, "rb")
        except FileNotFoundError:
            return
        try:
            raw = await run(_read_rotated, target.log_path) + await run(handle.read)
            consumed = raw.rfind(b"\n") + 1
            lines = [text for stamp, text in render_log_lines(raw[:consumed], options.timestamps)
                     if since is None or stamp >= since]
            if options.tail_lines is not None:
                lines = lines[-options.tail_lines:] if options.tail_lines > 0 else []
            for text in lines:
                remaining = await self._emit(out, text, remaining)
                if remaining == 0:
                    return
            if not options.follow or options.previous:
                return
            buffer = raw[consumed:]
            while True:
                chunk = await run(handle.read, _FOLLOW_CHUNK)
                if chunk:
                    buffer += chunk
                    cut = buffer.rfind(b"\n") + 1
                    for _stamp, text in render_log_lines(buffer[:cut], options.timestamps):
                        remaining = await self._emit(out, text, remaining)
                        if remaining == 0:
                            return
                    buffer = buffer[cut:]
                    continue
                if await run(_rotated_away, handle, target.log_path):
                    # The runtime rotated the file: what we hold is complete, go on with the new one.
                    handle.close()
                    handle = await run(open, target.log_path, "rb")
                    continue
                status = await run(self.containers.runtime.container_status, target.id)
                if status.state != "running":
                    return
                await asyncio.sleep(0.2)
        except (FileNotFoundError, ContainerError):
            return
        finally:
            # Cancelled (the client left) while a worker still reads: that thread holds the
            # file's lock, so the close waits its turn there, never on the event loop.
            asyncio.get_running_loop().run_in_executor(None, handle.close)

    @staticmethod
    async def _emit(out: OutputStream, text: bytes, remaining: int | None) -> int | None:
        if remaining is not None:
            text = text[:remaining]
            remaining -= len(text)
        await out.write(text)
        return remaining

    # ---- exec and attach --------------------------------------------------------------------
    # Sessions are driven from the event loop (non-blocking descriptors and sockets), not by
    # threads parked in reads: a client that goes away cancels the handler, the session closes
    # at once (the supervisor then kills an exec's process) and no thread or lock is left behind.

    async def _open_session(self, open_session: Callable[[], S]) -> S:
        """Open a runtime session on a worker thread; one that arrives after our caller was
        cancelled (the client went away meanwhile) is closed, not leaked."""
        opening = asyncio.ensure_future(self.containers.run_blocking(open_session))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened_session)
            raise
        except ContainerError as e:
            raise StreamingError(str(e)) from None

    async def exec(self, pod: PodRef, container: str, command: list[str], streams: ExecStreams) -> int:
        cid = await self._running(pod, container)
        runtime = self.containers.runtime
        session = await self._open_session(
            lambda: runtime.exec(cid, command, tty=streams.tty, stdin=streams.stdin is not None)
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            for fd in {session.stdin, session.stdout, session.stderr} - {None}:
                make_nonblocking(fd)  # type: ignore[arg-type]
            if streams.stdin is not None and session.stdin is not None:
                tasks.append(asyncio.create_task(self._pump_in(streams.stdin, session.stdin, session)))
            outputs = [(session.stdout, streams.stdout)]
            if session.stderr is not None:
                outputs.append((session.stderr, streams.stderr))
            readers = [asyncio.create_task(self._pump_out(fd, out)) for fd, out in outputs]
            tasks += readers
            if streams.tty:
                tasks.append(asyncio.create_task(self._resizes(streams, session)))
            code = await session.wait_async()
            # What the process wrote before it exited is still in the pipes: let it through.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 5)
            return code
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            session.close()

    async def _pump_in(self, source: InputStream, fd: int, session: ExecSession) -> None:
        while True:
            data = await source.read()
            if not data:
                break
            await write_fd(fd, data)
        if not session.tty:
            session.close_stdin()

    async def _pump_out(self, fd: int, out: OutputStream | None) -> None:
        while data := await read_fd(fd):
            if out is not None:
                await out.write(data)

    async def _resizes(self, streams: ExecStreams, session: ExecSession | AttachSession) -> None:
        while True:
            size = await streams.resize.get()
            if size is None:
                return
            with contextlib.suppress(ContainerError, OSError):
                if isinstance(session, AttachSession):
                    await session.aresize(size.height, size.width)
                else:
                    session.resize(size.height, size.width)

    async def attach(self, pod: PodRef, container: str, streams: ExecStreams) -> None:
        cid = await self._running(pod, container)
        spec = next((c for c in self._pod(pod)["spec"].get("containers") or [] if c.get("name") == container), {})
        runtime = self.containers.runtime
        session = await self._open_session(lambda: runtime.attach(cid))

        async def pump_in() -> None:
            assert streams.stdin is not None
            while data := await streams.stdin.read():
                await session.awrite(data)
            # stdinOnce ends the container's input with the first attach, but not on a terminal:
            # there a detaching user leaves the shell running (as Docker and containerd do).
            if spec.get("stdinOnce") and not spec.get("tty"):
                await session.aclose_stdin()

        pumps: list[asyncio.Task[None]] = []
        try:
            if streams.stdin is not None and session.stdin:
                pumps.append(asyncio.create_task(pump_in()))
            if streams.tty:
                pumps.append(asyncio.create_task(self._resizes(streams, session)))
            while item := await session.aread():
                stream, data = item
                out = streams.stderr if stream == "stderr" and streams.stderr is not None else streams.stdout
                if out is not None:
                    await out.write(data)
            # None: the container exited
        except OSError as e:
            raise StreamingError(f"attach to container {container}: {e}") from None
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            session.close()

    # ---- port-forward -----------------------------------------------------------------------

    async def port_forward(self, pod: PodRef, port: int, reader: InputStream, writer: OutputStream) -> None:
        found = self._pod(pod)
        uid = found["metadata"]["uid"]
        sandbox_id = self.containers.sandbox_of(uid)
        if sandbox_id is None:
            raise StreamingError(f"pod {pod} has no sandbox on this node")
        if found["spec"].get("hostNetwork"):
            netns_path = None
        else:
            netns_path = await self.containers.run_blocking(self.containers.sandbox_netns, sandbox_id)
        try:
            sock = await self.containers.run_blocking(_connect_in_netns, netns_path, port)
        except OSError as e:
            raise StreamingError(
                f"error forwarding port {port} to pod {uid}: failed to connect to localhost:{port} inside namespace: {e}"
            ) from None
        stream_reader, stream_writer = await asyncio.open_connection(sock=sock)

        async def upstream() -> None:
            try:
                while True:
                    data = await reader.read()
                    if not data:
                        break
                    stream_writer.write(data)
                    await stream_writer.drain()
            finally:
                with contextlib.suppress(OSError):
                    stream_writer.write_eof()

        async def downstream() -> None:
            while True:
                data = await stream_reader.read(65536)
                if not data:
                    break
                await writer.write(data)

        sending = asyncio.create_task(upstream())
        try:
            # The connection lasts as long as the pod sends: after the client's end of input the
            # reply still flows; once the pod hangs up, the client's side gets a second (as
            # containerd gives it) and the stream ends, so a client that keeps its side open
            # (HTTP/1.0 reading until close) sees the end.
            await downstream()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sending), PORT_FORWARD_LINGER)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await sending
            stream_writer.close()
            with contextlib.suppress(OSError):
                await stream_writer.wait_closed()


def _close_opened_session(opening: asyncio.Future) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _connect_in_netns(netns_path: str | None, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:port made inside ``netns_path`` (this thread returns after)."""
    if netns_path is None:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # never leave a pool thread in the pod's netns
                os._exit(70)
        try:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            sock.settimeout(None)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock
    finally:
        os.close(own)
        os.close(target)
