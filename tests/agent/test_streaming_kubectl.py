"""Real kubectl 1.32 against the streaming handlers: exec (WebSocket and SPDY) and port-forward.

The API server does not proxy to kubelets yet, so the test serves a minimal API endpoint on
loopback: /version, legacy discovery, one Running pod, and the pods/x/exec|attach|portforward
subresources handed straight to `StreamingHandlers` — exactly what a proxy would deliver after
the upgrade. The backend runs host processes (`sh -c ...`) and dials loopback ports, so every
byte kubectl sees went through our SPDY/WebSocket code and a real process or socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import shutil
import struct
import termios
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

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
from k3py.agent.streaming.server import StreamingHandlers
from k3py.agent.streaming.spdy_frames import HEADER_DICTIONARY, FrameDecoder, SynStreamFrame
from k3py.agent.streaming.spdy_session import SpdySession
from k3py.agent.streaming.transport import ByteTransport
from k3py.agent.streaming.upgrade import accept_spdy

KUBECTL_TIMEOUT = 60.0
POD = "x"
CONTAINER = "c"


async def pipe_input(source: InputStream | None, sink: asyncio.StreamWriter | None) -> None:
    if sink is None:
        return
    try:
        if source is not None:
            while data := await source.read():
                sink.write(data)
                await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            if sink.can_write_eof():
                sink.write_eof()
            else:
                sink.close()


async def pipe_output(source: asyncio.StreamReader | None, sink: OutputStream | None) -> None:
    if source is None:
        return
    while data := await source.read(65536):
        if sink is not None:
            await sink.write(data)


class HostProcessBackend(StreamingBackend):
    """Runs commands on the test host and forwards to loopback ports: the real thing, no pods."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def resolve(self, pod: PodRef, container: str | None) -> None:
        if pod.name != POD or container not in (None, CONTAINER):
            raise NotFoundError(f'container "{container}" in pod "{pod.name}" not found')

    async def exec(
        self, pod: PodRef, container: str, command: list[str], streams: ExecStreams
    ) -> int:
        if streams.tty:
            return await self._exec_on_terminal(command, streams)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if streams.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.processes.append(process)
        # The command may end before the client closes stdin: its exit ends the exec.
        feeding = asyncio.create_task(pipe_input(streams.stdin, process.stdin))
        try:
            await asyncio.gather(
                pipe_output(process.stdout, streams.stdout),
                pipe_output(process.stderr, streams.stderr),
            )
            return await process.wait()
        finally:
            feeding.cancel()
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def _exec_on_terminal(self, command: list[str], streams: ExecStreams) -> int:
        """Run on a pseudo-terminal sized by the client; later resizes are applied too."""
        first = await asyncio.wait_for(streams.resize.get(), KUBECTL_TIMEOUT)
        master, slave = pty.openpty()
        if first is not None:
            set_terminal_size(slave, first.height, first.width)
        process = await asyncio.create_subprocess_exec(
            *command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        self.processes.append(process)
        os.close(slave)
        output: asyncio.Queue[bytes] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last user is gone
                data = b""
            if not data:
                loop.remove_reader(master)
            output.put_nowait(data)

        async def to_client() -> None:
            while data := await output.get():
                assert streams.stdout is not None
                await streams.stdout.write(data)

        async def from_client() -> None:
            while streams.stdin is not None and (data := await streams.stdin.read()):
                os.write(master, data)

        async def resizes() -> None:
            while (size := await streams.resize.get()) is not None:
                set_terminal_size(master, size.height, size.width)

        loop.add_reader(master, readable)
        helpers = [asyncio.create_task(from_client()), asyncio.create_task(resizes())]
        try:
            await to_client()
            return await process.wait()
        finally:
            for helper in helpers:
                helper.cancel()
            loop.remove_reader(master)
            os.close(master)
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def attach(self, pod: PodRef, container: str, streams: ExecStreams) -> None:
        # Stands in for a container's main process: answers its input in upper case.
        assert streams.stdout is not None and streams.stdin is not None
        while data := await streams.stdin.read():
            await streams.stdout.write(data.upper())

    async def port_forward(
        self, pod: PodRef, port: int, reader: InputStream, writer: OutputStream
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            raise StreamingError(
                f"dial tcp 127.0.0.1:{port}: connect: connection refused ({exc})"
            ) from exc
        try:
            await asyncio.gather(
                pipe_input(reader, upstream_writer), pipe_output(upstream_reader, writer)
            )
        finally:
            upstream_writer.close()

    async def logs(
        self, pod: PodRef, container: str, options: LogOptions, out: OutputStream
    ) -> None:
        lines = [f"{container} log line {n}\n".encode() for n in range(10)]
        for line in lines[-options.tail_lines :] if options.tail_lines else lines:
            await out.write(line)


def set_terminal_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def pod_json(port: int) -> dict[str, object]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": POD,
            "namespace": "default",
            "uid": "0b5f1c2e-1111-4222-8333-944455556666",
        },
        "spec": {
            "containers": [
                {"name": CONTAINER, "image": "busybox", "ports": [{"containerPort": port}]}
            ]
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": CONTAINER, "ready": True, "state": {"running": {}}}],
        },
    }


def api_resource_list() -> dict[str, object]:
    def resource(name: str, kind: str, verbs: list[str]) -> dict[str, object]:
        return {"name": name, "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs}

    return {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            resource("pods", "Pod", ["get", "list"])
            | {"shortNames": ["po"], "singularName": "pod"},
            resource("pods/exec", "PodExecOptions", ["create", "get"]),
            resource("pods/attach", "PodAttachOptions", ["create", "get"]),
            resource("pods/portforward", "PodPortForwardOptions", ["create", "get"]),
            resource("pods/log", "Pod", ["get"]),
        ],
    }


@dataclass
class FakeApi:
    url: str
    kubeconfig: Path
    cache_dir: Path
    backend: HostProcessBackend
    captured_spdy: list[bytes]
    upgrades: list[str]  # the Upgrade header of every streaming request, in order
    minor: list[int]  # the Kubernetes minor version /version reports (mutable before kubectl runs)


def container_of(request: web.Request) -> str:
    # Like the API server: a pod with one container needs no container parameter.
    return request.query.get("container") or CONTAINER


def build_api(
    backend: HostProcessBackend, captured: list[bytes], upgrades: list[str], minor: list[int]
) -> web.Application:
    handlers = StreamingHandlers(backend)
    pod_path = f"/api/v1/namespaces/default/pods/{POD}"

    async def version(request: web.Request) -> web.Response:
        # The kubectl dispatcher runs the kubectl of this minor version.
        version = {"major": "1", "minor": str(minor[0]), "gitVersion": f"v1.{minor[0]}.0"}
        return web.json_response(version | {"platform": "linux/amd64"})

    async def api(request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        )

    async def apis(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def api_v1(request: web.Request) -> web.Response:
        return web.json_response(api_resource_list())

    async def get_pod(request: web.Request) -> web.Response:
        return web.json_response(pod_json(80))

    async def pod_exec(request: web.Request) -> web.StreamResponse:
        upgrades.append(request.headers.get("Upgrade", ""))
        if request.query.get("command") == "capture-spdy":
            return await capture_spdy(request, captured)
        return await handlers.exec(request, PodRef("default", POD), container_of(request))

    async def pod_attach(request: web.Request) -> web.StreamResponse:
        return await handlers.attach(request, PodRef("default", POD), container_of(request))

    async def pod_log(request: web.Request) -> web.StreamResponse:
        return await handlers.logs(request, PodRef("default", POD), container_of(request))

    async def pod_port_forward(request: web.Request) -> web.StreamResponse:
        upgrades.append(request.headers.get("Upgrade", ""))
        return await handlers.port_forward(request, PodRef("default", POD))

    app = web.Application()
    app.router.add_get("/version", version)
    app.router.add_get("/api", api)
    app.router.add_get("/apis", apis)
    app.router.add_get("/api/v1", api_v1)
    app.router.add_get(pod_path, get_pod)
    app.router.add_get(pod_path + "/log", pod_log)
    for method in ("GET", "POST"):
        app.router.add_route(method, pod_path + "/exec", pod_exec)
        app.router.add_route(method, pod_path + "/attach", pod_attach)
        app.router.add_route(method, pod_path + "/portforward", pod_port_forward)
    return app


class RecordingTransport:
    """Passes bytes through to a SPDY session, keeping a copy of everything the client sent."""

    def __init__(self, inner: ByteTransport) -> None:
        self.inner = inner
        self.received = bytearray()

    async def read(self) -> bytes:
        data = await self.inner.read()
        self.received += data
        return data

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def close(self) -> None:
        await self.inner.close()


async def capture_spdy(request: web.Request, captured: list[bytes]) -> web.StreamResponse:
    """Accept kubectl's SPDY upgrade, answer its streams, and record the raw bytes it sent."""
    if request.headers.get("Upgrade", "").lower() != "spdy/3.1":
        return web.json_response({"kind": "Status", "status": "Failure", "code": 400}, status=400)
    _protocol, transport, response = await accept_spdy(request, ("v5.channel.k8s.io",))
    recorder = RecordingTransport(transport)
    async with SpdySession(recorder) as session:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                for _ in range(3):  # error, stdout, stderr
                    await session.accept()
    captured.append(bytes(recorder.received))
    return response


@pytest.fixture
async def fake_api(tmp_path: Path) -> AsyncIterator[FakeApi]:
    assert shutil.which("kubectl"), "kubectl must be installed (scripts/install-test-deps)"
    backend = HostProcessBackend()
    captured: list[bytes] = []
    upgrades: list[str] = []
    minor = [32]
    runner = web.AppRunner(build_api(backend, captured, upgrades, minor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: t, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: test}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: u, namespace: default}}]\n"
        "current-context: t\n"
    )
    try:
        yield FakeApi(url, kubeconfig, tmp_path / "cache", backend, captured, upgrades, minor)
    finally:
        await runner.cleanup()
        for process in backend.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


async def kubectl(
    api: FakeApi, *args: str, stdin: bytes | None = None, websockets: bool | None = True
) -> Result:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(api.kubeconfig)
    env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
    env.pop("KUBECTL_PORT_FORWARD_WEBSOCKETS", None)
    if websockets is not None:  # None: each kubectl version's default
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "true" if websockets else "false"
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "true" if websockets else "false"
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--cache-dir={api.cache_dir}",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), KUBECTL_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return Result(process.returncode or 0, out.decode(), err.decode())


TRANSPORTS = [pytest.param(True, id="websocket"), pytest.param(False, id="spdy")]


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_exec_output_streams_and_success(fake_api: FakeApi, websockets: bool) -> None:
    result = await kubectl(
        fake_api,
        "exec",
        POD,
        "-c",
        CONTAINER,
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
        websockets=websockets,
    )
    assert (result.code, result.stdout, result.stderr) == (0, "to-out\n", "to-err\n")
    assert fake_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_exec_exit_code_is_propagated(fake_api: FakeApi, websockets: bool) -> None:
    result = await kubectl(
        fake_api, "exec", POD, "--", "sh", "-c", "echo partial; exit 3", websockets=websockets
    )
    assert result.code == 3
    assert result.stdout == "partial\n"
    assert "command terminated with exit code 3" in result.stderr
    assert fake_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_exec_stdin_reaches_the_process_and_eof_ends_it(
    fake_api: FakeApi, websockets: bool
) -> None:
    payload = "".join(f"line {n}\n" for n in range(2000))  # ~20 KB, several frames
    result = await kubectl(
        fake_api,
        "exec",
        "-i",
        POD,
        "--",
        "sh",
        "-c",
        "wc -l; cat",
        stdin=payload.encode(),
        websockets=websockets,
    )
    assert result.code == 0, result.stderr
    # wc consumes all of stdin, so it only finishes once stdin's EOF arrived.
    assert result.stdout.strip() == "2000"
    assert fake_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]


async def kubectl_on_terminal(
    api: FakeApi, *args: str, rows: int, columns: int, websockets: bool
) -> tuple[int, str]:
    """Run kubectl with a pseudo-terminal as stdin/stdout (as a user at a shell would)."""
    master, slave = pty.openpty()
    set_terminal_size(slave, rows, columns)
    env = dict(os.environ, KUBECONFIG=str(api.kubeconfig))
    env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "true" if websockets else "false"
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--cache-dir={api.cache_dir}",
        *args,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
        chunks.put_nowait(data)

    loop.add_reader(master, readable)
    output = b""
    try:
        async with asyncio.timeout(KUBECTL_TIMEOUT):
            while data := await chunks.get():
                output += data
            code = await process.wait()
    finally:
        loop.remove_reader(master)
        os.close(master)
        if process.returncode is None:
            process.kill()
            await process.wait()
    return code, output.decode(errors="replace")


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_exec_with_terminal_gets_the_client_terminal_size(
    fake_api: FakeApi, websockets: bool
) -> None:
    code, output = await kubectl_on_terminal(
        fake_api,
        "exec",
        "-it",
        POD,
        "--",
        "sh",
        "-c",
        "stty size; exit 4",
        rows=33,
        columns=101,
        websockets=websockets,
    )
    assert "33 101" in output
    assert code == 4
    assert fake_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_attach_with_stdin(fake_api: FakeApi, websockets: bool) -> None:
    result = await kubectl(
        fake_api,
        "attach",
        "-i",
        POD,
        "-c",
        CONTAINER,
        stdin=b"hello attach\n",
        websockets=websockets,
    )
    assert result.code == 0, result.stderr
    assert result.stdout == "HELLO ATTACH\n"


async def test_logs_tail(fake_api: FakeApi) -> None:
    result = await kubectl(fake_api, "logs", POD, "-c", CONTAINER, "--tail=2")
    assert (result.code, result.stdout) == (0, "c log line 8\nc log line 9\n")


async def test_exec_unknown_container_is_reported(fake_api: FakeApi) -> None:
    result = await kubectl(fake_api, "exec", POD, "-c", "nope", "--", "true")
    assert result.code != 0
    assert 'container "nope" in pod "x" not found' in result.stderr


async def test_spdy_header_block_from_kubectl_decodes_with_the_dictionary(
    fake_api: FakeApi,
) -> None:
    result = await kubectl(fake_api, "exec", POD, "--", "capture-spdy", websockets=False)
    # The capture endpoint hangs up without a Status; kubectl (like upstream) takes that as success.
    assert (result.code, result.stdout) == (0, "")
    assert fake_api.captured_spdy, result.stderr
    raw = fake_api.captured_spdy[0]
    # Independently of our decoder: the first frame is a SYN_STREAM (0x8003 0x0001) whose header
    # block, after the 10 bytes of ids/priority, is a zlib stream using the SPDY/3 dictionary.
    assert raw[:4] == bytes.fromhex("80030001")
    length = int.from_bytes(raw[5:8], "big")
    block = zlib.decompressobj(zdict=HEADER_DICTIONARY).decompress(raw[18 : 8 + length])
    assert b"streamtype" in block and b"error" in block
    # And our decoder, with its one shared zlib context, reads every stream kubectl opened.
    frames = [f for f in FrameDecoder().feed(raw) if isinstance(f, SynStreamFrame)]
    assert sorted(f.headers["streamtype"][0] for f in frames) == ["error", "stderr", "stdout"]
    assert [f.stream_id for f in frames] == [1, 3, 5]


@pytest.fixture
async def upper_echo_port() -> AsyncIterator[int]:
    """A loopback TCP service answering every line with its upper-case version."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def start_port_forward(
    api: FakeApi, remote: int, websockets: bool | None
) -> tuple[asyncio.subprocess.Process, int]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(api.kubeconfig)
    env.pop("KUBECTL_PORT_FORWARD_WEBSOCKETS", None)
    if websockets is not None:  # None: the kubectl version's default
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "true" if websockets else "false"
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--cache-dir={api.cache_dir}",
        "port-forward",
        "--address=127.0.0.1",
        f"pod/{POD}",
        f":{remote}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), KUBECTL_TIMEOUT)
    match = re.match(rb"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
    assert match, line
    return process, int(match.group(1))


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_port_forward_carries_tcp_both_ways(
    fake_api: FakeApi, upper_echo_port: int, websockets: bool
) -> None:
    process, local_port = await start_port_forward(fake_api, upper_echo_port, websockets)
    try:
        for attempt in range(2):  # two connections: two stream pairs on one SPDY session
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            body = f"hello {attempt} ".encode() * 5000 + b"\n"  # 45 KB
            writer.write(body)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(body)), 20) == body.upper()
            writer.close()
            await writer.wait_closed()
        assert fake_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]
    finally:
        with contextlib.suppress(ProcessLookupError):  # kubectl may have exited by itself
            process.terminate()
        await process.wait()


async def test_port_forward_to_closed_port_reports_the_error(fake_api: FakeApi) -> None:
    with socket_bound_but_not_listening() as closed_port:
        process, local_port = await start_port_forward(fake_api, closed_port, websockets=True)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            writer.write(b"anyone?\n")
            await writer.drain()
            # kubectl drops the local connection once the error stream reports the failure.
            assert await asyncio.wait_for(reader.read(), 20) == b""
            writer.close()
            assert process.stderr is not None
            line = await asyncio.wait_for(process.stderr.readline(), 20)
            assert b"error forwarding port" in line and b"connection refused" in line
        finally:
            with contextlib.suppress(ProcessLookupError):  # kubectl may have exited by itself
                process.terminate()
            await process.wait()


@contextlib.contextmanager
def socket_bound_but_not_listening() -> Iterator[int]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_bulk_throughput(fake_api: FakeApi, upper_echo_port: int, websockets: bool) -> None:
    """64 MiB each way through kubectl; prints MB/s (run with -s to see the numbers)."""
    size = 64 * 1024 * 1024
    start = time.perf_counter()
    result = await kubectl(
        fake_api, "exec", POD, "--", "head", "-c", str(size), "/dev/zero", websockets=websockets
    )
    out_seconds = time.perf_counter() - start
    assert (result.code, len(result.stdout)) == (0, size)
    start = time.perf_counter()
    result = await kubectl(
        fake_api, "exec", "-i", POD, "--", "wc", "-c", stdin=b"\1" * size, websockets=websockets
    )
    in_seconds = time.perf_counter() - start
    assert (result.code, result.stdout.strip()) == (0, str(size))
    name = "websocket" if websockets else "spdy"
    print(
        f"\n{name}: exec stdout {size / out_seconds / 1e6:.0f} MB/s, "
        f"exec stdin {size / in_seconds / 1e6:.0f} MB/s (including kubectl start-up)"
    )
    # A floor far below what this 2-core VM does even when busy: catches stalls, not noise.
    assert size / out_seconds > 4e6 and size / in_seconds > 4e6


# --- the official Python client (WebSocket channel protocols, text frames) --------------------


def python_client(api: FakeApi) -> object:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = api.url
    configuration.api_key = {"authorization": "Bearer test"}
    return client.CoreV1Api(client.ApiClient(configuration))


async def test_python_client_exec_output_stdin_and_exit_code(fake_api: FakeApi) -> None:
    from kubernetes.stream import stream

    core = python_client(fake_api)

    def run() -> tuple[str, str, int | None, str]:
        output = stream(
            core.connect_get_namespaced_pod_exec,  # type: ignore[attr-defined]
            POD,
            "default",
            command=["sh", "-c", "echo from-python"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
        )
        session = stream(
            core.connect_get_namespaced_pod_exec,  # type: ignore[attr-defined]
            POD,
            "default",
            command=["sh", "-c", "read line; echo got $line; echo oops >&2; exit 5"],
            stdout=True,
            stderr=True,
            stdin=True,
            tty=False,
            _preload_content=False,
        )
        session.write_stdin("typed text\n")  # a str: sent as a text frame
        session.run_forever(timeout=KUBECTL_TIMEOUT)
        return output, session.read_stdout(), session.returncode, session.read_stderr()

    output, stdout, code, stderr = await asyncio.to_thread(run)
    assert output == "from-python\n"
    assert (stdout, stderr, code) == ("got typed text\n", "oops\n", 5)


async def test_python_client_port_forward(fake_api: FakeApi, upper_echo_port: int) -> None:
    from kubernetes.stream import portforward

    core = python_client(fake_api)

    def run() -> bytes:
        forward = portforward(
            core.connect_get_namespaced_pod_portforward,  # type: ignore[attr-defined]
            POD,
            "default",
            ports=str(upper_echo_port),
        )
        sock = forward.socket(upper_echo_port)
        sock.settimeout(KUBECTL_TIMEOUT)
        sock.sendall(b"python says hi\n")
        received = b""
        while not received.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            received += chunk
        sock.close()
        assert forward.error(upper_echo_port) is None
        return received

    assert await asyncio.to_thread(run) == b"PYTHON SAYS HI\n"


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_kubectl_cp_both_ways(fake_api: FakeApi, tmp_path: Path, websockets: bool) -> None:
    """kubectl cp is tar over exec stdin/stdout: binary data and stdin EOF must be exact."""
    content = os.urandom(300_000)
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    in_pod = tmp_path / "pod-side"
    in_pod.mkdir()
    result = await kubectl(
        fake_api, "cp", str(source), f"{POD}:{in_pod}/copied.bin", websockets=websockets
    )
    assert result.code == 0, result.stderr
    assert (in_pod / "copied.bin").read_bytes() == content
    back = tmp_path / "back.bin"
    result = await kubectl(
        fake_api, "cp", f"{POD}:{in_pod}/copied.bin", str(back), websockets=websockets
    )
    assert result.code == 0, result.stderr
    assert back.read_bytes() == content


# What each kubectl build uses by default for (exec, port-forward): WebSockets became the
# default for exec in 1.30 and for port-forward in 1.31.
DEFAULT_UPGRADES = {
    27: ["SPDY/3.1", "SPDY/3.1"],
    29: ["SPDY/3.1", "SPDY/3.1"],
    30: ["websocket", "SPDY/3.1"],
    31: ["websocket", "websocket"],
    33: ["websocket", "websocket"],
}


@pytest.mark.parametrize("minor", sorted(DEFAULT_UPGRADES))
async def test_other_kubectl_versions(fake_api: FakeApi, upper_echo_port: int, minor: int) -> None:
    """The dispatcher's other kubectl builds, each with its default transports."""
    fake_api.minor[0] = minor
    result = await kubectl(
        fake_api,
        "exec",
        "-i",
        POD,
        "--",
        "sh",
        "-c",
        "cat; exit 3",
        stdin=b"old and new\n",
        websockets=None,
    )
    assert (result.code, result.stdout) == (3, "old and new\n")
    assert "command terminated with exit code 3" in result.stderr
    version = await kubectl(fake_api, "version", "--client", "-o", "json")
    assert f'"minor": "{minor}"' in version.stdout
    process, local_port = await start_port_forward(fake_api, upper_echo_port, websockets=None)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
        writer.write(b"forwarded\n")
        assert await asyncio.wait_for(reader.readline(), 20) == b"FORWARDED\n"
        writer.close()
        await writer.wait_closed()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
    assert fake_api.upgrades == DEFAULT_UPGRADES[minor]
