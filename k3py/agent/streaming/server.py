"""The kubelet's streaming server: logs, exec, attach and port-forward over HTTPS.

Routes (the kubelet's own paths, which the API server proxies pods/log|exec|attach|portforward to):
    GET        /containerLogs/{namespace}/{pod}/{container}
    GET|POST   /exec/{namespace}/{pod}/{container}?command=..&stdin=..&stdout=..&stderr=..&tty=..
    GET|POST   /attach/{namespace}/{pod}/{container}?stdin=..&stdout=..&stderr=..&tty=..
    GET|POST   /portForward/{namespace}/{pod}
(exec, attach and portForward also as .../{pod}/{uid}/...). Every streaming route accepts both a WebSocket upgrade and an `Upgrade: SPDY/3.1` upgrade, so a
proxy in front of it is a plain byte pipe after the 101.

`StreamingHandlers` holds the per-request logic and is usable from any aiohttp handler (the
route table here is one user of it); `StreamingServer` adds TLS with client certificates: only
clients whose certificate chains to the cluster CA, is meant for client authentication (the
TLS layer checks the extended key usage, so a serving certificate signed by the same CA is no
client credential) *and* whose CN is in `allowed_common_names` get through — the node agent
allows only the API server's kubelet-client identity (``k3py/util/kubelettls.py``), never the
cluster admin. No certificate is a 401, another identity a 403, both as Status objects.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

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
from k3py.agent.streaming.portforward import (
    PORT_FORWARD_PROTOCOL,
    WEBSOCKET_CHANNEL_PROTOCOL,
    WEBSOCKET_TUNNEL_PROTOCOL,
    parse_ports,
    serve_port_forward,
    serve_port_forward_channels,
)
from k3py.agent.streaming.remotecommand import (
    SPDY_PROTOCOLS,
    WEBSOCKET_PROTOCOLS,
    BadRequestError,
    ExecOptions,
    RunCommand,
    query_flag,
    serve_spdy,
    serve_websocket,
)
from k3py.agent.streaming.spdy_session import SpdySession
from k3py.agent.streaming.transport import WebSocketTransport
from k3py.agent.streaming.upgrade import (
    UpgradeRefused,
    accept_spdy,
    accept_websocket,
    check_websocket,
    client_protocols,
    wants_spdy,
    wants_websocket,
)
from k3py.api.errors import ApiError
from k3py.api.meta import parse_rfc3339
from k3py.util.keepalive import KeepAlive

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 4 * 60 * 60.0
STOP_GRACE = 0.5


def status_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(ApiError(code, reason, message).to_status(), status=code)


class _ResponseOutput:
    """OutputStream over a chunked HTTP response (container logs)."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    async def write(self, data: bytes) -> None:
        if data:
            await self._response.write(data)


def _optional_int(query: dict[str, str], name: str, minimum: int = 0) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise BadRequestError(f"{name} must not be negative" if minimum == 0 else f"{name} must be greater than 0")
    return value


def _optional_time(query: dict[str, str], name: str) -> float | None:
    """An RFC 3339 time parameter as epoch seconds."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_rfc3339(raw).timestamp()
    except ValueError:
        raise BadRequestError(f"{name} must be an RFC 3339 time, got {raw!r}") from None


class StreamingHandlers:
    """exec/attach/portforward/logs for one request each, whatever route led there.

    `idle_timeout`: a streaming connection idle for this long is closed (the kubelet's
    --streaming-connection-idle-timeout, 4 hours by default). SPDY counts frames either way;
    a WebSocket counts what it receives, pings included.
    """

    def __init__(
        self, backend: StreamingBackend, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    ) -> None:
        self.backend = backend
        self.idle_timeout = idle_timeout

    async def exec(
        self, request: web.Request, pod: PodRef, container: str | None
    ) -> web.StreamResponse:
        commands = request.query.getall("command", [])
        return await self._remote_command(request, pod, container, commands, require_command=True)

    async def attach(
        self, request: web.Request, pod: PodRef, container: str | None
    ) -> web.StreamResponse:
        return await self._remote_command(request, pod, container, [], require_command=False)

    async def _remote_command(
        self,
        request: web.Request,
        pod: PodRef,
        container: str | None,
        commands: list[str],
        require_command: bool,
    ) -> web.StreamResponse:
        try:
            options = ExecOptions.from_query(dict(request.query), commands, require_command)
        except BadRequestError as exc:
            return status_response(400, "BadRequest", str(exc))
        target = container or options.container
        if not target:
            return status_response(400, "BadRequest", "a container name must be specified")
        try:
            await self.backend.resolve(pod, target)
        except NotFoundError as exc:
            return status_response(404, "NotFound", str(exc))

        run: RunCommand
        if require_command:

            async def run(streams: ExecStreams) -> int | None:
                return await self.backend.exec(pod, target, options.command, streams)

        else:

            async def run(streams: ExecStreams) -> int | None:
                await self.backend.attach(pod, target, streams)
                return 0

        return await serve_remote_command(request, options, run, self.idle_timeout)

    async def port_forward(self, request: web.Request, pod: PodRef) -> web.StreamResponse:
        try:
            await self.backend.resolve(pod, None)
        except NotFoundError as exc:
            return status_response(404, "NotFound", str(exc))

        async def forward(port: int, reader: InputStream, writer: OutputStream) -> None:
            await self.backend.port_forward(pod, port, reader, writer)

        return await serve_port_forward_request(request, str(pod), forward, self.idle_timeout)

    async def logs(
        self, request: web.Request, pod: PodRef, container: str | None
    ) -> web.StreamResponse:
        query = dict(request.query)
        target = container or query.get("container")
        if not target:
            return status_response(400, "BadRequest", "a container name must be specified")
        try:
            options = LogOptions(
                follow=query_flag(query, "follow"),
                tail_lines=_optional_int(query, "tailLines"),
                timestamps=query_flag(query, "timestamps"),
                previous=query_flag(query, "previous"),
                since_seconds=_optional_int(query, "sinceSeconds", minimum=1),
                since_time=_optional_time(query, "sinceTime"),
                limit_bytes=_optional_int(query, "limitBytes", minimum=1),
            )
            if options.since_seconds is not None and options.since_time is not None:
                raise BadRequestError("at most one of `sinceTime` or `sinceSeconds` may be specified")
            await self.backend.resolve(pod, target)
        except BadRequestError as exc:
            return status_response(400, "BadRequest", str(exc))
        except NotFoundError as exc:
            return status_response(404, "NotFound", str(exc))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await self.backend.logs(pod, target, options, _ResponseOutput(response))
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading (e.g. `logs -f` interrupted)
        except StreamingError as exc:
            # Headers are out: all that is left is to say so in the body and end it.
            log.info("logs of %s/%s failed: %s", pod, target, exc)
            with contextlib.suppress(ConnectionError):
                await response.write(f"\nerror reading logs: {exc}\n".encode())
                await response.write_eof()
        return response


async def serve_remote_command(
    request: web.Request,
    options: ExecOptions,
    run: RunCommand,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> web.StreamResponse:
    """Upgrade (WebSocket or SPDY) and run one exec/attach on the connection."""
    try:
        if wants_websocket(request):
            offered = client_protocols(request, "Sec-WebSocket-Protocol")
            # No subprotocol at all is the kubelet's oldest flavour (binary, pre-v4).
            protocol = check_websocket(request, WEBSOCKET_PROTOCOLS) if offered else None
            ws = await accept_websocket(request, protocol, idle_timeout)
            await serve_websocket(ws, options, run)
            return ws
        if wants_spdy(request):
            protocol, transport, response = await accept_spdy(request, SPDY_PROTOCOLS)
            session = SpdySession(transport, idle_timeout=idle_timeout)
            session.start()
            await serve_spdy(session, protocol, options, run)
            return response
    except UpgradeRefused as exc:
        return status_response(exc.status, exc.reason, exc.message)
    return status_response(400, "BadRequest", "Upgrade request required")


async def serve_port_forward_request(
    request: web.Request,
    pod_description: str,
    forward: Callable[[int, InputStream, OutputStream], Awaitable[None]],
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> web.StreamResponse:
    """Upgrade (SPDY inside a WebSocket, or plain SPDY) and forward ports until the client leaves."""
    try:
        if wants_websocket(request):
            offered = client_protocols(request, "Sec-WebSocket-Protocol")
            if WEBSOCKET_TUNNEL_PROTOCOL in offered:
                ws = await accept_websocket(request, WEBSOCKET_TUNNEL_PROTOCOL, idle_timeout)
                session = SpdySession(WebSocketTransport(ws), idle_timeout=idle_timeout)
                session.start()
                await serve_port_forward(session, pod_description, forward)
                return ws
            # The channel protocol: v4.channel.k8s.io, or no subprotocol at all.
            protocol = check_websocket(request, (WEBSOCKET_CHANNEL_PROTOCOL,)) if offered else None
            try:
                ports = parse_ports(
                    request.query.getall("port", []) + request.query.getall("ports", [])
                )
            except ValueError as exc:
                return status_response(400, "BadRequest", str(exc))
            ws = await accept_websocket(request, protocol, idle_timeout)
            await serve_port_forward_channels(ws, ports, pod_description, forward)
            return ws
        if wants_spdy(request):
            _protocol, transport, response = await accept_spdy(request, (PORT_FORWARD_PROTOCOL,))
            session = SpdySession(transport, idle_timeout=idle_timeout)
            session.start()
            await serve_port_forward(session, pod_description, forward)
            return response
    except UpgradeRefused as exc:
        return status_response(exc.status, exc.reason, exc.message)
    return status_response(400, "BadRequest", "Upgrade request required")


def create_app(
    backend: StreamingBackend,
    allowed_common_names: Iterable[str] | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> web.Application:
    """The kubelet streaming routes; with `allowed_common_names`, TLS client CNs are checked."""
    handlers = StreamingHandlers(backend, idle_timeout)
    allowed = frozenset(allowed_common_names) if allowed_common_names is not None else None

    @web.middleware
    async def authorize(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if allowed is not None:
            name = client_common_name(request)
            if name is None:
                return status_response(401, "Unauthorized", "Unauthorized")
            if name not in allowed:
                return status_response(
                    403, "Forbidden", f'User "{name}" cannot use the kubelet streaming API'
                )
        return await handler(request)

    def pod_of(request: web.Request) -> PodRef:
        info = request.match_info
        return PodRef(info["namespace"], info["pod"], info.get("uid", ""))

    async def exec_route(request: web.Request) -> web.StreamResponse:
        return await handlers.exec(request, pod_of(request), request.match_info["container"])

    async def attach_route(request: web.Request) -> web.StreamResponse:
        return await handlers.attach(request, pod_of(request), request.match_info["container"])

    async def port_forward_route(request: web.Request) -> web.StreamResponse:
        return await handlers.port_forward(request, pod_of(request))

    async def logs_route(request: web.Request) -> web.StreamResponse:
        return await handlers.logs(request, pod_of(request), request.match_info["container"])

    app = web.Application(middlewares=[authorize])
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", logs_route)
    for method in ("GET", "POST"):
        # The kubelet also accepts the pod UID in the path, to pin one incarnation of the pod.
        for pod_path in ("{namespace}/{pod}", "{namespace}/{pod}/{uid}"):
            app.router.add_route(method, f"/exec/{pod_path}/{{container}}", exec_route)
            app.router.add_route(method, f"/attach/{pod_path}/{{container}}", attach_route)
            app.router.add_route(method, f"/portForward/{pod_path}", port_forward_route)
    return app


def client_common_name(request: web.BaseRequest) -> str | None:
    """The CN of the verified TLS client certificate, if any."""
    transport = request.transport
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def server_ssl_context(cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    """TLS that demands a client certificate signed by `client_ca_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cafile=str(client_ca_file))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class StreamingServer:
    """Runs the streaming app on host:port (port 0 = pick one) with client-certificate TLS."""

    def __init__(
        self,
        backend: StreamingBackend,
        *,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path,
        allowed_common_names: Iterable[str],
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.app = create_app(backend, allowed_common_names, idle_timeout)
        self.ssl_context = server_ssl_context(cert_file, key_file, client_ca_file)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        # Open exec/attach/port-forward connections last as long as their clients; stopping
        # the node agent must not wait for them, so handlers get a short grace, then are cancelled.
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=STOP_GRACE
        )
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=128)
        KeepAlive.from_environment().apply([listener])  # inherited by every accepted connection
        site = web.SockSite(self._runner, listener, ssl_context=self.ssl_context)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
