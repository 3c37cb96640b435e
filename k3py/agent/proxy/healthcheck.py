"""The ``healthCheckNodePort`` servers of LoadBalancer Services with externalTrafficPolicy Local.

An external load balancer asks each node, on the Service's ``healthCheckNodePort``, whether it
should send it traffic; only nodes with an endpoint of the Service should get any, since they
will not forward it elsewhere. As kube-proxy's, every request (any path) is answered with
``200`` when this node has ready endpoints of the Service and ``503`` when it has none, and a
JSON body in upstream's layout (indented with tabs): ``{"service": {"namespace": ..., "name":
...}, "localEndpoints": N, "serviceProxyHealthy": true}``.

One listener per port on every address of the node; a port another program holds is logged
and retried at the next sync. The servers run on the event loop and only read a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("k3py.agent.proxy")

REQUEST_LIMIT = 8192
REQUEST_TIMEOUT = 5.0


@dataclass
class _Entry:
    service: tuple[str, str]
    local_endpoints: int
    server: asyncio.Server | None = None


def health_body(service: tuple[str, str], local_endpoints: int, healthy: bool = True) -> bytes:
    namespace, name = service
    return (
        "{\n"
        '\t"service": {\n'
        f'\t\t"namespace": "{namespace}",\n'
        f'\t\t"name": "{name}"\n'
        "\t},\n"
        f'\t"localEndpoints": {local_endpoints},\n'
        f'\t"serviceProxyHealthy": {"true" if healthy else "false"}\n'
        "}"
    ).encode()


class HealthCheckServers:
    """``sync({port: (service, local endpoint count)})`` opens, updates and closes listeners."""

    def __init__(self, bind_address: str = "0.0.0.0") -> None:
        self.bind_address = bind_address
        self._entries: dict[int, _Entry] = {}

    @property
    def ports(self) -> dict[int, tuple[tuple[str, str], int]]:
        return {port: (e.service, e.local_endpoints) for port, e in self._entries.items() if e.server is not None}

    async def sync(self, wanted: Mapping[int, tuple[tuple[str, str], int]]) -> None:
        for port in [p for p in self._entries if p not in wanted]:
            entry = self._entries.pop(port)
            if entry.server is not None:
                entry.server.close()
        for port, (service, count) in wanted.items():
            entry = self._entries.get(port)
            if entry is None or entry.service != service:
                if entry is not None and entry.server is not None:
                    entry.server.close()
                entry = self._entries[port] = _Entry(service, count)
            entry.local_endpoints = count
            if entry.server is None:
                try:
                    entry.server = await asyncio.start_server(
                        lambda r, w, e=entry: self._serve(e, r, w), self.bind_address, port, reuse_address=True, limit=REQUEST_LIMIT,
                    )  # fmt: skip
                except OSError as exc:
                    log.error("service proxy: health check port %d of %s/%s: %s", port, *service, exc)

    async def close(self) -> None:
        servers = [e.server for e in self._entries.values() if e.server is not None]
        self._entries.clear()
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _serve(self, entry: _Entry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await reader.readuntil(b"\r\n\r\n")
            count = entry.local_endpoints
            body = health_body(entry.service, count)
            status = "200 OK" if count else "503 Service Unavailable"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
