"""The streaming server over TLS: client-certificate CN checks, every route, both upgrades.

Clients here are aiohttp (WebSocket) and our own SPDY session in client mode over a TLS socket,
so the server is exercised exactly as a proxying API server would use it. The backend is a small
scripted one (its behaviour is chosen by the command), enough to observe what reached it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
from k3py.agent.streaming.bytequeue import ByteQueue
from k3py.agent.streaming.remotecommand import ExecOptions, ResizeDecoder, status_for
from k3py.agent.streaming.server import StreamingServer
from k3py.agent.streaming.spdy_session import SpdySession
from k3py.agent.streaming.transport import StreamTransport

ALLOWED_CN = "kube-apiserver-kubelet-client"

# --- certificates -----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256()), key


def _write(
    directory: Path, stem: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(pair[0].public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        pair[1].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]
    allowed_client: tuple[Path, Path]
    other_cn_client: tuple[Path, Path]
    foreign_client: tuple[Path, Path]

    def client_context(self, client: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if client is not None:
            context.load_cert_chain(*client)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue("k3py-test-ca", None, ca=True)
    foreign_ca = _issue("someone-else-ca", None, ca=True)
    ca_path, _ = _write(directory, "ca", ca)
    return Pki(
        ca=ca_path,
        server=_write(directory, "server", _issue("node", ca, server=True)),
        allowed_client=_write(directory, "apiserver", _issue(ALLOWED_CN, ca)),
        other_cn_client=_write(directory, "intruder", _issue("intruder", ca)),
        foreign_client=_write(directory, "foreign", _issue(ALLOWED_CN, foreign_ca)),
    )


# --- a scripted backend -------------------------------------------------------------------


class ScriptedBackend(StreamingBackend):
    """exec's first word picks a behaviour; everything that reached the backend is observable."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.hanging = asyncio.Event()

    async def resolve(self, pod: PodRef, container: str | None) -> None:
        if pod.name != "x":
            raise NotFoundError(f'pods "{pod.name}" not found')

    async def exec(
        self, pod: PodRef, container: str, command: list[str], streams: ExecStreams
    ) -> int:
        verb = command[0]
        assert streams.stdout is not None
        if verb == "cat":
            assert streams.stdin is not None
            while data := await streams.stdin.read():
                await streams.stdout.write(data)
            return 0
        if verb == "whoami":
            await streams.stdout.write(f"{pod} uid={pod.uid} container={container}".encode())
            return 0
        if verb == "exit":
            return int(command[1])
        if verb == "size":  # report the first terminal size the client sent
            size = await streams.resize.get()
            assert size is not None
            await streams.stdout.write(f"{size.height}x{size.width} tty={streams.tty}\n".encode())
            return 0
        if verb == "fail":
            raise StreamingError("container runtime exploded")
        if verb == "hang":
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return 127

    async def attach(self, pod: PodRef, container: str, streams: ExecStreams) -> None:
        assert streams.stdout is not None and streams.stdin is not None
        await streams.stdout.write(b"attached\n")
        while data := await streams.stdin.read():
            await streams.stdout.write(data.upper())

    async def port_forward(
        self, pod: PodRef, port: int, reader: InputStream, writer: OutputStream
    ) -> None:
        if port == 81:
            raise StreamingError("connection refused")
        while data := await reader.read():
            await writer.write(b"%d:" % port + data)

    async def logs(
        self, pod: PodRef, container: str, options: LogOptions, out: OutputStream
    ) -> None:
        if container == "broken":
            await out.write(b"first line\n")
            raise StreamingError("log file vanished")
        lines = [f"{container} line {n}\n" for n in range(5)]
        if options.tail_lines is not None:
            lines = lines[len(lines) - options.tail_lines :]
        for line in lines:
            await out.write(line.encode())


@dataclass
class Running:
    url: str
    port: int
    pki: Pki
    backend: ScriptedBackend


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[Running]:
    backend = ScriptedBackend()
    streaming = StreamingServer(
        backend,
        cert_file=pki.server[0],
        key_file=pki.server[1],
        client_ca_file=pki.ca,
        allowed_common_names=[ALLOWED_CN],
    )
    port = await streaming.start("127.0.0.1", 0)
    try:
        yield Running(f"https://127.0.0.1:{port}", port, pki, backend)
    finally:
        await streaming.stop()


def session_for(running: Running, client: tuple[Path, Path] | None = None) -> aiohttp.ClientSession:
    context = running.pki.client_context(client or running.pki.allowed_client)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


# --- authentication ---------------------------------------------------------------------------


async def test_logs_for_the_allowed_client(server: Running) -> None:
    async with session_for(server) as http:
        async with http.get(f"{server.url}/containerLogs/default/x/c?tailLines=2") as response:
            assert response.status == 200
            assert await response.text() == "c line 3\nc line 4\n"


async def test_log_failure_after_the_headers_ends_the_body_with_the_error(server: Running) -> None:
    async with session_for(server) as http:
        async with http.get(f"{server.url}/containerLogs/default/x/broken") as response:
            assert response.status == 200
            assert await response.text() == "first line\n\nerror reading logs: log file vanished\n"


async def test_client_with_another_cn_is_forbidden(server: Running) -> None:
    async with session_for(server, server.pki.other_cn_client) as http:
        async with http.get(f"{server.url}/containerLogs/default/x/c") as response:
            assert response.status == 403
            body = await response.json()
            assert body["reason"] == "Forbidden" and '"intruder"' in body["message"]


@pytest.mark.parametrize("client", ["none", "foreign-ca"])
async def test_clients_without_a_cluster_certificate_fail_the_handshake(
    server: Running, client: str
) -> None:
    cert = None if client == "none" else server.pki.foreign_client
    context = server.pki.client_context(cert)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
        # TLS 1.3 reports a refused client certificate on the first read.
        writer.write(b"GET /containerLogs/default/x/c HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert await reader.read() == b""
        raise ConnectionResetError("closed without an answer")


# --- client mistakes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/exec/default/x/c?command=true", 400, "at least 1 of stdin, stdout, stderr"),
        ("/exec/default/x/c?stdout=true", 400, "at least one command"),
        ("/exec/default/x/c?command=true&stdout=true", 400, "Upgrade request required"),
        ("/exec/default/nope/c?command=true&stdout=true", 404, 'pods "nope" not found'),
        ("/portForward/default/x", 400, "Upgrade request required"),
        ("/containerLogs/default/x/c?tailLines=many", 400, "tailLines must be an integer"),
        ("/containerLogs/default/x/c?tailLines=-1", 400, "tailLines must not be negative"),
        ("/containerLogs/default/x/c?sinceSeconds=0", 400, "sinceSeconds must be greater than 0"),
        ("/containerLogs/default/x/c?limitBytes=0", 400, "limitBytes must be greater than 0"),
        ("/containerLogs/default/x/c?sinceTime=yesterday", 400, "sinceTime must be an RFC 3339 time"),
        ("/containerLogs/default/x/c?sinceTime=2024-01-01T00:00:00Z&sinceSeconds=5", 400,
         "at most one of `sinceTime` or `sinceSeconds`"),
    ],
)
async def test_bad_requests_get_a_status_not_a_traceback(
    server: Running, path: str, status: int, fragment: str
) -> None:
    async with session_for(server) as http:
        async with http.get(server.url + path) as response:
            assert response.status == status
            body = await response.json()
            assert body["kind"] == "Status" and fragment in body["message"]


async def test_websocket_with_unknown_subprotocol_is_refused_so_clients_fall_back(
    server: Running,
) -> None:
    async with session_for(server) as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                f"{server.url}/exec/default/x/c?command=cat&stdout=true",
                protocols=["v9.channel.k8s.io"],
            )
        assert refused.value.status == 400


# --- WebSocket exec/attach --------------------------------------------------------------------


async def ws_exchange(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[int, bytes], int | None]:
    """Read channel messages until the server closes; returns bytes per channel and close code."""
    received: dict[int, bytes] = {}
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            received[message.data[0]] = received.get(message.data[0], b"") + message.data[1:]
    return received, ws.close_code


async def test_websocket_v5_exec_stdin_close_signal_and_exit_status(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=cat&stdin=true&stdout=true&stderr=true"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
            assert ws.protocol == "v5.channel.k8s.io"
            await ws.send_bytes(b"\x00hello ")
            await ws.send_bytes(b"\x00world")
            await ws.send_bytes(b"\xff\x00")  # v5: stdin is finished
            received, code = await ws_exchange(ws)
    assert received[1] == b"hello world"
    assert json.loads(received[3]) == {"metadata": {}, "status": "Success"}
    assert code == 1000


async def test_websocket_pings_are_answered_while_a_command_runs(server: Running) -> None:
    """Keep-alive: a client's WebSocket pings get pongs in the middle of an exec stream."""
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=cat&stdin=true&stdout=true"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io"], autoping=False) as ws:
            async def next_message(kind: aiohttp.WSMsgType) -> aiohttp.WSMessage:
                while True:  # (the server may first say "connected" with an empty stdout frame)
                    message = await asyncio.wait_for(ws.receive(), 5)
                    if message.type == kind and message.data not in (b"\x01", b""):
                        return message

            for payload in (b"one", b"two"):
                await ws.ping(payload)
                assert (await next_message(aiohttp.WSMsgType.PONG)).data == payload
            await ws.send_bytes(b"\x00still here")
            # The stream goes on after the pings.
            assert (await next_message(aiohttp.WSMsgType.BINARY)).data == b"\x01still here"
            await ws.send_bytes(b"\xff\x00")
            received, code = await ws_exchange(ws)
    assert json.loads(received[3])["status"] == "Success" and code == 1000


async def test_websocket_v4_base64_exec(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=cat&stdin=true&stdout=true"
        async with http.ws_connect(url, protocols=["v4.base64.channel.k8s.io"]) as ws:
            assert ws.protocol == "v4.base64.channel.k8s.io"
            first = await ws.receive_str()
            assert first == "1"  # "connected": an empty message on stdout
            await ws.send_str("0" + base64.b64encode(b"\x00binary\xff").decode())
            echoed = await ws.receive_str()
            assert echoed[0] == "1" and base64.b64decode(echoed[1:]) == b"\x00binary\xff"
            await ws.close()


@pytest.mark.parametrize("protocols", [["channel.k8s.io"], []], ids=["v1", "no-subprotocol"])
async def test_websocket_pre_v4_reports_failure_as_text(
    server: Running, protocols: list[str]
) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=exit&command=9&stdout=true"
        async with http.ws_connect(url, protocols=protocols) as ws:
            received, code = await ws_exchange(ws)
    assert received[1] == b""  # only the "connected" message
    assert received[3].decode().startswith("command terminated with non-zero exit code")
    assert code == 1000


async def test_websocket_v4_nonzero_exit_status(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=exit&command=3&stdout=true"
        async with http.ws_connect(url, protocols=["v4.channel.k8s.io"]) as ws:
            received, _code = await ws_exchange(ws)
    status = json.loads(received[3])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert status["message"].startswith("command terminated with non-zero exit code")


async def test_websocket_tty_resize_reaches_the_backend(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=size&stdin=true&stdout=true&stderr=true&tty=true"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
            await ws.send_bytes(b'\x04{"Width":100,"Height":30}\n')
            received, _ = await ws_exchange(ws)
    assert received[1] == b"30x100 tty=True\n"
    assert 2 not in received  # a terminal has no separate stderr


async def test_websocket_backend_error_is_an_internal_error_status(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=fail&stdout=true"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
            received, _ = await ws_exchange(ws)
    status = json.loads(received[3])
    assert status["reason"] == "InternalError" and "container runtime exploded" in status["message"]


async def test_client_hangup_cancels_the_command(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/c?command=hang&stdout=true"
        ws = await http.ws_connect(url, protocols=["v5.channel.k8s.io"])
        await ws.close()
    await asyncio.wait_for(server.backend.cancelled.wait(), 5)


async def test_websocket_attach(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/attach/default/x/c?stdin=true&stdout=true"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
            await ws.send_bytes(b"\x00shout")
            await ws.send_bytes(b"\xff\x00")
            received, _ = await ws_exchange(ws)
    assert received[1] == b"attached\nSHOUT"
    assert json.loads(received[3])["status"] == "Success"


# --- SPDY, with our own session as the client -------------------------------------------------


async def spdy_connect(
    server: Running, path: str, protocols: str
) -> tuple[SpdySession, dict[str, str]]:
    context = server.pki.client_context(server.pki.allowed_client)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        f"X-Stream-Protocol-Version: {protocols}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)
    }
    assert status_line.startswith("HTTP/1.1 101"), head
    session = SpdySession(StreamTransport(reader, writer), is_server=False)
    session.start()
    return session, headers


async def read_all(stream: InputStream) -> bytes:
    data = b""
    while chunk := await stream.read():
        data += chunk
    return data


async def test_spdy_exec_v4_with_tty_resize_and_status(server: Running) -> None:
    path = "/exec/default/x/c?command=size&stdin=true&stdout=true&tty=true"
    session, headers = await spdy_connect(server, path, "v4.channel.k8s.io, v3.channel.k8s.io")
    assert headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
    async with session:
        error = await session.open_stream({"streamType": "error"})
        stdin = await session.open_stream({"streamType": "stdin"})
        stdout = await session.open_stream({"streamType": "stdout"})
        resize = await session.open_stream({"streamType": "resize"})
        for stream in (error, stdin, stdout, resize):
            await asyncio.wait_for(stream.wait_reply(), 5)
        await resize.write(b'{"Width":80,"Height":24}')
        assert await asyncio.wait_for(read_all(stdout), 5) == b"24x80 tty=True\n"
        assert json.loads(await asyncio.wait_for(read_all(error), 5)) == {
            "metadata": {},
            "status": "Success",
        }


async def test_spdy_v2_reports_errors_as_text(server: Running) -> None:
    session, headers = await spdy_connect(
        server, "/exec/default/x/c?command=exit&command=2&stdout=true", "v2.channel.k8s.io"
    )
    assert headers["x-stream-protocol-version"] == "v2.channel.k8s.io"
    async with session:
        error = await session.open_stream({"streamType": "error"})
        stdout = await session.open_stream({"streamType": "stdout"})
        assert await asyncio.wait_for(read_all(stdout), 5) == b""
        text = (await asyncio.wait_for(read_all(error), 5)).decode()
    assert text.startswith("command terminated with non-zero exit code")


async def test_spdy_protocol_mismatch_is_forbidden(server: Running) -> None:
    async with session_for(server) as http:
        async with http.post(
            f"{server.url}/exec/default/x/c?command=cat&stdout=true",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "SPDY/3.1",
                "X-Stream-Protocol-Version": "v9.channel.k8s.io",
            },
        ) as response:
            assert response.status == 403
            assert "unable to negotiate protocol" in (await response.json())["message"]


async def test_spdy_port_forward_pairs_and_errors(server: Running) -> None:
    session, headers = await spdy_connect(server, "/portForward/default/x", "portforward.k8s.io")
    assert headers["x-stream-protocol-version"] == "portforward.k8s.io"
    async with session:
        pairs = {}
        for request_id, port in (("0", 80), ("1", 81), ("2", 443)):
            error = await session.open_stream(
                {"streamType": "error", "port": str(port), "requestID": request_id}
            )
            await error.close()  # kubectl only reads the error stream
            data = await session.open_stream(
                {"streamType": "data", "port": str(port), "requestID": request_id}
            )
            pairs[port] = (error, data)
        for port in (80, 443):
            await pairs[port][1].write(b"ping")
            await pairs[port][1].close()
            assert await asyncio.wait_for(read_all(pairs[port][1]), 5) == f"{port}:ping".encode()
            assert await asyncio.wait_for(read_all(pairs[port][0]), 5) == b""
        refused = (await asyncio.wait_for(read_all(pairs[81][0]), 5)).decode()
        assert refused == "error forwarding port 81 to pod default/x: connection refused"
        # A pair whose port header is not a port gets told so on its error stream.
        bad_error = await session.open_stream(
            {"streamType": "error", "port": "http", "requestID": "9"}
        )
        await session.open_stream({"streamType": "data", "port": "http", "requestID": "9"})
        text = (await asyncio.wait_for(read_all(bad_error), 5)).decode()
        assert text == "error forwarding port http to pod default/x: invalid port 'http'"


# --- pure pieces ------------------------------------------------------------------------------


def test_exec_options_follow_the_kubelet_rules() -> None:
    options = ExecOptions.from_query(
        {"stdin": "1", "stdout": "true", "stderr": "true", "tty": "true"}, ["sh"], True
    )
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (True, True, False, True)
    assert options.stream_types("v4.channel.k8s.io") == {"error", "stdin", "stdout", "resize"}
    assert options.stream_types("v2.channel.k8s.io") == {"error", "stdin", "stdout"}


def test_resize_decoder_handles_split_and_concatenated_objects() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"Width":1,') == []
    sizes = decoder.feed(b'"Height":2}\n{"Width":3,"Height":4}{"Wid')
    assert [(s.width, s.height) for s in sizes] == [(1, 2), (3, 4)]
    assert [(s.width, s.height) for s in decoder.feed(b'th":5,"Height":6}')] == [(5, 6)]


def test_exit_status_shapes() -> None:
    assert status_for(0, ["true"]) == {"metadata": {}, "status": "Success"}
    failed = status_for(3, ["sh", "-c", "exit 3"])
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}


async def test_garbage_after_the_spdy_upgrade_closes_only_that_connection(server: Running) -> None:
    context = server.pki.client_context(server.pki.allowed_client)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
    writer.write(
        b"POST /exec/default/x/c?command=cat&stdout=true HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.write(bytes.fromhex("8002000100000004") + b"junk")  # a SPDY/2 frame: not spoken
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest.startswith(bytes.fromhex("80030007"))  # a GOAWAY, then the connection ends
    writer.close()
    # The server carries on.
    async with session_for(server) as http:
        async with http.get(f"{server.url}/containerLogs/default/x/c?tailLines=1") as response:
            assert await response.text() == "c line 4\n"


async def test_websocket_channel_port_forward(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/portForward/default/x?port=80&ports=81,443"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io", "v4.channel.k8s.io"]) as ws:
            assert ws.protocol == "v4.channel.k8s.io"  # v5 is not a port-forward protocol
            greetings = [(await ws.receive_bytes()) for _ in range(6)]
            assert greetings == [
                bytes([0, 80, 0]), bytes([1, 80, 0]),
                bytes([2, 81, 0]), bytes([3, 81, 0]),
                bytes([4, 187, 1]), bytes([5, 187, 1]),
            ]  # fmt: skip
            await ws.send_bytes(b"\x00to-80")
            await ws.send_bytes(b"\x04to-443")
            got = {(await ws.receive_bytes()) for _ in range(3)}
            assert got == {
                b"\x0080:to-80",
                b"\x04443:to-443",
                b"\x03error forwarding port 81 to pod default/x: connection refused",
            }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", 'query parameter "port" is required'),
        ("?port=0", "port 0 must be between 1 and 65535"),
        ("?ports=80,x", "invalid port 'x'"),
    ],
)
async def test_websocket_channel_port_forward_needs_valid_ports(
    server: Running, query: str, message: str
) -> None:
    async with session_for(server) as http:
        async with http.get(
            f"{server.url}/portForward/default/x{query}",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
                "Sec-WebSocket-Protocol": "v4.channel.k8s.io",
            },
        ) as response:
            assert response.status == 400
            assert (await response.json())["message"] == message


async def test_exec_route_with_pod_uid(server: Running) -> None:
    async with session_for(server) as http:
        url = f"{server.url}/exec/default/x/1234-abcd/c?command=whoami&stdout=true"
        async with http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
            received, _ = await ws_exchange(ws)
    assert received[1] == b"default/x uid=1234-abcd container=c"


async def test_spdy_unread_stdin_does_not_hold_up_the_result(server: Running) -> None:
    path = "/exec/default/x/c?command=exit&command=0&stdin=true&stdout=true"
    session, _ = await spdy_connect(server, path, "v5.channel.k8s.io")
    async with session:
        error = await session.open_stream({"streamType": "error"})
        stdin = await session.open_stream({"streamType": "stdin"})
        stdout = await session.open_stream({"streamType": "stdout"})
        # Far more input than the server buffers per stream, none of it ever read.
        flood = asyncio.create_task(stdin.write(b"y" * (4 * 1024 * 1024)))
        assert json.loads(await asyncio.wait_for(read_all(error), 10))["status"] == "Success"
        assert await asyncio.wait_for(read_all(stdout), 10) == b""
        flood.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await flood


async def test_idle_websocket_exec_is_closed_and_the_command_stopped(pki: Pki) -> None:
    backend = ScriptedBackend()
    streaming = StreamingServer(
        backend,
        cert_file=pki.server[0],
        key_file=pki.server[1],
        client_ca_file=pki.ca,
        allowed_common_names=[ALLOWED_CN],
        idle_timeout=0.3,
    )
    port = await streaming.start("127.0.0.1", 0)
    try:
        running = Running(f"https://127.0.0.1:{port}", port, pki, backend)
        async with session_for(running) as http:
            url = f"{running.url}/exec/default/x/c?command=hang&stdin=true&stdout=true"
            # No autoping from this client and nothing sent: the server sees an idle connection.
            async with http.ws_connect(url, protocols=["v5.channel.k8s.io"], autoping=False) as ws:
                received, code = await asyncio.wait_for(ws_exchange(ws), 5)
        await asyncio.wait_for(backend.cancelled.wait(), 5)
        assert code == 1000 and 3 not in received  # closed, no result: the command never ended
    finally:
        await streaming.stop()


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_stop_ends_open_streams_promptly(pki: Pki, transport: str) -> None:
    backend = ScriptedBackend()
    streaming = StreamingServer(
        backend,
        cert_file=pki.server[0],
        key_file=pki.server[1],
        client_ca_file=pki.ca,
        allowed_common_names=[ALLOWED_CN],
    )
    port = await streaming.start("127.0.0.1", 0)
    running = Running(f"https://127.0.0.1:{port}", port, pki, backend)
    path = "/exec/default/x/c?command=hang&stdout=true"
    loop = asyncio.get_running_loop()
    async with session_for(running) as http:
        if transport == "websocket":
            ws = await http.ws_connect(running.url + path, protocols=["v5.channel.k8s.io"])
        else:
            session, _ = await spdy_connect(running, path, "v5.channel.k8s.io")
            for kind in ("error", "stdout"):
                await session.open_stream({"streamType": kind})
        await asyncio.wait_for(backend.hanging.wait(), 5)  # the command runs: now shut down
        started = loop.time()
        await asyncio.wait_for(streaming.stop(), 10)
        # A node agent shutting down must not wait for clients to hang up (aiohttp's default
        # would be a minute); these clients do not even answer a close.
        assert loop.time() - started < 8
        await asyncio.wait_for(backend.cancelled.wait(), 5)
        if transport == "websocket":
            received, _code = await asyncio.wait_for(ws_exchange(ws), 5)
            assert 3 not in received  # closed without a result: the command was stopped
            await ws.close()
        else:
            await asyncio.wait_for(session.wait_closed(), 5)
            await session.close()


async def test_byte_queue_pushes_back_and_ends() -> None:
    queue = ByteQueue(limit=10)
    await queue.put(b"0123456789ab")  # over the limit: the next put has to wait
    blocked = asyncio.create_task(queue.put(b"more"))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert await queue.read() == b"0123456789ab"
    await asyncio.wait_for(blocked, 1)
    queue.end()
    await queue.put(b"ignored after the end")
    assert [await queue.read(), await queue.read(), await queue.read()] == [b"more", b"", b""]
