"""The supervisor: one lean, detached process per data dir that owns every container.

Why one process and not one shim per container: a Python process costs ~8 MB of private
memory, far above the 2 MB-per-container budget, and forking from a small process is fast
(fork cost grows with the parent's size, and k3py itself is large). So k3py starts this script
once with ``python -S -B`` (no site; the stdlib modules imported below plus four small k3py
modules), it daemonises (double fork + setsid) and then:

- listens on ``<data>/supervisor.sock``; each connection carries one JSON request line (file
  descriptors ride along with SCM_RIGHTS: an exec's stdio) and gets JSON reply lines;
- keeps two pre-forked "zygotes": each is pid 1 of a fresh pid namespace (we unshare the pid
  namespace around ``fork`` and ``setns`` back, so it is still our direct child) and has already
  moved itself into a cgroup of its own. At start we rename that cgroup to the container's
  (a container in another parent group, a pod's, has the zygote move itself there instead
  and its empty pool group removed), write the limits and hand the zygote the config and
  stdio; it runs
  ``containerinit.become_container``. The fork and the cgroup move are off the start path
  (a cgroup v2 move into ``cgroup.procs`` costs an RCU grace period, ~10 ms; see cgroups).
  Without a usable zygote (cgroup v2 cannot rename, or it died) we fork the same way on the
  spot; a hostPID container is always forked on the spot, in our own pid namespace. A CLOEXEC error pipe tells us whether the ``execve`` happened or why set-up failed;
- reads the containers' stdout/stderr (pipes, or the master of the pty a tty container
  opened in its own devpts and sent over a console socket) and writes CRI log lines
  ``<RFC3339Nano> stdout|stderr F|P <text>``, rotating by size, and streams them to attached
  clients (framed; stdin and tty resizes flow back);
- reaps children on SIGCHLD and writes each container's ``state.json`` (pid, times, exit code,
  OOM kill read from the cgroup) atomically, so k3py can restart, or be SIGKILLed, without
  losing a container or its exit code: the state lives in files and in this process. We hold
  the container's mount and pid namespaces open until its exit is reported, so their teardown
  (which waits for RCU grace periods) is not on the exit path;
- on its own start, adopts containers a previous supervisor left running (watching them with
  a pidfd; their exit code cannot be learnt, it is recorded as 255/Unknown). Each container
  keeps spare read ends of its stdout/stderr pipes (fds 1021/1022, see containerinit), so
  while no supervisor runs its writes block instead of raising SIGPIPE, and the adopting
  supervisor takes them back with pidfd_getfd and logging resumes where it stopped.

Protocol ops: ping, start, kill, wait, exec, attach, stats, update, forget, sandbox_create,
sandbox_remove, shutdown. The client side is ``k3py.runtime.containers.ContainerRuntime``.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

SOCKET_NAME = "supervisor.sock"
POOL_SIZE = 2
# What this supervisor guarantees, for clients deciding whether an older one must be replaced:
# "devices": every container it starts (or adopts) has its device allowlist.
FEATURES = ("devices",)
JOIN_CGROUP_KEY = "k3py.join_cgroup"  # in a zygote's config: join the container's group itself
# The largest config a zygote takes in its one message (above it, or above what the socket's
# buffer carries, the container is forked on the spot instead).
ZYGOTE_MAX_CONFIG = 1 << 20
POOL_REFILL_IDLE = 0.02  # seconds without events before the zygote pool is refilled
# What this supervisor's containers honour (config "seccomp", namespaces "pid": "host"); k3py
# refuses to create such containers for an older supervisor it had to keep running.
FEATURES = ("seccomp", "host_pid")
_PARTIAL_LIMIT = 16 * 1024  # a line longer than this is logged in P(artial) pieces
_READ_SIZE = 65536


# Attach frames, both directions: 1 byte type + 4 byte big-endian length + payload.
FRAME_STDIN, FRAME_STDOUT, FRAME_STDERR, FRAME_RESIZE, FRAME_EXIT, FRAME_CLOSE_STDIN = range(6)
_FRAME_HEADER = 5


def code_version() -> str:
    """A fingerprint of the code a supervisor runs (this module and what it loads).

    k3py compares it with the running supervisor's: an idle supervisor from an older k3py is
    replaced; one that owns containers is kept until they are gone.
    """
    import hashlib

    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in ("supervisor.py", "containerinit.py", "cgroups.py", "devices.py", "linux.py"):
        with open(os.path.join(here, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + len(payload).to_bytes(4, "big") + payload


def rfc3339nano(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def write_json_atomic(path: str, obj: dict) -> None:
    """Replace ``path`` by ``obj`` as JSON, readable by root only (state files may hold secrets)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: tells a live container from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class CRILog:
    """A container's log file in the CRI format, rotated when it grows past ``max_size``."""

    def __init__(self, path: str, max_size: int, max_files: int) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, tag: str, data: bytes) -> None:
        line = f"{rfc3339nano(time.time_ns())} {stream} {tag} ".encode() + data + b"\n"
        os.write(self.fd, line)
        self.size += len(line)
        if self.max_size and self.size >= self.max_size:
            self.rotate()

    def rotate(self) -> None:
        os.close(self.fd)
        for n in range(self.max_files - 1, 0, -1):
            older = f"{self.path}.{n}"
            if os.path.exists(older):
                if n + 1 >= self.max_files:
                    os.unlink(older)
                else:
                    os.replace(older, f"{self.path}.{n + 1}")
        if self.max_files > 1:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = 0

    def close(self) -> None:
        os.close(self.fd)


class OutputStream:
    """One output fd of a container, split into lines for the log."""

    def __init__(self, log: CRILog, name: str) -> None:
        self.log = log
        self.name = name
        self.pending = b""

    def feed(self, data: bytes) -> None:
        self.pending += data
        while True:
            newline = self.pending.find(b"\n")
            if newline < 0:
                break
            line, self.pending = self.pending[:newline], self.pending[newline + 1 :]
            while len(line) > _PARTIAL_LIMIT:
                self.log.write(self.name, "P", line[:_PARTIAL_LIMIT])
                line = line[_PARTIAL_LIMIT:]
            self.log.write(self.name, "F", line.removesuffix(b"\r"))
        while len(self.pending) >= _PARTIAL_LIMIT:
            self.log.write(self.name, "P", self.pending[:_PARTIAL_LIMIT])
            self.pending = self.pending[_PARTIAL_LIMIT:]

    def finish(self) -> None:
        if self.pending:
            self.log.write(self.name, "F", self.pending)
            self.pending = b""


class Zygote:
    """A pre-forked pid 1 of a fresh pid namespace, already in a cgroup, waiting for a config."""

    def __init__(self, pid: int, sock: socket.socket, cgroup: str) -> None:
        self.pid = pid
        self.sock = sock
        self.cgroup = cgroup


class Container:
    def __init__(self, cid: str, bundle: str, config: dict) -> None:
        self.id = cid
        self.bundle = bundle
        self.config = config
        self.pid = 0
        self.running = False
        self.adopted_pidfd = -1
        self.streams: dict[int, OutputStream] = {}
        self.stdin_fd = -1
        self.tty_master = -1
        self.held_namespaces: list[int] = []
        self.attached: list[socket.socket] = []
        self.log: CRILog | None = None
        self.waiters: list[socket.socket] = []
        self.state: dict = {}

    @property
    def state_path(self) -> str:
        return os.path.join(self.bundle, "state.json")

    def cgroup(self):  # -> Cgroup | None
        from k3py.runtime.cgroups import container_cgroup

        cg = self.config.get("cgroup")
        return container_cgroup(cg) if cg else None

    def prepare_cgroup(self, cg) -> None:  # cg: Cgroup
        """Create the container's group with its limits and its device allowlist; both are in
        force before the container's init is handed its config (or forked)."""
        cg.create(self.config.get("resources") or {})
        cg.restrict_devices((self.config.get("cgroup") or {}).get("devices"))


class Supervisor:
    def __init__(self, data_dir: str, cgroup_parent: str) -> None:
        self.data_dir = data_dir
        self.cgroup_parent = cgroup_parent
        self.version = code_version()
        self.pool: list[Zygote] = []
        self.emptied_pool_groups: list[str] = []  # pool groups zygotes left for another parent
        self.containers_dir = os.path.join(data_dir, "containers")
        os.makedirs(self.containers_dir, mode=0o700, exist_ok=True)
        self.epoll = select.epoll()
        self.handlers: dict[int, object] = {}
        self.containers: dict[str, Container] = {}
        self.execs: dict[int, socket.socket] = {}
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
        self.stopping = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(data_dir, SOCKET_NAME)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self._register(self.listener.fileno(), self._accept)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self._register(self.wake_r, self._on_signal)
        self._adopt_previous()
        self._remove_stale_pool()
        self._refill_pool()

    # ---- event loop --------------------------------------------------------------------------

    def _register(self, fd: int, handler, events: int = select.EPOLLIN) -> None:
        self.handlers[fd] = handler
        self.epoll.register(fd, events)

    def _unregister(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def run(self) -> None:
        while not self.stopping:
            # Also refilled after every start; this catches zygotes lost otherwise.
            refill_due = len(self.pool) < POOL_SIZE
            try:
                events = self.epoll.poll(POOL_REFILL_IDLE if refill_due else 1.0)
            except InterruptedError:
                continue
            if not events and refill_due:
                self._guarded(self._refill_pool)
            for fd, mask in events:
                handler = self.handlers.get(fd)
                if handler is not None:
                    self._guarded(handler, fd, mask)
            self._guarded(self._reap)

    @staticmethod
    def _guarded(call: Callable[..., None], *args: int) -> None:
        """Run one event handler; a bug in it is logged, never fatal: containers depend on us."""
        try:
            call(*args)
        except Exception:
            import traceback

            sys.stderr.write(
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} handler failed:\n"
            )
            traceback.print_exc()
            sys.stderr.flush()

    def _on_signal(self, fd: int, mask: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    # ---- requests ----------------------------------------------------------------------------

    def _accept(self, fd: int, mask: int) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        conn.settimeout(5.0)
        try:
            request, fds = self._read_request(conn)
        except (OSError, ValueError) as exc:
            self._reply(conn, {"error": f"bad request: {exc}"}, close=True)
            return
        conn.settimeout(None)
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            for extra in fds:
                os.close(extra)
            self._reply(conn, {"error": f"unknown op {op!r}"}, close=True)
            return
        try:
            handler(conn, request, fds)
        except Exception as exc:
            for extra in fds:
                try:
                    os.close(extra)
                except OSError:
                    pass
            self._reply(conn, {"error": f"{type(exc).__name__}: {exc}"}, close=True)

    @staticmethod
    def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
        data = b""
        fds: list[int] = []
        while not data.endswith(b"\n"):
            chunk, new_fds, _flags, _addr = socket.recv_fds(conn, 65536, 8)
            for fd in new_fds:
                os.set_inheritable(fd, False)  # SCM_RIGHTS fds arrive without close-on-exec
            fds.extend(new_fds)
            if not chunk:
                raise ValueError("connection closed before a full request")
            data += chunk
        return json.loads(data), fds

    @staticmethod
    def _reply(conn: socket.socket, obj: dict, close: bool = True) -> None:
        try:
            conn.sendall(json.dumps(obj).encode() + b"\n")
        except OSError:
            close = True
        if close:
            conn.close()

    def op_ping(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        running = sorted(c.id for c in self.containers.values() if c.running)
        self._reply(
            conn,
            {
                "ok": True,
                "pid": os.getpid(),
                "running": running,
                "version": self.version,
                "cgroup_parent": self.cgroup_parent,
                "features": list(FEATURES),
            },
        )

    def op_shutdown(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        running = [c.id for c in self.containers.values() if c.running]
        if running and not request.get("force"):
            self._reply(conn, {"error": f"containers still running: {', '.join(running)}"})
            return
        for container in self.containers.values():
            if container.running:
                self._signal(container, signal.SIGKILL)
        self.stopping = True
        self._reply(conn, {"ok": True})

    def _container(self, cid: str) -> Container:
        container = self.containers.get(cid)
        if container is None:
            raise KeyError(f"container {cid} is not known to the supervisor")
        return container

    def op_start(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        cid = request["id"]
        bundle = os.path.join(self.containers_dir, cid)
        config = read_json(os.path.join(bundle, "config.json"))
        if config is None:
            raise KeyError(f"container {cid} has no config (was it created?)")
        existing = self.containers.get(cid)
        if existing is not None and (existing.running or existing.state.get("status") == "exited"):
            raise ValueError(f"container {cid} was already started")
        container = Container(cid, bundle, config)
        self.containers[cid] = container
        self._reply(conn, self._start(container))
        # Refill now, not only when idle: back-to-back starts (a scaled-up Deployment) would
        # otherwise all find the pool empty.
        self._refill_pool()

    def _start(self, container: Container) -> dict:
        from k3py.runtime import containerinit

        config = container.config
        process = config["process"]
        log_cfg = config.get("log") or {}
        container.log = CRILog(
            log_cfg["path"],
            int(log_cfg.get("max_size", 10 << 20)),
            int(log_cfg.get("max_files", 5)),
        )
        cg = container.cgroup()
        tty = bool(process.get("tty"))
        console: socket.socket | None = None
        if tty:
            # The container opens its terminal in its own devpts and sends us the master.
            console, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            child_stdio = [theirs.detach()] * 3
            outputs: dict[int, str] = {}
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            if process.get("stdin"):
                in_r, in_w = os.pipe()
                container.stdin_fd = in_w
            else:
                in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            child_stdio = [in_r, out_w, err_w]
            outputs = {out_r: "stdout", err_r: "stderr"}
        parked = [] if tty else list(outputs)
        err_r_sync, err_w_sync = os.pipe()
        # hostPID: the container stays in our pid namespace, so no zygote (each is pid 1 of its own).
        host_pid = (config.get("namespaces") or {}).get("pid") == "host"
        pid = 0 if host_pid else self._start_in_zygote(container, child_stdio, err_w_sync, parked)
        if pid == 0:

            def child() -> None:
                containerinit.become_container(config, child_stdio, err_w_sync, parked=parked)

            if cg is not None:
                try:
                    container.prepare_cgroup(cg)
                except OSError as exc:
                    # Reported like any set-up failure: through the error pipe, as a StartError.
                    failure = f"cannot set up the container's cgroup: {exc}".encode()

                    def child() -> None:
                        os.write(err_w_sync, failure)

            pid = self._fork_in_new_pidns(child, new_pidns=not host_pid)
        os.close(err_w_sync)
        for fd in set(child_stdio):
            os.close(fd)
        error = b""
        while True:
            chunk = os.read(err_r_sync, 4096)  # EOF: the close-on-exec pipe closed at execve
            if not chunk:
                break
            error += chunk
        os.close(err_r_sync)
        self._prune_pool_groups()
        if console is not None:
            master = self._receive_console(console)
            if master >= 0:
                outputs = {master: "stdout"}
                container.tty_master = master
                container.stdin_fd = master if process.get("stdin") else -1
            elif not error:
                error = b"the container sent no terminal"
        started = time.time_ns()
        container.pid = pid
        container.running = True
        for fd, name in outputs.items():
            os.set_blocking(fd, False)
            container.streams[fd] = OutputStream(container.log, name)
            self._register(fd, self._on_output)
        if error:
            message = error.decode(errors="replace")
            os.waitpid(pid, 0)
            self._drain(container)
            self._finish(container, 128, reason="StartError", message=message)
            return {"error": message, "start_error": True}
        container.state = {
            "status": "running",
            "pid": pid,
            "started_at": started,
            "pid_start_time": process_start_time(pid),
        }
        write_json_atomic(container.state_path, container.state)
        # Holding the namespaces keeps their teardown (unmounting the container's mounts waits
        # for RCU grace periods) out of the container's exit, so its exit code arrives sooner;
        # they are released right after the exit has been reported.
        for kind in ("mnt", "pid"):
            try:
                container.held_namespaces.append(
                    os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                )
            except OSError:
                pass  # already gone: nothing to hold
        return {"ok": True, "pid": pid, "started_at": started}

    @staticmethod
    def _receive_console(console: socket.socket) -> int:
        """The pty master a tty container sent before its execve; -1 if it failed first."""
        try:
            console.settimeout(5.0)  # sent before execve, which has happened (or failed) by now
            _message, fds, _flags, _addr = socket.recv_fds(console, 16, 1)
        except OSError:
            return -1
        finally:
            console.close()
        if not fds:
            return -1
        os.set_inheritable(fds[0], False)
        return fds[0]

    # ---- pre-forked container processes ("zygotes") -----------------------------------------

    def _fork_in_new_pidns(self, child: Callable[[], None], new_pidns: bool = True) -> int:
        """Fork a child that is pid 1 of a new pid namespace (or, with ``new_pidns=False``, in
        ours) and still our direct child."""
        from k3py.runtime import linux

        if new_pidns:
            linux.unshare(linux.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    child()
                finally:
                    os._exit(127)
        finally:
            if new_pidns:
                linux.setns(self.own_pidns, linux.CLONE_NEWPID)
        return pid

    def _refill_pool(self) -> None:
        """Keep ``POOL_SIZE`` zygotes waiting, each already in a cgroup of its own.

        The zygote forks and joins its cgroup ahead of time; at start its cgroup directories
        are renamed to the container's. Only cgroup v1 can rename cgroups, so on v2 containers
        are forked and join at start instead.
        """
        from k3py.runtime.cgroups import Cgroup

        while len(self.pool) < POOL_SIZE and not self.stopping:
            name = "pool-" + os.urandom(6).hex()
            cgroup = Cgroup(self.cgroup_parent, name)
            if not cgroup.renamable:
                return
            cgroup.create({})
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            keep = theirs.fileno()

            def zygote(cgroup: Cgroup = cgroup, keep: int = keep) -> None:
                from k3py.runtime import containerinit, linux

                signal.set_wakeup_fd(-1)
                linux.set_process_name("k3py-zygote")
                os.closerange(3, keep)
                os.closerange(keep + 1, 4096)
                cgroup.join_self()
                # The mount namespace is unshared only at start: until then we share the
                # supervisor's, so volumes and sandbox namespace files mounted later are visible.
                channel = socket.socket(fileno=keep)
                channel.send(b"ready")  # only now may the supervisor rename our cgroup
                message, fds, flags, _addr = socket.recv_fds(channel, ZYGOTE_MAX_CONFIG, 8)
                if not message or flags & socket.MSG_TRUNC:
                    os._exit(0)  # the pool is being emptied (a truncated config is never run)
                for fd in fds:
                    os.set_inheritable(fd, False)  # SCM_RIGHTS fds arrive without close-on-exec
                config = json.loads(message)
                join = bool(config.pop(JOIN_CGROUP_KEY, False))
                containerinit.become_container(
                    config, fds[:3], fds[3], join_cgroup=join, parked=fds[4:]
                )

            pid = self._fork_in_new_pidns(zygote)
            theirs.close()
            self.pool.append(Zygote(pid, ours, name))

    def _start_in_zygote(
        self, container: Container, stdio: list[int], err_w: int, parked: list[int]
    ) -> int:
        """Hand the container to a waiting zygote; its pid, or 0 when none is available."""
        from k3py.runtime.cgroups import Cgroup

        cg = container.cgroup()
        if len(json.dumps(container.config)) > ZYGOTE_MAX_CONFIG - 1024:
            return 0  # too big for one message (a large environment): forked on the spot
        while self.pool and cg is not None and cg.renamable:
            zygote = self.pool.pop(0)
            try:
                zygote.sock.settimeout(2.0)  # a zygote forked a moment ago may still be joining
                if zygote.sock.recv(16) != b"ready":
                    raise OSError("zygote died before it was ready")
                zygote.sock.settimeout(None)
                config = container.config
                if os.path.dirname(cg.relative) == self.cgroup_parent.strip("/"):
                    Cgroup(self.cgroup_parent, zygote.cgroup).rename_to(cg)
                    container.prepare_cgroup(cg)
                else:
                    # A rename cannot move a group to another parent (a pod's group): the zygote
                    # moves itself, which is as cheap (it writes "0"), and leaves its pool group
                    # empty for ``_prune_pool_groups`` once it has started.
                    container.prepare_cgroup(cg)
                    config = {**config, JOIN_CGROUP_KEY: True}
                    self.emptied_pool_groups.append(zygote.cgroup)
                socket.send_fds(zygote.sock, [json.dumps(config).encode()], [*stdio, err_w, *parked])
                return zygote.pid
            except OSError as exc:
                sys.stderr.write(f"zygote {zygote.pid} unusable, discarded: {exc}\n")
                self._discard_zygote(zygote)
            finally:
                zygote.sock.close()
        return 0

    def _prune_pool_groups(self) -> None:
        """Remove the pool groups zygotes have moved out of (they are empty once it started)."""
        from k3py.runtime.cgroups import prune_empty

        while self.emptied_pool_groups:
            prune_empty(self.cgroup_parent, self.emptied_pool_groups.pop())

    def _remove_stale_pool(self, patience: float = 2.0) -> None:
        """Remove the pool groups a killed supervisor of this data dir left (its zygotes exit
        when it does: their socket closes). Only empty groups are removed, after waiting up to
        ``patience`` seconds for exiting zygotes; a group with live processes is never touched:
        it is not ours (another runtime told to use the same parent) and killing them would
        break that runtime."""
        from k3py.runtime.cgroups import Cgroup

        parent = Cgroup(self.cgroup_parent, "")
        names: set[str] = set()
        for directory in parent.dirs.values():
            if os.path.isdir(directory):
                names.update(n for n in os.listdir(directory) if n.startswith("pool-"))
        deadline = time.monotonic() + patience
        for name in sorted(names):
            group = Cgroup(self.cgroup_parent, name)
            while True:
                busy = False
                for directory in group.dirs.values():
                    try:
                        os.rmdir(directory)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        busy = True
                if not busy or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if busy:
                sys.stderr.write(f"pool cgroup {name} still has processes: left alone\n")

    def _discard_zygote(self, zygote: Zygote) -> None:
        from k3py.runtime.cgroups import Cgroup

        try:
            os.kill(zygote.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(zygote.pid, 0)
        except ChildProcessError:
            pass
        cgroup = Cgroup(self.cgroup_parent, zygote.cgroup)
        if cgroup.exists():
            cgroup.remove()

    def drain_pool(self) -> None:
        while self.pool:
            zygote = self.pool.pop()
            zygote.sock.close()
            self._discard_zygote(zygote)

    def _on_output(self, fd: int, mask: int) -> None:
        for container in self.containers.values():
            stream = container.streams.get(fd)
            if stream is not None:
                self._read_stream(container, fd, stream)
                return
        self._unregister(fd)

    def _read_stream(self, container: Container, fd: int, stream: OutputStream) -> None:
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the pty's last slave closed
                    raise
                data = b""
            if not data:
                stream.finish()
                self._unregister(fd)
                del container.streams[fd]
                if fd == container.stdin_fd:
                    container.stdin_fd = -1
                if fd == container.tty_master:
                    container.tty_master = -1
                os.close(fd)
                return
            stream.feed(data)
            if container.attached:
                kind = FRAME_STDOUT if stream.name == "stdout" else FRAME_STDERR
                for conn in list(container.attached):
                    try:
                        conn.sendall(frame(kind, data))
                    except OSError:
                        self._detach(container, conn)  # a stuck or gone client loses its attach

    def _drain(self, container: Container) -> None:
        for fd, stream in list(container.streams.items()):
            self._read_stream(container, fd, stream)

    def _signal(self, container: Container, sig: int) -> None:
        try:
            if container.adopted_pidfd >= 0:
                signal.pidfd_send_signal(container.adopted_pidfd, sig)
            else:
                os.kill(container.pid, sig)
        except ProcessLookupError:
            pass

    def op_kill(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        container = self._container(request["id"])
        if container.running:
            self._signal(container, int(request.get("signal", signal.SIGTERM)))
        self._reply(conn, {"ok": True, "running": container.running})

    def op_wait(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        container = self.containers.get(request["id"])
        if container is None or not container.running:
            state = read_json(os.path.join(self.containers_dir, request["id"], "state.json")) or {}
            self._reply(conn, {"ok": True, "state": state})
            return
        container.waiters.append(conn)

    def op_stats(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        container = self._container(request["id"])
        cg = container.cgroup()
        self._reply(conn, {"ok": True, "usage": cg.usage() if cg else {}})

    def op_update(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """New resource limits for a running container (CRI UpdateContainerResources)."""
        container = self._container(request["id"])
        cg = container.cgroup()
        if not container.running or cg is None:
            raise ValueError(f"container {container.id} is not running")
        cg.create(request.get("resources") or {})
        container.config["resources"] = request.get("resources") or {}
        self._reply(conn, {"ok": True})

    def op_forget(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """Drop a container that has exited (the client removes its files)."""
        container = self.containers.get(request["id"])
        if container is not None:
            if container.running:
                raise ValueError(f"container {container.id} is still running")
            self._release(container)
            del self.containers[container.id]
        self._reply(conn, {"ok": True})

    def op_attach(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """Stream the container's output to ``conn`` and its input frames to the container."""
        container = self._container(request["id"])
        if not container.running or container.adopted_pidfd >= 0:
            raise ValueError(f"container {container.id} is not running under this supervisor")
        tty = bool(container.config["process"].get("tty"))
        self._reply(conn, {"ok": True, "tty": tty, "stdin": container.stdin_fd >= 0}, close=False)
        conn.settimeout(2.0)
        container.attached.append(conn)
        buffer = bytearray()

        def on_input(fd: int, mask: int) -> None:
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._detach(container, conn)
                return
            buffer.extend(data)
            while len(buffer) >= _FRAME_HEADER:
                size = int.from_bytes(buffer[1:5], "big")
                if len(buffer) < _FRAME_HEADER + size:
                    break
                kind, payload = buffer[0], bytes(buffer[_FRAME_HEADER : _FRAME_HEADER + size])
                del buffer[: _FRAME_HEADER + size]
                self._attach_input(container, kind, payload)

        self._register(conn.fileno(), on_input)

    def _attach_input(self, container: Container, kind: int, payload: bytes) -> None:
        import fcntl
        import struct
        import termios

        if kind == FRAME_STDIN and container.stdin_fd >= 0:
            os.write(container.stdin_fd, payload)
        elif kind == FRAME_CLOSE_STDIN and container.stdin_fd >= 0:
            if container.stdin_fd == container.tty_master:
                os.write(container.stdin_fd, b"\x04")  # end of input on a terminal
            else:
                os.close(container.stdin_fd)
                container.stdin_fd = -1
        elif kind == FRAME_RESIZE and container.tty_master >= 0 and len(payload) == 4:
            rows, cols = struct.unpack(">HH", payload)
            fcntl.ioctl(
                container.tty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0)
            )

    def _detach(self, container: Container, conn: socket.socket) -> None:
        if conn in container.attached:
            container.attached.remove(conn)
        self._unregister(conn.fileno())
        conn.close()

    def op_exec(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        from k3py.runtime import containerinit, linux

        container = self._container(request["id"])
        if not container.running:
            raise ValueError(f"container {container.id} is not running")
        if len(fds) != 3:
            raise ValueError("exec needs three stdio descriptors")
        process = dict(container.config["process"])
        process.update(request.get("process") or {})
        ns_fds = {
            kind: os.open(f"/proc/{container.pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            for kind in ("net", "ipc", "uts", "mnt", "pid")
        }
        err_r, err_w = os.pipe()
        linux.setns(ns_fds["pid"], linux.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                containerinit.exec_in_container(container.config, ns_fds, process, fds, err_w)
                os._exit(127)
        finally:
            linux.setns(self.own_pidns, linux.CLONE_NEWPID)
        for fd in (*ns_fds.values(), *fds, err_w):
            os.close(fd)
        error = b""
        while chunk := os.read(err_r, 4096):
            error += chunk
        os.close(err_r)
        if error:
            os.waitpid(pid, 0)
            self._reply(conn, {"error": error.decode(errors="replace")})
            return
        self._reply(conn, {"ok": True, "pid": pid}, close=False)
        self.execs[pid] = conn

        def on_client(fd: int, mask: int) -> None:
            # The client sends nothing after its request: readable means it hung up (or broke
            # the protocol). Its stdio is gone with it, so the process is killed, as containerd
            # kills an exec whose stream ended; the reap below still answers nobody.
            try:
                data = conn.recv(1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                return
            self._unregister(fd)
            if self.execs.get(pid) is conn:
                try:
                    os.kill(pid, signal.SIGKILL)  # our unreaped child: the pid cannot be reused
                except ProcessLookupError:
                    pass

        self._register(conn.fileno(), on_client)

    # ---- sandboxes ---------------------------------------------------------------------------

    def op_sandbox_create(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        from k3py.runtime import linux

        path = request["path"]
        kinds = [
            k for k in request.get("kinds", ["net", "ipc", "uts"]) if k in ("net", "ipc", "uts")
        ]
        flags = 0
        for kind in kinds:
            flags |= {
                "net": linux.CLONE_NEWNET,
                "ipc": linux.CLONE_NEWIPC,
                "uts": linux.CLONE_NEWUTS,
            }[kind]
        os.makedirs(path, exist_ok=True)
        if not kinds:
            self._reply(conn, {"ok": True})
            return
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                os.close(hold_w)
                linux.unshare(flags)
                if request.get("hostname") and "uts" in kinds:
                    linux.sethostname(request["hostname"])
                if "net" in kinds:
                    linux.bring_loopback_up()
                os.write(ready_w, b"ok")
                os.read(hold_r, 1)
            except BaseException as exc:
                os.write(ready_w, f"error {exc}".encode())
            os._exit(0)
        os.close(ready_w)
        os.close(hold_r)
        answer = os.read(ready_r, 4096)
        os.close(ready_r)
        mounted: list[str] = []
        try:
            if answer != b"ok":
                raise OSError(answer.decode(errors="replace"))
            for kind in kinds:
                target = os.path.join(path, kind)
                with open(target, "a"):
                    pass
                linux.mount(f"/proc/{pid}/ns/{kind}", target, None, linux.MS_BIND)
                mounted.append(target)
        except BaseException:
            for target in mounted:
                linux.umount2(target, linux.MNT_DETACH)
            raise
        finally:
            os.close(hold_w)
            os.waitpid(pid, 0)
        self._reply(conn, {"ok": True})

    def op_sandbox_remove(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        from k3py.runtime import linux

        path = request["path"]
        for kind in ("net", "ipc", "uts"):
            target = os.path.join(path, kind)
            try:
                linux.umount2(target, linux.MNT_DETACH)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
        self._reply(conn, {"ok": True})

    # ---- exits -------------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code  # killed by signal N: 128+N, as shells and the CRI report it
            conn = self.execs.pop(pid, None)
            if conn is not None:
                if conn.fileno() >= 0:
                    self._unregister(conn.fileno())
                self._reply(conn, {"exit_code": code})
                continue
            for container in self.containers.values():
                if container.running and container.pid == pid:
                    self._drain(container)
                    self._finish(container, code)
                    break

    def _finish(self, container: Container, code: int, reason: str = "", message: str = "") -> None:
        cg = container.cgroup()
        oom = bool(cg and cg.oom_killed())
        if not reason:
            reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        container.running = False
        container.state = dict(container.state)
        container.state.update(
            {
                "status": "exited",
                "exit_code": code,
                "finished_at": time.time_ns(),
                "reason": reason,
                "message": message,
                "oom_killed": oom,
            }
        )
        container.state.setdefault("pid", container.pid)
        write_json_atomic(container.state_path, container.state)
        for waiter in container.waiters:
            self._reply(waiter, {"ok": True, "state": container.state})
        container.waiters = []
        for conn in list(container.attached):
            try:
                conn.sendall(frame(FRAME_EXIT, json.dumps(container.state).encode()))
            except OSError:
                pass
            self._detach(container, conn)
        if cg is not None:
            try:
                cg.remove()  # after the waiters heard: rmdir of four v1 groups takes milliseconds
            except OSError:
                pass  # removed again (and reported) when the container is removed
        if container.stdin_fd >= 0 and container.stdin_fd not in container.streams:
            os.close(container.stdin_fd)
            container.stdin_fd = -1
        if container.adopted_pidfd >= 0:
            self._unregister(container.adopted_pidfd)
            os.close(container.adopted_pidfd)
            container.adopted_pidfd = -1
        for fd in container.held_namespaces:
            os.close(fd)
        container.held_namespaces = []

    def _release(self, container: Container) -> None:
        for fd, stream in list(container.streams.items()):
            stream.finish()
            self._unregister(fd)
            os.close(fd)
        container.streams.clear()
        if container.log is not None:
            container.log.close()
            container.log = None

    def _adopt_previous(self) -> None:
        """Containers a previous supervisor started: adopt the live ones, settle the dead ones."""
        for cid in sorted(os.listdir(self.containers_dir)):
            bundle = os.path.join(self.containers_dir, cid)
            state = read_json(os.path.join(bundle, "state.json"))
            config = read_json(os.path.join(bundle, "config.json"))
            if not state or not config or state.get("status") != "running":
                continue
            container = Container(cid, bundle, config)
            container.state = state
            container.pid = int(state["pid"])
            self.containers[cid] = container
            alive = process_start_time(container.pid) == state.get("pid_start_time")
            if alive:
                try:
                    container.adopted_pidfd = os.pidfd_open(container.pid)
                except OSError:
                    alive = False
            if alive:
                container.running = True
                self._register(container.adopted_pidfd, self._on_adopted_exit)
                self._reclaim_output(container)
                self._confine_devices(container)
            else:
                container.running = True
                self._finish(
                    container,
                    255,
                    reason="Unknown",
                    message="exited while no supervisor was running",
                )

    def _confine_devices(self, container: Container) -> None:
        """Give a container an older k3py started (its config has no device rules) the device
        allowlist now: its group gets the rules and, on v1, its processes move into a new
        device group. Descriptors it opened before keep working; new opens are checked."""
        from k3py.runtime import devices
        from k3py.runtime.cgroups import Cgroup

        spec = container.config.get("cgroup")
        if not spec or "devices" in spec:
            return
        rules = devices.container_rules(bool(container.config.get("privileged")))
        legacy = Cgroup(spec["parent"], spec["name"], devices=False)
        cg = Cgroup(spec["parent"], spec["name"])
        try:
            if not cg.v2 and "devices" in cg.dirs:
                os.makedirs(cg.dirs["devices"], exist_ok=True)
            cg.restrict_devices(rules)
            if not cg.v2 and "devices" in cg.dirs:
                for pid in legacy.pids():
                    try:
                        with open(os.path.join(cg.dirs["devices"], "cgroup.procs"), "w") as f:
                            f.write(str(pid))
                    except ProcessLookupError:
                        pass  # exited meanwhile
        except OSError as exc:
            sys.stderr.write(f"cannot apply device rules to adopted container {container.id}: {exc}\n")
            return
        container.config["cgroup"] = {**spec, "devices": rules}
        write_json_atomic(os.path.join(container.bundle, "config.json"), container.config)

    def _reclaim_output(self, container: Container) -> None:
        """Take back the read ends of an adopted container's output pipes and log again."""
        from k3py.runtime import containerinit, linux

        log_cfg = container.config.get("log") or {}
        if container.config["process"].get("tty") or not log_cfg.get("path"):
            return
        for target, name in zip(containerinit.PARKED_OUTPUT_FDS, ("stdout", "stderr"), strict=True):
            try:
                fd = linux.pidfd_getfd(container.adopted_pidfd, target)
            except OSError:
                continue  # the container closed it: that stream is lost
            if container.log is None:
                container.log = CRILog(
                    log_cfg["path"],
                    int(log_cfg.get("max_size", 10 << 20)),
                    int(log_cfg.get("max_files", 5)),
                )
            os.set_blocking(fd, False)
            container.streams[fd] = OutputStream(container.log, name)
            self._register(fd, self._on_output)

    def _on_adopted_exit(self, fd: int, mask: int) -> None:
        for container in self.containers.values():
            if container.adopted_pidfd == fd:
                self._finish(
                    container,
                    255,
                    reason="Unknown",
                    message="exit code unknown: adopted from a previous supervisor",
                )
                return


def main(argv: list[str]) -> int:
    """``supervisor.py DATA_DIR CGROUP_PARENT`` — daemonise, then serve until shut down."""
    data_dir = os.path.abspath(argv[1])
    cgroup_parent = argv[2] if len(argv) > 2 else "k3py"
    os.umask(0o022)
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        answer = os.read(ready_r, 4096)  # wait until the daemon listens, so callers can connect
        sys.stdout.write(answer.decode(errors="replace"))
        return 0 if answer.startswith(b"ok") else 1
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    log_fd = os.open(
        os.path.join(data_dir, "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
    )
    os.dup2(log_fd, 2)
    try:
        from k3py.runtime import linux

        linux.set_process_name("k3py-supervise")
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(
                    "-999"
                )  # as containerd's shims: the OOM killer should pick a container, not us
        except PermissionError:
            sys.stderr.write("this host does not let us lower our oom_score_adj; left as it is\n")
        supervisor = Supervisor(data_dir, cgroup_parent)
    except BaseException as exc:
        os.write(ready_w, f"error {exc}".encode())
        return 1
    os.write(ready_w, f"ok {os.getpid()}".encode())
    os.close(ready_w)
    supervisor.run()
    supervisor.drain_pool()
    try:
        os.unlink(os.path.join(data_dir, SOCKET_NAME))
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    sys.exit(main(sys.argv))
