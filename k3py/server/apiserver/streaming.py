"""pods/log, exec, attach and portforward: proxied to the kubelet streaming server of the pod's node.

The API server finds the pod's node, the node's InternalIP and kubelet port
(``status.daemonEndpoints.kubeletEndpoint.Port``) and dials it over TLS with its own kubelet
client certificate (``kube-apiserver-kubelet-client``, never the admin's). As upstream with
``--kubelet-certificate-authority``, the kubelet's serving certificate must chain to the
cluster CA and name the address dialled; beyond upstream, it must also name the node (a DNS
SAN): on one host several nodes may share an address, and a certificate of another node — or a
pod that grabbed the port — must not receive the request. Both checks happen before the
request is written (``k3py.util.streamproxy.connect_upstream``); a kubelet that fails them gets
nothing and the client a clear error (see ``k3py/util/kubelettls.py`` for the whole contract).

- logs: ``GET /containerLogs/<ns>/<pod>/<container>`` streamed back as it arrives.
- exec/attach/portforward: connection upgrades (WebSocket v5/v4 channels, the
  ``SPDY/3.1+portforward.k8s.io`` WebSocket tunnel, ``Upgrade: SPDY/3.1``). The request is checked
  and rewritten here the way upstream's ``ExecLocation``/``PortForwardLocation`` do (pod and
  container resolved, the kubelet's query built), then ``k3py.util.streamproxy`` forwards the
  client's upgrade headers, relays the kubelet's answer (its 101, or its Status error as is) and
  pipes the raw bytes both ways: the streaming protocol is spoken end to end by the client and
  the kubelet.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from aiohttp import web

from k3py.api import errors
from k3py.api.resources import ResourceInfo, ResourceTable
from k3py.server.apiserver.registry import Registry
from k3py.util.kubelettls import peer_names_node, peer_sans
from k3py.util.streamproxy import (
    PeerCheck,
    UpstreamError,
    open_streaming_get,
    proxy_streaming_upgrade,
)

DEFAULT_KUBELET_PORT = 10250
LOG_QUERY = ("follow", "tailLines", "timestamps", "previous", "sinceSeconds", "sinceTime", "limitBytes")
# The query of exec/attach the kubelet needs (container moves into the path).
EXEC_QUERY = ("command", "stdin", "stdout", "stderr", "tty")
# Kubelet routes per subresource.
UPGRADE_ROUTES = {"exec": "exec", "attach": "attach", "portforward": "portForward"}


def port_forward_ports(values: list[str]) -> list[int]:
    """The ``ports`` of a pods/portforward request (repeated or comma-separated), checked."""
    ports: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            try:
                port = int(part)
            except ValueError:
                raise errors.bad_request(f'invalid port "{part}": ports must be numbers between 1 and 65535') from None
            if not 0 < port < 65536:
                raise errors.bad_request(f"port {port} must be in the range 1-65535")
            ports.append(port)
    return ports


def is_upgrade_request(request: web.BaseRequest) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in tokens and bool(request.headers.get("Upgrade"))


class KubeletClientTLS(NamedTuple):
    """What the API server needs to dial kubelets: its client certificate and key, and the CA
    kubelets' serving certificates must chain to."""

    cert: Path
    key: Path
    ca: Path


def node_check(node_name: str) -> PeerCheck:
    """The check of a kubelet's verified certificate: it must name ``node_name``."""

    def check(peercert: dict[str, Any] | None) -> str | None:
        if peer_names_node(peercert, node_name):
            return None
        return (
            f'its certificate is not valid for node "{node_name}" '
            f"(it names: {', '.join(peer_sans(peercert)) or 'nothing'})"
        )

    return check


class StreamingProxy:
    def __init__(
        self, registry: Registry, table: ResourceTable, client_cert: Path, client_key: Path, kubelet_ca: Path
    ) -> None:
        self.registry = registry
        self.table = table
        self._client_cert = client_cert
        self._client_key = client_key
        self._kubelet_ca = kubelet_ca
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, hostname checked
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_verify_locations(cafile=str(self._kubelet_ca))
            context.load_cert_chain(str(self._client_cert), str(self._client_key))
            self._ssl = context
        return self._ssl

    async def _kubelet(self, pod: dict[str, Any]) -> tuple[str, int]:
        name = pod["metadata"]["name"]
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            raise errors.bad_request(f"pod {name} does not have a host assigned")
        nodes = self.table.lookup("", "v1", "nodes")
        assert nodes is not None
        node = await self.registry.get(nodes, "", node_name)
        status = node.get("status") or {}
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or () if isinstance(a, dict)}
        host = addresses.get("InternalIP") or addresses.get("ExternalIP") or addresses.get("Hostname")
        if not host:
            raise errors.ApiError(503, "ServiceUnavailable", f"node {node_name} reports no address to reach its kubelet")
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_KUBELET_PORT
        return str(host), int(port)

    @staticmethod
    def _container(pod: dict[str, Any], wanted: str) -> str:
        spec = pod.get("spec") or {}
        names = [c.get("name", "") for c in spec.get("containers") or () if isinstance(c, dict)]
        init_names = [c.get("name", "") for c in spec.get("initContainers") or () if isinstance(c, dict)]
        name = pod["metadata"]["name"]
        if wanted:
            if wanted not in names and wanted not in init_names:
                raise errors.bad_request(f"container {wanted} is not valid for pod {name}")
            return wanted
        if len(names) == 1:
            return names[0]
        raise errors.bad_request(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
            + (f" or one of the init containers: [{' '.join(init_names)}]" if init_names else "")
        )

    async def logs(self, request: web.BaseRequest, info: ResourceInfo, namespace: str, name: str) -> web.StreamResponse:
        pod = await self.registry.get(info, namespace, name)
        container = self._container(pod, request.query.get("container", ""))
        host, port = await self._kubelet(pod)
        query = {k: v for k, v in request.query.items() if k in LOG_QUERY}
        node_name = str((pod.get("spec") or {}).get("nodeName"))
        path_qs = f"/containerLogs/{quote(namespace)}/{quote(name)}/{quote(container)}"
        if query:
            path_qs += f"?{urlencode(query)}"
        try:
            upstream = await open_streaming_get(host, port, path_qs, self._ssl_context(), check_peer=node_check(node_name))
        except UpstreamError as e:
            raise errors.ApiError(
                503, "ServiceUnavailable", f"cannot reach the kubelet of node {node_name} at {host}:{port}: {e}"
            ) from None
        try:
            if upstream.status != 200:
                text = (await upstream.text()).strip()
                raise errors.ApiError(
                    upstream.status if 400 <= upstream.status < 600 else 502,
                    "NotFound" if upstream.status == 404 else "InternalError",
                    text or f"the kubelet answered {upstream.status}",
                )
            response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            # Either side going away ends the stream.
            with contextlib.suppress(ConnectionError, UpstreamError):
                async for chunk in upstream.body():
                    await response.write(chunk)
            return response
        finally:
            await upstream.close()

    async def upgrade(self, request: web.BaseRequest, info: ResourceInfo, namespace: str, name: str, subresource: str) -> web.StreamResponse:
        """pods/exec, pods/attach, pods/portforward: check, rewrite and proxy the upgrade."""
        pod = await self.registry.get(info, namespace, name)
        params: list[tuple[str, str]] = []
        if subresource == "portforward":
            path = f"/portForward/{quote(namespace)}/{quote(name)}"
            # Upstream's PortForwardOptions.ports become the kubelet's repeated port= parameter.
            params = [("port", str(p)) for p in port_forward_ports(request.query.getall("ports", []))]
        else:
            container = self._container(pod, request.query.get("container", ""))
            path = f"/{UPGRADE_ROUTES[subresource]}/{quote(namespace)}/{quote(name)}/{quote(container)}"
            params = [(k, v) for k, v in request.query.items() if k in EXEC_QUERY]
        host, port = await self._kubelet(pod)
        if not is_upgrade_request(request):
            raise errors.bad_request("Upgrade request required")
        path_qs = path + (f"?{urlencode(params)}" if params else "")
        try:
            return await proxy_streaming_upgrade(
                request, host, port, path_qs, self._ssl_context(),  # type: ignore[arg-type]
                check_peer=node_check(str((pod.get("spec") or {}).get("nodeName"))),
            )
        except UpstreamError as e:
            raise errors.ApiError(500, "InternalError", f"error dialing backend: {e}") from None
