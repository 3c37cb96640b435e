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

Errors: an ``ApiError`` becomes its Status; any other exception is logged with its traceback
and answered with a 500 Status — a client never sees a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import platform
import ssl
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from k3py import KUBERNETES_VERSION
from k3py.api import errors
from k3py.api.resources import ResourceTable
from k3py.server.apiserver import codec
from k3py.server.apiserver.discovery import Discovery, aggregated_version
from k3py.server.apiserver.handlers import RestHandler, json_response
from k3py.server.apiserver.openapi_routes import OpenAPIRoutes
from k3py.server.apiserver.registry import Registry
from k3py.server.apiserver.reviews import REVIEW_RESOURCES
from k3py.server.apiserver.streaming import StreamingProxy

log = logging.getLogger("k3py.apiserver")

GIT_VERSION = f"{KUBERNETES_VERSION}+k3py"
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")


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
        kubelet_client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.registry = registry
        self.table = table
        self.token = token
        self.advertise_address = advertise_address
        self.discovery = Discovery(table)
        self.rest = RestHandler(registry, table)
        self.rest.token_valid = self._token_valid
        if kubelet_client_cert is not None:
            self.rest.streaming = StreamingProxy(registry, table, *kubelet_client_cert)
        for info in REVIEW_RESOURCES:
            if table.lookup(info.group, info.version, info.plural) is None:
                table.add(info)
        self.openapi = OpenAPIRoutes(table)
        self.ready = False
        self._version_body = orjson.dumps(version_info())
        self._runner: web.ServerRunner | None = None

    # -- middleware -------------------------------------------------------------------------

    def _authenticated(self, request: web.BaseRequest) -> bool:
        protocol = request.protocol
        has_cert = getattr(protocol, "verified_client_cert", None)
        if has_cert is None:
            transport = request.transport
            # The TLS layer has verified any certificate it hands us against the cluster CA.
            has_cert = bool(transport is not None and transport.get_extra_info("peercert"))
            if isinstance(protocol, _ConnectionHandler):
                protocol.verified_client_cert = has_cert
        if has_cert:
            return True
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self._token_valid(auth[7:].strip())
        return False

    def _token_valid(self, token: str) -> bool:
        return bool(self.token) and hmac.compare_digest(token.encode(), self.token.encode())

    async def _boundary(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            if request.path not in _PUBLIC_PATHS and not self._authenticated(request):
                raise errors.unauthorized()
            return await self._dispatch(request)
        except errors.ApiError as e:
            return _status_response(e)
        except web.HTTPRequestEntityTooLarge:
            return _status_response(errors.request_entity_too_large())
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as e:
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            return _status_response(errors.internal(f"{type(e).__name__}: {e}"))

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
            return self.openapi.serve(request, segments)
        raise errors.not_found_path(path)

    def _root(self) -> web.Response:
        paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]
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

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        server = _Server(self._boundary, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, backlog=1024, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class _ConnectionHandler(RequestHandler):
    """aiohttp's per-connection protocol, with room to remember the connection's client
    certificate check (None: not checked yet)."""

    __slots__ = ("verified_client_cert",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verified_client_cert: bool | None = None


class _Server(web.Server):
    """aiohttp's low-level server (no router, no middleware chain: we dispatch ourselves),
    with request bodies allowed up to the API's 3 MiB limit."""

    def __call__(self) -> RequestHandler:
        return _ConnectionHandler(self, loop=self._loop, **self._kwargs)

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
