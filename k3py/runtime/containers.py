"""The container runtime's API: sandboxes and containers, CRI-like, over the supervisor.

``ContainerRuntime(data_dir)`` is what the kubelet (and the CLI, tests and benchmarks) use. It
never forks containers itself: it prepares a bundle directory per container (``config.json``
with everything resolved: overlay layer dirs from the image store, the final argv and env, the
capability mask, mounts, cgroup limits) and asks the lean supervisor process (started on first
use, see ``supervisor.py``) to start, signal, wait for and exec into containers. Status comes
from the bundle's files (``meta.json`` written here at create, ``state.json`` written by the
supervisor), so a restarted k3py sees every container and every exit code without asking.

Calls block for at most a few milliseconds except ``wait``/``stop``/``exec_sync``, which take a
timeout; asyncio callers run them in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from k3py.runtime import linux, seccomp
from k3py.runtime import supervisor as supervisor_module
from k3py.runtime.cgroups import Cgroup, prune_empty
from k3py.runtime.containerinit import DEFAULT_CAPABILITIES
from k3py.runtime.devices import container_rules
from k3py.runtime.images import ImageError, ImageStore, ImportBudget
from k3py.runtime.linux import capability_mask
from k3py.runtime.spec import (
    ContainerSpec,
    ContainerStatus,
    Resources,
    Sandbox,
    SandboxSpec,
    SecurityProfile,
)

log = logging.getLogger(__name__)


class ContainerError(RuntimeError):
    """A runtime operation failed; the message is meant for the user."""


class ContainerNotFound(ContainerError):
    pass


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class _SessionSocket:
    """The supervisor connection of one exec or attach session.

    Readable from a thread (blocking, with a timeout) or from asyncio (``aread``), and closable
    from anywhere without waiting: there is no buffered file object whose lock a reading thread
    would hold (closing one of those blocked the event loop while an exec ran). Closing tells
    the supervisor the client is gone; for an exec it then kills the process, as containerd
    does when the exec stream's context ends.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()
        self.closed = False

    def recv(self, timeout: float | None) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    async def arecv(self) -> bytes:
        self.sock.setblocking(False)
        return await asyncio.get_running_loop().sock_recv(self.sock, 65536)

    def read_line(self, timeout: float | None = None) -> bytes:
        """The next reply line (b"" when the supervisor hung up first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            chunk = self.recv(remaining)
            if not chunk:
                return b""
            self.pending.extend(chunk)
        return self._take_line()

    async def aread_line(self) -> bytes:
        while b"\n" not in self.pending:
            chunk = await self.arecv()
            if not chunk:
                return b""
            self.pending.extend(chunk)
        return self._take_line()

    def _take_line(self) -> bytes:
        line, _, rest = bytes(self.pending).partition(b"\n")
        self.pending[:] = rest
        return line

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    async def asendall(self, data: bytes) -> None:
        self.sock.setblocking(False)
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # shutdown first: it wakes a thread still blocked in recv on this socket, which a bare
        # close would leave waiting on a descriptor number that may be reused.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _exit_code(line: bytes) -> int:
    reply = json.loads(line) if line else {"exit_code": 255}
    return int(reply.get("exit_code", 255))


class ExecSession:
    """A process running inside a container: its stdio ends and its exit code.

    For a tty session ``stdout`` is the pty master (read and write it; there is no ``stderr``);
    otherwise ``stdin`` (when requested), ``stdout`` and ``stderr`` are pipe ends. ``close``
    never blocks; closing before the process has exited kills it.
    """

    def __init__(
        self,
        conn: socket.socket,
        pid: int,
        stdin: int | None,
        stdout: int,
        stderr: int | None,
        tty: bool,
    ) -> None:
        self._channel = _SessionSocket(conn)
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty
        self.exit_code: int | None = None

    def _read_reply(self) -> dict:
        line = self._channel.read_line(30.0)
        return json.loads(line) if line else {"error": "supervisor closed the connection"}

    def resize(self, rows: int, cols: int) -> None:
        if not self.tty:
            raise ContainerError("resize needs a tty exec session")
        fcntl.ioctl(self.stdout, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close_stdin(self) -> None:
        if self.stdin is not None and self.stdin != self.stdout:
            os.close(self.stdin)
        self.stdin = None

    def wait(self, timeout: float | None = None) -> int:
        if self.exit_code is None:
            try:
                line = self._channel.read_line(timeout)
            except TimeoutError:
                raise ContainerError(
                    f"exec process {self.pid} still running after {timeout}s"
                ) from None
            self.exit_code = _exit_code(line)
        return self.exit_code

    async def wait_async(self) -> int:
        """``wait`` for asyncio callers: no thread sits in a blocking read."""
        if self.exit_code is None:
            self.exit_code = _exit_code(await self._channel.aread_line())
        return self.exit_code

    def close(self) -> None:
        self.close_stdin()
        for fd in {self.stdout, self.stderr} - {None}:
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self._channel.close()


class AttachSession:
    """The stdio of a running container: output as it is produced, input when it has stdin.

    Each method has an asyncio twin (``aread``, ``awrite``, ...) for the kubelet, which must not
    park threads in reads that only the container's next output would end.
    """

    def __init__(self, channel: _SessionSocket, tty: bool, stdin: bool) -> None:
        self._channel = channel
        self.tty = tty
        self.stdin = stdin
        self.exit_state: dict | None = None

    def _next_frame(self) -> tuple[str, bytes] | bool | None:
        """The next complete frame in the buffer; True when more bytes are needed."""
        buffer = self._channel.pending
        if len(buffer) >= 5:
            size = int.from_bytes(buffer[1:5], "big")
            if len(buffer) >= 5 + size:
                kind, payload = buffer[0], bytes(buffer[5 : 5 + size])
                del buffer[: 5 + size]
                if kind == supervisor_module.FRAME_EXIT:
                    self.exit_state = json.loads(payload)
                    return None
                return ("stdout" if kind == supervisor_module.FRAME_STDOUT else "stderr", payload)
        return None if self.exit_state is not None else True

    def read(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        """The next ("stdout" | "stderr", data); None once the container has exited."""
        while (item := self._next_frame()) is True:
            try:
                chunk = self._channel.recv(timeout)
            except TimeoutError:
                raise ContainerError(f"no output from the container within {timeout}s") from None
            if not chunk:
                return None
            self._channel.pending.extend(chunk)
        return item  # type: ignore[return-value]

    async def aread(self) -> tuple[str, bytes] | None:
        while (item := self._next_frame()) is True:
            chunk = await self._channel.arecv()
            if not chunk:
                return None
            self._channel.pending.extend(chunk)
        return item  # type: ignore[return-value]

    def write(self, data: bytes) -> None:
        self._channel.sendall(supervisor_module.frame(supervisor_module.FRAME_STDIN, data))

    async def awrite(self, data: bytes) -> None:
        await self._channel.asendall(supervisor_module.frame(supervisor_module.FRAME_STDIN, data))

    def close_stdin(self) -> None:
        self._channel.sendall(supervisor_module.frame(supervisor_module.FRAME_CLOSE_STDIN, b""))

    async def aclose_stdin(self) -> None:
        await self._channel.asendall(
            supervisor_module.frame(supervisor_module.FRAME_CLOSE_STDIN, b"")
        )

    @staticmethod
    def _resize_frame(rows: int, cols: int) -> bytes:
        return supervisor_module.frame(supervisor_module.FRAME_RESIZE, struct.pack(">HH", rows, cols))

    def resize(self, rows: int, cols: int) -> None:
        self._channel.sendall(self._resize_frame(rows, cols))

    async def aresize(self, rows: int, cols: int) -> None:
        await self._channel.asendall(self._resize_frame(rows, cols))

    def close(self) -> None:
        self._channel.close()


def _new_id() -> str:
    return secrets.token_hex(32)


MAX_SECCOMP_PROFILE_BYTES = 1 << 20


def seccomp_filter_config(profile: SecurityProfile, capabilities: int) -> dict | None:
    """``config["seccomp"]`` for a container: its compiled filter (None when Unconfined).

    Compiled here, at create and cached per profile (``seccomp``), so starting and exec'ing
    only install it. A Localhost profile that cannot be read or compiled fails the create with
    containerd's words (the kubelet shows them as CreateContainerError).
    """
    kind = profile.profile_type or "Unconfined"
    try:
        if kind == "Unconfined":
            return None
        if kind == "RuntimeDefault":
            compiled = seccomp.runtime_default_filter(capabilities)
        elif kind == "Localhost":
            path = profile.localhost_ref
            if not os.path.isabs(path):
                raise ContainerError(f"seccomp profile path {path!r} must be absolute")
            try:
                with open(path, "rb") as f:
                    text = f.read(MAX_SECCOMP_PROFILE_BYTES + 1)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise ContainerError(f'cannot load seccomp profile "{path}": open {path}: {reason}') from None
            if len(text) > MAX_SECCOMP_PROFILE_BYTES:
                raise ContainerError(f'seccomp profile "{path}" is larger than {MAX_SECCOMP_PROFILE_BYTES} bytes')
            compiled = seccomp.compile_profile(seccomp.parse_profile(text, path))
        else:
            raise ContainerError(f"unknown seccomp profile type {kind!r} (RuntimeDefault, Unconfined or Localhost)")
    except seccomp.SeccompError as exc:
        raise ContainerError(f"failed to generate seccomp spec opts: {exc}") from None
    return {
        "profile": kind,
        "program": base64.b64encode(compiled.program).decode(),
        "flags": compiled.flags,
    }


def default_cgroup_parent(data_dir: Path) -> str:
    """The cgroup parent a runtime data dir owns unless told otherwise: ``k3py-<12 hex digits
    of the SHA-256 of its resolved path>``. Two runtimes on one host (two agents, tests) thus
    never share a parent, and the same data dir finds the same parent after a restart."""
    import hashlib

    resolved = str(Path(data_dir).absolute().resolve())
    return "k3py-" + hashlib.sha256(resolved.encode()).hexdigest()[:12]


def _private_dir(path: Path) -> None:
    """``path`` (and missing parents) as a directory only root may enter (existing ones too)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_private(path: Path, data: str) -> None:
    """Write a state file readable by root only (it may hold secrets: config.json has the
    container's environment), atomically: a reader sees the old or the new content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ContainerRuntime:
    """Sandboxes and containers under ``data_dir``; images in ``data_dir/images``.

    ``cgroup_parent`` None means ``default_cgroup_parent(data_dir)``: the runtime's containers,
    pod groups and pre-forked zygotes live below it, and its supervisor touches nothing else.
    The data dir and everything in it that describes containers is root's alone (dirs 0700,
    state files 0600); see ``docs/architecture.md``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        cgroup_parent: str | None = None,
        isolate_mounts: bool = False,
        image_budget: ImportBudget | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.containers_dir = self.data_dir / "containers"
        self.sandboxes_dir = self.data_dir / "sandboxes"
        for directory in (self.data_dir, self.containers_dir, self.sandboxes_dir):
            _private_dir(directory)
        self.images = ImageStore(self.data_dir / "images", budget=image_budget)
        self.cgroup_parent = cgroup_parent or default_cgroup_parent(self.data_dir)
        # Run the supervisor in a private mount namespace (tests): its mounts never reach the host.
        self.isolate_mounts = isolate_mounts
        self._version_checked = False  # compared with the running supervisor on first use
        self._supervisor_features: frozenset[str] = frozenset()  # what the running one honours

    # ---- supervisor --------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return str(self.data_dir / supervisor_module.SOCKET_NAME)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        return sock

    def _send(self, request: dict, fds: list[int] | None = None) -> socket.socket:
        if not self._version_checked and request.get("op") != "shutdown":
            self.ensure_supervisor()
        try:
            sock = self._connect()
        except (FileNotFoundError, ConnectionRefusedError):
            self.ensure_supervisor()
            sock = self._connect()
        payload = json.dumps(request).encode() + b"\n"
        if fds:
            socket.send_fds(sock, [payload], fds)
        else:
            sock.sendall(payload)
        return sock

    def _request(
        self, request: dict, fds: list[int] | None = None, timeout: float | None = 30.0
    ) -> dict:
        sock = self._send(request, fds)
        try:
            sock.settimeout(timeout)
            with sock.makefile("rb") as reader:
                line = reader.readline()
        finally:
            sock.close()
        if not line:
            raise ContainerError(f"supervisor closed the connection during {request.get('op')}")
        reply = json.loads(line)
        if "error" in reply:
            raise ContainerError(reply["error"])
        return reply

    def _ping(self) -> dict | None:
        try:
            sock = self._connect()
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        try:
            sock.settimeout(10)
            sock.sendall(b'{"op": "ping"}\n')
            with sock.makefile("rb") as reader:
                return json.loads(reader.readline() or b"{}") or None
        except (OSError, ValueError):
            return None  # it died while we asked
        finally:
            sock.close()

    def supervisor_pid(self) -> int | None:
        """The running supervisor's pid, or None (never starts one)."""
        reply = self._ping()
        return reply.get("pid") if reply else None

    def ensure_supervisor(self) -> int:
        """The supervisor's pid, starting it if needed (or replacing an idle outdated one)."""
        lock_fd = os.open(self.data_dir / "supervisor.lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with open(lock_fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reply = self._ping()
            self._version_checked = True
            if reply is not None:
                self._supervisor_features = frozenset(reply.get("features") or ())
                if (
                    reply.get("version") == supervisor_module.code_version()
                    and reply.get("cgroup_parent") == self.cgroup_parent
                ):
                    return int(reply["pid"])
                # With isolate_mounts the sandboxes' namespace files live in the supervisor's
                # private mount namespace and would vanish with it.
                busy = reply.get("running") or (self.isolate_mounts and self.list_sandboxes())
                unconfined = "devices" not in (reply.get("features") or [])
                if busy and unconfined and not self.isolate_mounts:
                    # It would start every new container without a device allowlist, and a
                    # busy node never lets it go idle: replace it now. SIGTERM makes it stop
                    # serving and exit, leaving its containers running; the new supervisor adopts
                    # them and confines them (their exit codes are then reported as unknown).
                    log.warning(
                        "supervisor %s predates device isolation: replacing it; its %d running"
                        " containers are adopted, their exit codes will be reported as unknown",
                        reply["pid"],
                        len(reply.get("running") or []),
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(reply["pid"]), signal.SIGTERM)
                    self._wait_gone(int(reply["pid"]))
                elif busy:
                    log.warning(
                        "supervisor %s runs other k3py code or cgroup parent (%s); kept while it"
                        " has containers or sandboxes",
                        reply["pid"],
                        reply.get("cgroup_parent"),
                    )
                    return int(reply["pid"])
                else:
                    log.info(
                        "replacing idle supervisor %s, which runs other k3py code or cgroup parent",
                        reply["pid"],
                    )
                    self._request({"op": "shutdown"})
                    self._wait_gone(int(reply["pid"]))
            command = [
                sys.executable,
                "-S",
                "-B",
                supervisor_module.__file__,
                str(self.data_dir),
                self.cgroup_parent,
            ]
            if self.isolate_mounts:
                command = ["unshare", "--mount", "--propagation", "private", *command]
            result = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd="/")
            if result.returncode != 0 or not result.stdout.startswith("ok "):
                raise ContainerError(
                    f"the supervisor did not start: {result.stdout}{result.stderr}".strip()
                )
            self._supervisor_features = frozenset(supervisor_module.FEATURES)
            return int(result.stdout.split()[1])

    def _require_features(self, needed: set[str]) -> None:
        """Refuse a container an older supervisor (kept while it runs containers) would start
        without what it asks for — a seccomp filter silently missing is worse than an error."""
        if not self._version_checked:
            self.ensure_supervisor()
        missing = needed - self._supervisor_features
        if missing:
            raise ContainerError(
                f"the running container supervisor comes from an older k3py and cannot apply "
                f"{', '.join(sorted(missing))}; it is replaced once its containers have exited"
            )

    @staticmethod
    def _wait_gone(pid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        status = Path(f"/proc/{pid}/status")
        while time.monotonic() < deadline:
            try:
                if "State:\tZ" in status.read_text():
                    return
            except FileNotFoundError:
                return
            time.sleep(0.005)

    def shutdown_supervisor(self, force: bool = False) -> None:
        """Stop the supervisor (refused while containers run unless ``force``, which kills them)."""
        pid = self.supervisor_pid()
        if pid is None:
            return
        self._request({"op": "shutdown", "force": force})
        self._wait_gone(pid)

    # ---- sandboxes ---------------------------------------------------------------------------

    def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        sandbox_id = _new_id()
        directory = self.sandboxes_dir / sandbox_id
        directory.mkdir(mode=0o700)
        hostname = socket.gethostname() if spec.host_network else (spec.hostname or spec.name)
        kinds = [
            kind
            for kind, use_host in (
                ("net", spec.host_network),
                ("ipc", spec.host_ipc),
                ("uts", spec.host_network),
            )
            if not use_host
        ]
        ns = directory / "ns"
        try:
            self._request(
                {"op": "sandbox_create", "path": str(ns), "hostname": hostname, "kinds": kinds}
            )
        except ContainerError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        sandbox = Sandbox(
            id=sandbox_id,
            name=spec.name,
            hostname=hostname,
            netns_path=str(ns / "net") if "net" in kinds else "",
            ipcns_path=str(ns / "ipc") if "ipc" in kinds else "",
            utsns_path=str(ns / "uts") if "uts" in kinds else "",
            created_at=time.time_ns(),
        )
        write_private(directory / "sandbox.json", json.dumps({**asdict(sandbox), "labels": spec.labels}))
        return sandbox

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        try:
            data = json.loads((self.sandboxes_dir / sandbox_id / "sandbox.json").read_text())
        except (FileNotFoundError, ValueError):
            raise ContainerNotFound(f"sandbox {sandbox_id} not found") from None
        data.pop("labels", None)
        return Sandbox(**data)

    def list_sandboxes(self) -> list[Sandbox]:
        result = []
        for entry in sorted(self.sandboxes_dir.iterdir()):
            with contextlib.suppress(ContainerNotFound):
                result.append(self.get_sandbox(entry.name))
        return result

    def remove_sandbox(self, sandbox_id: str) -> None:
        """Release the sandbox's namespaces; its containers must have been removed."""
        self.get_sandbox(sandbox_id)
        users = [s.id for s in self.list_containers() if s.sandbox_id == sandbox_id]
        if users:
            raise ContainerError(f"sandbox {sandbox_id} still has containers: {', '.join(users)}")
        directory = self.sandboxes_dir / sandbox_id
        self._request({"op": "sandbox_remove", "path": str(directory / "ns")})
        shutil.rmtree(directory)

    # ---- containers --------------------------------------------------------------------------

    def _bundle(self, cid: str) -> Path:
        bundle = self.containers_dir / cid
        if not (bundle / "meta.json").exists():
            raise ContainerNotFound(f"container {cid} not found")
        return bundle

    def create_container(self, spec: ContainerSpec) -> str:
        """Prepare a container from ``spec`` (its image must be in the store); returns its ID."""
        with self.images.adding():  # a concurrent prune waits until meta.json names our layers
            return self._create_container(spec)

    def _create_container(self, spec: ContainerSpec) -> str:
        cgroup_parent = self._cgroup_parent_for(spec.cgroup_parent)  # a bad one fails first
        try:
            image, layer_dirs = self.images.rootfs_layers(spec.image)
        except ImageError as exc:
            raise ContainerError(str(exc)) from None
        image_cfg = image.exec_config
        entrypoint = list(image_cfg.get("Entrypoint") or [])
        cmd = list(image_cfg.get("Cmd") or [])
        if spec.command:
            argv = list(spec.command) + list(spec.args or [])
        else:
            argv = entrypoint + (list(spec.args) if spec.args is not None else cmd)
        if not argv:
            raise ContainerError(
                f"no command specified for container {spec.name!r} and its image has none"
            )
        env: dict[str, str] = {}
        for item in image_cfg.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        env.update(spec.env)
        if spec.privileged:
            caps = capability_mask(["ALL"])
        else:
            try:
                drop = capability_mask(spec.capabilities_drop)
                caps = (capability_mask(DEFAULT_CAPABILITIES) & ~drop) | capability_mask(
                    spec.capabilities_add
                )
            except ValueError as exc:
                raise ContainerError(str(exc)) from None
        seccomp_filter = None if spec.privileged else seccomp_filter_config(spec.seccomp, caps)
        if spec.sandbox_id:
            sandbox = self.get_sandbox(spec.sandbox_id)
            # An empty path is the host's namespace (hostNetwork / hostIPC pods).
            namespaces = {
                "net": sandbox.netns_path or None,
                "ipc": sandbox.ipcns_path or "host",
                "uts": sandbox.utsns_path or "host",
            }
            hostname = sandbox.hostname
        else:
            if spec.network not in ("host", "none"):
                raise ContainerError(
                    f"network must be 'host' or 'none' without a sandbox, not {spec.network!r}"
                )
            namespaces = {
                "net": "new" if spec.network == "none" else None,
                "ipc": "new",
                "uts": "new",
            }
            hostname = spec.hostname or spec.name
        if spec.host_pid:
            namespaces["pid"] = "host"  # forked without a new pid namespace (see supervisor)
        needed = ({"seccomp"} if seccomp_filter else set()) | ({"host_pid"} if spec.host_pid else set())
        if needed:
            self._require_features(needed)
        for mount in spec.mounts:
            if mount.type not in ("bind", "tmpfs") or not mount.destination.startswith("/"):
                raise ContainerError(
                    f"invalid mount {mount.destination!r}: type bind|tmpfs, absolute destination"
                )
        cid = _new_id()
        bundle = self.containers_dir / cid
        # The bundle is root's alone (its config holds the environment, its upper dir the
        # container's writes); what is inside keeps 0755: the upper dir's mode is the mode of
        # the container's "/", which non-root container users must be able to enter.
        bundle.mkdir(mode=0o700)
        for sub in ("upper", "work", "rootfs", "empty"):
            (bundle / sub).mkdir(mode=0o755)
        config: dict[str, Any] = {
            "id": cid,
            "rootfs": {
                "layers": [str(d) for d in layer_dirs],
                "upper": str(bundle / "upper"),
                "work": str(bundle / "work"),
                "merged": str(bundle / "rootfs"),
                "empty": str(bundle / "empty"),
            },
            "process": {
                "args": argv,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": spec.working_dir or image_cfg.get("WorkingDir") or "/",
                "user": spec.user or image_cfg.get("User") or "0",
                "supplemental_groups": list(spec.supplemental_groups),
                "oom_score_adj": spec.oom_score_adj,
                "tty": spec.tty,
                "stdin": spec.stdin,
            },
            "hostname": hostname,
            "namespaces": namespaces,
            "capabilities": caps,
            "privileged": spec.privileged,
            "no_new_privs": spec.no_new_privs,
            "seccomp": seccomp_filter,
            "readonly_rootfs": spec.readonly_rootfs,
            "mounts": [asdict(m) for m in spec.mounts],
            # The device allowlist (None for privileged: every device the parent allows).
            "cgroup": {
                "parent": cgroup_parent,
                "name": cid,
                "devices": container_rules(spec.privileged, fuse=spec.fuse_device),
            },
            "resources": asdict(spec.resources),
            "log": {
                "path": spec.log_path or str(bundle / "container.log"),
                "max_size": spec.log_max_size,
                "max_files": spec.log_max_files,
            },
        }
        meta = {
            "id": cid,
            "name": spec.name,
            "image": spec.image,
            "image_id": image.id,
            "layers": [d.name for d in layer_dirs],
            "created_at": time.time_ns(),
            "sandbox_id": spec.sandbox_id,
            "labels": spec.labels,
            "log_path": config["log"]["path"],
        }
        write_private(bundle / "config.json", json.dumps(config))
        write_private(bundle / "meta.json", json.dumps(meta))
        return cid

    def start_container(self, cid: str) -> int:
        """Start a created container; returns its pid. Set-up or exec failures raise ContainerError."""
        self._bundle(cid)
        reply = self._request({"op": "start", "id": cid})
        return int(reply["pid"])

    def run(self, spec: ContainerSpec) -> str:
        cid = self.create_container(spec)
        self.start_container(cid)
        return cid

    def kill_container(self, cid: str, sig: int = signal.SIGTERM) -> None:
        self._bundle(cid)
        if self.container_status(cid).state == "running":
            self._request({"op": "kill", "id": cid, "signal": int(sig)})

    def wait_container(self, cid: str, timeout: float | None = None) -> ContainerStatus:
        """Block until the container has exited (ContainerError on timeout); returns its status."""
        status = self.container_status(cid)
        if status.state != "running":
            return status
        sock = self._send({"op": "wait", "id": cid})
        try:
            sock.settimeout(timeout)
            with sock.makefile("rb") as reader:
                reader.readline()
        except TimeoutError:
            raise ContainerError(f"container {cid} still running after {timeout}s") from None
        finally:
            sock.close()
        return self.container_status(cid)

    def stop_container(self, cid: str, timeout: float = 10.0) -> ContainerStatus:
        """SIGTERM, then SIGKILL after ``timeout`` seconds if the container still runs."""
        if self.container_status(cid).state != "running":
            return self.container_status(cid)
        if timeout > 0:
            self.kill_container(cid, signal.SIGTERM)
            with contextlib.suppress(ContainerError):
                return self.wait_container(cid, timeout)
        self.kill_container(cid, signal.SIGKILL)
        return self.wait_container(cid, 30)

    def _cgroup_parent_for(self, below: str) -> str:
        """The cgroup parent of a container whose spec asks for ``below`` (relative to ours)."""
        if not below:
            return self.cgroup_parent
        parts = below.strip("/").split("/")
        if below.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ContainerError(f"cgroup parent {below!r} must be a relative path below {self.cgroup_parent!r}")
        return "/".join([self.cgroup_parent.strip("/"), *parts])

    def ensure_cgroup(self, below: str, resources: Resources) -> None:
        """Create the cgroup ``below`` (relative to the runtime's parent, as in
        ``ContainerSpec.cgroup_parent``) with ``resources``: a pod's or a QoS class's group."""
        parent = self._cgroup_parent_for(below)
        head, _, name = parent.rpartition("/")
        try:
            Cgroup(head, name).create(asdict(resources))
        except OSError as exc:
            raise ContainerError(f"cannot set up cgroup {parent}: {exc}") from None

    def remove_cgroup_parent(self) -> bool:
        """Remove the runtime's cgroup parent with the empty groups below it, bottom-up (after
        the supervisor has stopped); a group with processes is left. True when it is gone."""
        gone = True
        for directory in Cgroup(self.cgroup_parent, "").dirs.values():
            for path, _dirs, _files in os.walk(directory, topdown=False):
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    gone = False
        return gone

    def remove_empty_cgroup(self, below: str) -> None:
        """Remove the group ``below`` and its parents up to ours while they are empty (a pod's
        group whose containers were never created, or are all removed)."""
        prune_empty(self.cgroup_parent, os.path.relpath(self._cgroup_parent_for(below), self.cgroup_parent.strip("/")))

    def remove_container(self, cid: str, force: bool = False) -> None:
        """Remove a container that is not running (``force`` kills it first): files, cgroups, logs."""
        bundle = self._bundle(cid)
        status = self.container_status(cid)
        if status.state == "running":
            if not force:
                raise ContainerError(f"container {cid} is running; stop it first or force removal")
            self.stop_container(cid, 0)
        if self.supervisor_pid() is not None:
            self._request({"op": "forget", "id": cid})
        parent = self.cgroup_parent
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            parent = json.loads((bundle / "config.json").read_text())["cgroup"]["parent"]
        cgroup = Cgroup(parent, cid)
        if cgroup.exists():
            cgroup.remove()
        below = os.path.relpath(parent.strip("/"), self.cgroup_parent.strip("/"))
        if below != "." and not below.startswith(".."):
            prune_empty(self.cgroup_parent, below)  # the pod's group goes with its last container
        # The bundle holds the upper dir and the default log; a log the kubelet placed
        # elsewhere (log_path) is the kubelet's to remove with the pod.
        shutil.rmtree(bundle)

    def container_status(self, cid: str) -> ContainerStatus:
        bundle = self._bundle(cid)
        meta = json.loads((bundle / "meta.json").read_text())
        state: dict = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            state = json.loads((bundle / "state.json").read_text())
        return ContainerStatus(
            id=cid,
            name=meta["name"],
            image=meta["image"],
            image_id=meta["image_id"],
            state=state.get("status", "created"),
            pid=int(state.get("pid", 0)),
            exit_code=state.get("exit_code"),
            reason=state.get("reason", ""),
            message=state.get("message", ""),
            created_at=meta["created_at"],
            started_at=int(state.get("started_at", 0)),
            finished_at=int(state.get("finished_at", 0)),
            oom_killed=bool(state.get("oom_killed")),
            log_path=meta["log_path"],
            sandbox_id=meta.get("sandbox_id", ""),
            labels=meta.get("labels", {}),
        )

    def list_containers(self) -> list[ContainerStatus]:
        result = []
        for entry in sorted(self.containers_dir.iterdir()):
            with contextlib.suppress(ContainerNotFound, FileNotFoundError):
                result.append(self.container_status(entry.name))
        return result

    def update_container_resources(self, cid: str, resources: Resources) -> None:
        """Apply new cpu/memory/pids limits to a running container."""
        bundle = self._bundle(cid)
        self._request({"op": "update", "id": cid, "resources": asdict(resources)})
        config = json.loads((bundle / "config.json").read_text())
        config["resources"] = asdict(resources)
        write_private(bundle / "config.json", json.dumps(config))

    def container_stats(self, cid: str) -> dict:
        """Memory bytes, cpu nanoseconds and pid count of a running container."""
        self._bundle(cid)
        return self._request({"op": "stats", "id": cid})["usage"]

    def layers_in_use(self) -> set[str]:
        used: set[str] = set()
        for entry in self.containers_dir.iterdir():
            with contextlib.suppress(FileNotFoundError, ValueError):
                used.update(json.loads((entry / "meta.json").read_text()).get("layers", []))
        return used

    # ---- attach and exec ---------------------------------------------------------------------

    def attach(self, cid: str) -> AttachSession:
        """Connect to a running container's stdio (stdin only if it was created with stdin)."""
        self._bundle(cid)
        channel = _SessionSocket(self._send({"op": "attach", "id": cid}))
        try:
            line = channel.read_line(30.0)  # frames that follow stay in the channel's buffer
        except BaseException:
            channel.close()
            raise
        reply = json.loads(line) if line else {"error": "supervisor closed the connection"}
        if "error" in reply:
            channel.close()
            raise ContainerError(reply["error"])
        return AttachSession(channel, bool(reply.get("tty")), bool(reply.get("stdin")))

    def _exec_pty(self, cid: str) -> tuple[int, int]:
        """The exec session's terminal, from the container's devpts so that ``tty`` names it
        there; the host's pty only if the container has none usable (its own /dev replaced)."""
        import pty

        pid = self.container_status(cid).pid
        if pid > 0:
            with contextlib.suppress(OSError):
                return linux.open_pty_in(pid)
        return pty.openpty()

    def exec(
        self,
        cid: str,
        command: list[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        env: dict[str, str] | None = None,
        user: str | None = None,
        working_dir: str | None = None,
    ) -> ExecSession:
        """Start ``command`` inside a running container, in all its namespaces and cgroup."""
        self._bundle(cid)
        if not command:
            raise ContainerError("exec needs a command")
        config = json.loads((self.containers_dir / cid / "config.json").read_text())
        process: dict[str, Any] = {"args": list(command), "tty": tty}
        if env:
            merged = dict(item.partition("=")[::2] for item in config["process"]["env"])
            merged.update(env)
            process["env"] = [f"{k}={v}" for k, v in merged.items()]
        if user:
            process["user"] = user
        if working_dir:
            process["cwd"] = working_dir
        local: list[int] = []
        if tty:
            master, slave = self._exec_pty(cid)
            child_fds = [slave, slave, slave]
            ours = (master, master, None)
        else:
            in_r, in_w = os.pipe() if stdin else (os.open("/dev/null", os.O_RDONLY), -1)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            child_fds = [in_r, out_w, err_w]
            ours = (in_w if stdin else None, out_r, err_r)
        local = [fd for fd in ours if fd is not None]
        try:
            sock = self._send({"op": "exec", "id": cid, "process": process}, child_fds)
        except BaseException:
            for fd in {*child_fds, *local}:
                os.close(fd)
            raise
        for fd in set(child_fds):
            os.close(fd)
        session = ExecSession(sock, 0, ours[0] if (stdin or tty) else None, ours[1], ours[2], tty)
        try:
            reply = session._read_reply()
        except BaseException:
            session.close()
            raise
        if "error" in reply:
            session.close()
            raise ContainerError(reply["error"])
        session.pid = int(reply["pid"])
        return session

    def exec_sync(
        self, cid: str, command: list[str], *, timeout: float | None = 30.0, input: bytes = b""
    ) -> ExecResult:
        """Run ``command`` to completion; returns its exit code and output."""
        session = self.exec(cid, command, stdin=bool(input))
        try:
            if session.stdin is not None:
                os.write(session.stdin, input)
                session.close_stdin()
            out = {session.stdout: bytearray(), session.stderr: bytearray()}
            deadline = None if timeout is None else time.monotonic() + timeout
            with selectors.DefaultSelector() as sel:
                for fd in out:
                    sel.register(fd, selectors.EVENT_READ)  # type: ignore[arg-type]
                while sel.get_map():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise ContainerError(f"exec {command!r} timed out after {timeout}s")
                    for key, _ in sel.select(remaining):
                        chunk = os.read(key.fd, 65536)
                        if chunk:
                            out[key.fd].extend(chunk)  # type: ignore[index]
                        else:
                            sel.unregister(key.fd)
            remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
            code = session.wait(remaining)
            return ExecResult(code, bytes(out[session.stdout]), bytes(out[session.stderr]))
        finally:
            session.close()
