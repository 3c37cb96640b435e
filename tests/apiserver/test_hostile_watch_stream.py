"""A watch that fails after its 200 was sent ends with an ERROR event — never a second HTTP
status line in the middle of the stream (which is what a client got when a watch failed
mid-stream: aiohttp answered the handler's exception with a fresh "HTTP/1.1 500" written into
the chunked body).

Every failure a client can cause is now refused before the 200 (``test_hostile_bodies``), so
this safety net can only be reached through a server fault: the test injects one, making the
event encoder fail on the second event, into a real API server (real store, watch cache, TLS)
that runs in this process on a thread of its own test host (network namespace).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from k3py.api.resources import builtin_resources
from k3py.server.apiserver import handlers
from k3py.server.apiserver.registry import Registry, WriteOptions
from k3py.server.apiserver.server import ApiServer, server_ssl_context
from k3py.server.apiserver.system import ensure_system_objects
from k3py.server.apiserver.watchcache import WatchCache
from k3py.server.bootstrap.certs import ensure_certificates
from k3py.store.factory import open_store
from tests.cluster import TestHost


async def _watch_with_a_fault(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, int]:
    tls = ensure_certificates(data_dir)
    store = open_store("", data_dir / "db")
    await store.start()
    cache = WatchCache(store)
    await cache.start()
    registry = Registry(store, cache, builtin_resources())
    server = ApiServer(registry, registry.table, "token", "127.0.0.1:6443")
    await server.start("127.0.0.1", 6443, server_ssl_context(tls.serving_cert, tls.serving_key, tls.ca_cert))
    await ensure_system_objects(registry, "127.0.0.1", 6443)
    configmaps = registry.table.lookup("", "v1", "configmaps")
    assert configmaps is not None
    await registry.create(configmaps, "default", {"metadata": {"name": "first"}}, WriteOptions())

    real_line = handlers._EventEncoder.line
    encoded = 0

    def failing_line(self: Any, kind: str, event: Any) -> bytes:
        nonlocal encoded
        encoded += 1
        if encoded == 2:
            raise RuntimeError("injected encoder fault")
        return real_line(self, kind, event)

    monkeypatch.setattr(handlers._EventEncoder, "line", failing_line)
    try:
        import ssl

        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        context.load_cert_chain(str(tls.admin_cert), str(tls.admin_key))
        reader, writer = await asyncio.open_connection("127.0.0.1", 6443, ssl=context, server_hostname="127.0.0.1")
        writer.write(b"GET /api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0 HTTP/1.1\r\nHost: k\r\n\r\n")
        await writer.drain()
        received = b""
        async with asyncio.timeout(10):
            while b"first" not in received:
                received += await reader.read(65536)
        await registry.create(configmaps, "default", {"metadata": {"name": "second"}}, WriteOptions())
        async with asyncio.timeout(10):  # until the chunked stream's terminating chunk
            while not received.endswith(b"\r\n0\r\n\r\n"):
                chunk = await reader.read(65536)
                assert chunk, "the connection closed before the stream ended"
                received += chunk
        writer.close()
        return received, encoded
    finally:
        await server.stop()
        await cache.close()
        await store.close()


def test_a_watch_failing_mid_stream_ends_with_an_error_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    host = TestHost()
    try:
        with caplog.at_level(logging.ERROR, logger="k3py.apiserver.http"):
            raw, encoded = host.in_netns(asyncio.run, _watch_with_a_fault(tmp_path, monkeypatch))
    finally:
        host.close()
    assert encoded == 2
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:3000]
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert chunked.endswith(b"0\r\n\r\n"), "the chunked stream was not ended properly"
    events = [json.loads(line) for line in _dechunk(chunked).splitlines() if line.strip()]
    assert [e["type"] for e in events][-1] == "ERROR"
    assert events[-1]["object"]["code"] == 500 and "injected encoder fault" in events[-1]["object"]["message"]
    assert any("ended with an error" in r.getMessage() for r in caplog.records)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
