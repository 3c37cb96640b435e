"""The API server: aiohttp over TLS, authentication, routing and the error boundary.

Routing is done by hand on the path's segments (one catch-all aiohttp route) rather than with
aiohttp's router: resource paths are dynamic (CRDs come and go) and one dispatch function is
both faster and closer to upstream's RequestInfo parsing.

Authentication: a client certificate signed by the cluster CA (TLS verifies the chain; the
subject's CN is the user, O the groups) or ``Authorization: Bearer <server token>``. Anything
else gets a 401 Status. There is no authorization yet: every authenticated user is an admin.
Whether a connection presented a verified client certificate is decided once per TLS
connection (the certificate cannot change on it) and remembered on the connection's protocol
object, so keep-alive requests skip re-reading the peer certificate.

Errors: an ``ApiError`` becomes its Status; a ``RecursionError`` (a value nested deeper than
some walk could follow) is the client's malformed input, a 400; any other exception is a 500
Status, logged with its traceback once per distinct failure and then counted
(``k3py.util.logsummary``) — a client never sees a traceback, and cannot flood the log.

Hostile clients: connections go through ``connections.py`` (header and idle timeouts, a
connection cap), requests through ``inflight.py`` (upstream's max-in-flight limits, 429 with
Retry-After). ``/metrics`` (authenticated, Prometheus text) shows what they are doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import platform
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from k3py import KUBERNETES_VERSION
from k3py.api import errors
from k3py.api.resources import ResourceTable
from k3py.server.apiserver import codec
from k3py.server.apiserver.connections import (
    Connection,
    ConnectionGuard,
    ConnectionLimits,
    TLSAcceptor,
)
from k3py.server.apiserver.discovery import Discovery, aggregated_version
from k3py.server.apiserver.handlers import (
    STREAMING_SUBRESOURCES,
    RestHandler,
    json_response,
    parse_resource_path,
)
from k3py.server.apiserver.inflight import (
    READONLY_METHODS,
    InflightLimiter,
    InflightLimits,
    too_many_requests_response,
)
from k3py.server.apiserver.openapi_routes import OpenAPIRoutes
from k3py.server.apiserver.registry import Registry
from k3py.server.apiserver.reviews import REVIEW_RESOURCES
from k3py.server.apiserver.streaming import KubeletClientTLS, StreamingProxy
from k3py.util.keepalive import KeepAlive
from k3py.util.logsummary import LogSummary

log = logging.getLogger("k3py.apiserver")

GIT_VERSION = f"{KUBERNETES_VERSION}+k3py"
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
_MASTERS_GROUP = "system:masters"


def version_info() -> dict[str, str]:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": major,
        "minor": minor,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": f"linux/{arch}",
    }


def _status_response(error: errors.ApiError) -> web.Response:
    headers = None
    if error.code == 401:
        headers = {"WWW-Authenticate": 'Basic realm="kubernetes-master"'}
    return json_response(orjson.dumps(error.to_status()), error.code, headers=headers)


class ApiServer:
    """The HTTP face of the registry."""

    def __init__(
        self,
        registry: Registry,
        table: ResourceTable,
        token: str,
        advertise_address: str,
        kubelet_client_cert: KubeletClientTLS | None = None,
        connection_limits: ConnectionLimits | None = None,
        inflight_limits: InflightLimits | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self.registry = registry
        self.table = table
        self.token = token
        self.advertise_address = advertise_address
        self.discovery = Discovery(table)
        self.rest = RestHandler(registry, table)
        if request_timeout is not None:
            self.rest.request_timeout = request_timeout
        self.rest.token_valid = self._token_valid
        if kubelet_client_cert is not None:
            self.rest.streaming = StreamingProxy(
                registry,
                table,
                kubelet_client_cert.cert,
                kubelet_client_cert.key,
                kubelet_client_cert.ca,
            )
        for info in REVIEW_RESOURCES:
            if table.lookup(info.group, info.version, info.plural) is None:
                table.add(info)
        self.openapi = OpenAPIRoutes(table)
        self.ready = False
        self._version_body = orjson.dumps(version_info())
        self.connection_limits = connection_limits or ConnectionLimits()
        self.guard: ConnectionGuard | None = None
        self.inflight = InflightLimiter(inflight_limits or InflightLimits())
        self._errors = LogSummary(log)
        self._runner: web.ServerRunner | None = None
        self._listener: asyncio.Server | None = None

    # -- middleware -------------------------------------------------------------------------

    def _authenticate(self, request: web.BaseRequest) -> _Identity | None:
        """Who sent the request (None: nobody we know). A verified client certificate is
        read once per connection; a bearer token is checked on every request."""
        protocol = request.protocol
        if isinstance(protocol, _ConnectionHandler):
            identity = protocol.certificate_identity
        else:
            transport = request.transport
            identity = _identity_of(transport.get_extra_info("peercert") if transport is not None else None)
        if identity is not None:
            return identity
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self._token_valid(auth[7:].strip()):
            if isinstance(protocol, _ConnectionHandler):
                protocol.token_authenticated()
            return _TOKEN_IDENTITY
        return None

    def _token_valid(self, token: str) -> bool:
        return bool(self.token) and hmac.compare_digest(token.encode(), self.token.encode())

    async def _boundary(self, request: web.BaseRequest) -> web.StreamResponse:
        counted: bool | None = None  # the in-flight budget taken: True mutating, False read-only
        try:
            identity = None
            if request.path not in _PUBLIC_PATHS:
                identity = self._authenticate(request)
                if identity is None:
                    raise errors.unauthorized()
            if identity is not None and not identity.exempt and not _long_running(request):
                mutating = request.method not in READONLY_METHODS
                if not self.inflight.try_acquire(mutating):
                    return too_many_requests_response()
                counted = mutating
            return await self._dispatch(request)
        except errors.ApiError as e:
            return _status_response(e)
        except web.HTTPRequestEntityTooLarge:
            return _status_response(errors.request_entity_too_large())
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except RecursionError:
            # Only a value nested deeper than some walk can follow gets here: malformed input.
            return _status_response(errors.bad_request("the object is nested too deeply"))
        except Exception as e:
            self._log_internal_error(request, e)
            return _status_response(errors.internal(f"{type(e).__name__}: {e}"))
        finally:
            if counted is not None:
                self.inflight.release(counted)

    def _log_internal_error(self, request: web.BaseRequest, e: Exception) -> None:
        """One traceback per distinct failure (its type and where it was raised), then counts."""
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ("", 0)
        self._errors.log(
            (type(e).__name__, *where), logging.ERROR,
            "internal error serving %s %s", request.method, request.raw_path[:200], exc_info=e,
        )  # fmt: skip

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        segments = [s for s in path.split("/") if s]
        if not segments:
            return self._root()
        head = segments[0]
        if head in ("api", "apis"):
            return await self._api(request, segments)
        if head in ("healthz", "livez", "readyz"):
            if head == "readyz" and not self.ready:
                return web.Response(status=500, text="[-]informer-sync failed: not ready yet\nreadyz check failed\n")
            return web.Response(text="ok", content_type="text/plain")
        if head == "version" and len(segments) == 1:
            return json_response(self._version_body)
        if head == "openapi":
            return await self.openapi.serve(request, segments)
        if head == "metrics" and len(segments) == 1:
            return web.Response(text=self._metrics(), content_type="text/plain", charset="utf-8")
        raise errors.not_found_path(path)

    def _metrics(self) -> str:
        guard, inflight = self.guard, self.inflight
        lines = [
            "# HELP apiserver_current_inflight_requests Requests in flight, per budget.",
            "# TYPE apiserver_current_inflight_requests gauge",
            f'apiserver_current_inflight_requests{{request_kind="readOnly"}} {inflight.readonly}',
            f'apiserver_current_inflight_requests{{request_kind="mutating"}} {inflight.mutating}',
            "# HELP k3py_apiserver_rejected_requests_total Requests answered 429 for want of an in-flight slot.",
            "# TYPE k3py_apiserver_rejected_requests_total counter",
            f"k3py_apiserver_rejected_requests_total {inflight.rejected}",
        ]
        if guard is not None:
            lines += [
                "# HELP k3py_apiserver_open_connections Client connections open, TLS handshakes included.",
                "# TYPE k3py_apiserver_open_connections gauge",
                f"k3py_apiserver_open_connections {len(guard)}",
                "# HELP k3py_apiserver_closed_connections_total Connections the server closed, by reason.",
                "# TYPE k3py_apiserver_closed_connections_total counter",
                f'k3py_apiserver_closed_connections_total{{reason="header_timeout"}} {guard.timed_out}',
                f'k3py_apiserver_closed_connections_total{{reason="evicted"}} {guard.evicted}',
                f'k3py_apiserver_closed_connections_total{{reason="refused"}} {guard.refused}',
            ]
        return "\n".join(lines) + "\n"

    def _root(self) -> web.Response:
        paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]
        for group, versions in self.table.groups():
            if group:
                paths.append(f"/apis/{group}")
                paths.extend(f"/apis/{group}/{v}" for v in versions)
        return json_response(orjson.dumps({"paths": sorted(paths)}))

    async def _api(self, request: web.BaseRequest, segments: list[str]) -> web.StreamResponse:
        head = segments[0]
        if request.method == "GET":
            if len(segments) == 1:
                version = aggregated_version(request.headers.get("Accept"))
                if version is not None:
                    body = self.discovery.aggregated(head == "api", version)
                    content_type = f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
                    return web.Response(body=body, headers={"Content-Type": content_type, "Vary": "Accept"})
                if head == "api":
                    return json_response(self.discovery.api_versions(self.advertise_address))
                return json_response(self.discovery.api_group_list())
            if head == "api" and len(segments) == 2:
                doc = self.discovery.resource_list("", segments[1])
                if doc is None:
                    raise errors.not_found_path(request.path)
                return json_response(doc)
            if head == "apis" and len(segments) == 2:
                doc = self.discovery.api_group(segments[1])
                if doc is None:
                    raise errors.not_found_path(request.path)
                return json_response(doc)
            if head == "apis" and len(segments) == 3:
                doc = self.discovery.resource_list(segments[1], segments[2])
                if doc is None:
                    raise errors.not_found_path(request.path)
                return json_response(doc)
        if (head == "api" and len(segments) < 3) or (head == "apis" and len(segments) < 4):
            raise errors.method_not_allowed()
        return await self.rest.handle(request, segments)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        limits = self.connection_limits
        http = _Server(self._boundary, access_log=None, keepalive_timeout=limits.idle_timeout)
        http.errors = self._errors
        self._runner = web.ServerRunner(http, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        guard = self.guard = ConnectionGuard(limits)
        guard.summaries.append(self._errors)
        guard.start()
        log.info(
            "API server connections: at most %d open, %.0f s to send a request head, %.0f s idle; "
            "in flight at most %d read-only and %d mutating requests",
            guard.max_connections, limits.header_timeout, limits.idle_timeout,
            self.inflight.limits.max_readonly, self.inflight.limits.max_mutating,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: TLSAcceptor(guard, ssl_context, lambda conn: http.handler(guard, conn)),
            host, port, backlog=1024, reuse_address=True,
        )  # fmt: skip
        KeepAlive.from_environment().apply(self._listener.sockets)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.guard is not None:
            await self.guard.stop()
        if self._listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listener.wait_closed(), 5)
            self._listener = None


@dataclass(frozen=True)
class _Identity:
    """What the in-flight limit needs to know of an authenticated client."""

    exempt: bool  # in system:masters: never limited, as upstream


_TOKEN_IDENTITY = _Identity(exempt=False)


def _identity_of(peercert: dict[str, Any] | None) -> _Identity | None:
    """The identity a client certificate (verified by TLS against the cluster CA) gives."""
    if not peercert:
        return None
    groups = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "organizationName"]
    return _Identity(exempt=_MASTERS_GROUP in groups)


def _long_running(request: web.BaseRequest) -> bool:
    """Watches and the streaming subresources, which upstream's in-flight limit skips."""
    if request.method == "GET" and request.query.get("watch", "").lower() in ("true", "1"):
        return True
    segments = [s for s in request.path.split("/") if s]
    if len(segments) < 5 or segments[0] not in ("api", "apis"):
        return False
    rr = parse_resource_path(segments)
    return rr is not None and rr.subresource in STREAMING_SUBRESOURCES


class _ConnectionHandler(RequestHandler):
    """aiohttp's per-connection protocol, reporting to the connection guard: whether the
    connection presented a client certificate (read once: it cannot change on a connection),
    when its requests start and end, and when it authenticates."""

    __slots__ = ("certificate_identity", "connection", "guard")

    def __init__(self, *args: Any, guard: ConnectionGuard, connection: Connection, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.connection = connection
        self.certificate_identity: _Identity | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.certificate_identity = _identity_of(transport.get_extra_info("peercert"))
        if self.certificate_identity is not None:
            self.guard.authenticated(self.connection)

    def token_authenticated(self) -> None:
        self.guard.authenticated(self.connection)

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        self.guard.request_started(self.connection)
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self.guard.request_finished(self.connection)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's own errors, mostly malformed HTTP from a client: one line per kind and
        minute, with a traceback only for what is not the client's doing."""
        exc = kwargs.get("exc_info")
        summary = getattr(self._manager, "errors", None)
        if summary is None or not isinstance(exc, BaseException):
            super().log_exception(*args, **kwargs)
            return
        client_error = isinstance(exc, HttpProcessingError)
        text = " ".join(str(exc).split())  # one line, whatever the client sent
        summary.log(
            ("aiohttp", type(exc).__name__), logging.INFO if client_error else logging.ERROR,
            "HTTP error on a client connection: %s: %s", type(exc).__name__, text[:200],
            exc_info=None if client_error else exc,
        )  # fmt: skip


class _Server(web.Server):
    """aiohttp's low-level server (no router, no middleware chain: we dispatch ourselves),
    with request bodies allowed up to the API's 3 MiB limit."""

    errors: LogSummary | None = None

    def handler(self, guard: ConnectionGuard, connection: Connection) -> RequestHandler:
        return _ConnectionHandler(self, loop=self._loop, guard=guard, connection=connection, **self._kwargs)

    def _make_request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=codec.MAX_BODY_BYTES + 1024
        )


def server_ssl_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS for the API: our serving certificate, and optional client certificates from our CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    return context


def elapsed_ms(start: float) -> float:
    return (time.monotonic() - start) * 1000
