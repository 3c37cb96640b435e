"""The HTTPS transport: aiohttp against a Kubernetes API server.

Credentials come from a kubeconfig (inline ``*-data`` fields or file paths, the current
context unless one is named) or from explicit paths / a bearer token. The TLS client
certificate must reach ``ssl.SSLContext.load_cert_chain`` as files, so inline data is written
to a private temporary directory that lives only while the context is being built.

One ``aiohttp.ClientSession`` serves all calls (keep-alive, a bounded connection pool); each
watch holds its own long-lived response and is read line by line — the API server sends one
JSON watch event per line.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from k3py.api.errors import ApiError
from k3py.client.interface import Client, Request, status_error

_METHODS = {
    "get": "GET",
    "list": "GET",
    "watch": "GET",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}


class KubeconfigError(ValueError):
    """The kubeconfig is missing, unreadable or lacks what a connection needs."""


@dataclass
class ConnectionConfig:
    """Where the API server is and how to authenticate to it."""

    server: str
    ca_data: bytes | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    insecure_skip_tls_verify: bool = False

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return False
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode())
        if self.cert_data and self.key_data:
            with tempfile.TemporaryDirectory(prefix="k3py-client-") as tmp:
                cert = Path(tmp) / "client.crt"
                key = Path(tmp) / "client.key"
                cert.write_bytes(self.cert_data)
                key.touch(mode=0o600)
                key.write_bytes(self.key_data)
                ctx.load_cert_chain(cert, key)
        return ctx


def _field_bytes(section: dict[str, Any], name: str, base_dir: Path) -> bytes | None:
    """``<name>-data`` (base64) or ``<name>`` (a path, relative to the kubeconfig's dir)."""
    data = section.get(f"{name}-data")
    if data:
        try:
            return base64.b64decode(data)
        except ValueError as e:
            raise KubeconfigError(f"kubeconfig field {name}-data is not valid base64") from e
    path = section.get(name)
    if path:
        full = Path(path) if Path(path).is_absolute() else base_dir / path
        try:
            return full.read_bytes()
        except OSError as e:
            raise KubeconfigError(f"cannot read {name} {full}: {e.strerror}") from e
    return None


def load_kubeconfig(path: str | Path, context: str | None = None) -> ConnectionConfig:
    """The connection settings of ``context`` (default: current-context) in a kubeconfig file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as e:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a mapping")

    def named(section: str, name: str) -> dict[str, Any]:
        for entry in config.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise KubeconfigError(f"kubeconfig {path} has no {section[:-1]} named {name!r}")

    context_name = context or config.get("current-context")
    if not context_name:
        raise KubeconfigError(f"kubeconfig {path} has no current-context")
    ctx = named("contexts", context_name).get("context") or {}
    cluster = named("clusters", ctx.get("cluster", "")).get("cluster") or {}
    user: dict[str, Any] = {}
    if ctx.get("user"):
        user = named("users", ctx["user"]).get("user") or {}
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    base = path.parent
    return ConnectionConfig(
        server=server.rstrip("/"),
        ca_data=_field_bytes(cluster, "certificate-authority", base),
        cert_data=_field_bytes(user, "client-certificate", base),
        key_data=_field_bytes(user, "client-key", base),
        token=user.get("token"),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
    )


class HttpsTransport:
    """:class:`~k3py.client.interface.Transport` over HTTP(S) with aiohttp."""

    def __init__(self, config: ConnectionConfig, *, pool_size: int = 64, timeout: float = 60.0) -> None:
        self.config = config
        self._ssl = config.ssl_context()
        self._pool_size = pool_size
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Accept": "application/json", "User-Agent": "k3py-client/0.1"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=self._ssl),
                headers=self._headers,
                json_serialize=json.dumps,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request_args(self, request: Request) -> dict[str, Any]:
        args: dict[str, Any] = {"params": dict(request.query)}
        if request.body is not None:
            args["data"] = json.dumps(request.body)
            args["headers"] = {"Content-Type": request.content_type or "application/json"}
        return args

    async def call(self, request: Request) -> Any:
        url = self.config.server + request.path()
        try:
            async with self._get_session().request(
                _METHODS[request.verb], url,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                **self._request_args(request),
            ) as response:
                body = await response.read()
                return _decode(response.status, body)
        except aiohttp.ClientError as e:
            raise ApiError(503, "ServiceUnavailable", f"cannot reach {self.config.server}: {e}") from e
        except TimeoutError as e:
            raise ApiError(504, "Timeout", f"request to {url} timed out") from e

    async def watch(self, request: Request) -> AsyncIterator[dict[str, Any]]:
        url = self.config.server + request.path()
        try:
            async with self._get_session().get(
                url,
                params=dict(request.query),
                # A watch may be silent for long; but not past its own timeout: a connection
                # that died without a FIN must not hang the informer forever.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout,
                                              sock_read=_watch_read_timeout(request)),
            ) as response:
                if response.status >= 400:
                    _decode(response.status, await response.read())
                while True:
                    line = await response.content.readline()
                    if not line:
                        return
                    line = line.strip()
                    if line:
                        yield json.loads(line)
        except aiohttp.ClientError as e:
            raise ApiError(503, "ServiceUnavailable", f"watch {url} failed: {e}") from e
        except TimeoutError as e:
            raise ApiError(504, "Timeout", f"watch {url} went silent") from e


def _watch_read_timeout(request: Request) -> float | None:
    try:
        seconds = float(request.query.get("timeoutSeconds", ""))
    except ValueError:
        return None
    return seconds + 60.0


def _decode(status: int, body: bytes) -> Any:
    try:
        decoded = json.loads(body) if body else {}
    except ValueError:
        decoded = None
    if status >= 400:
        if isinstance(decoded, dict) and decoded.get("kind") == "Status":
            raise status_error(decoded, status)
        text = body.decode(errors="replace").strip()[:500]
        raise ApiError(status, "Unknown", text or f"HTTP {status}")
    if decoded is None:
        raise ApiError(500, "InternalError", "the server answered with a body that is not JSON")
    return decoded


def client_from_kubeconfig(path: str | Path, *, context: str | None = None,
                           field_manager: str = "k3py") -> Client:
    """A :class:`Client` over HTTPS configured from a kubeconfig file."""
    return Client(HttpsTransport(load_kubeconfig(path, context)), field_manager=field_manager)


def client_from_files(server: str, *, ca: Path | None = None, cert: Path | None = None,
                      key: Path | None = None, token: str | None = None,
                      field_manager: str = "k3py") -> Client:
    """A :class:`Client` over HTTPS from explicit certificate paths and/or a bearer token."""
    config = ConnectionConfig(
        server=server.rstrip("/"),
        ca_data=ca.read_bytes() if ca else None,
        cert_data=cert.read_bytes() if cert else None,
        key_data=key.read_bytes() if key else None,
        token=token,
    )
    return Client(HttpsTransport(config), field_manager=field_manager)
