"""kubectl → API-server-style proxy → TLS streaming server: proxying is a byte pipe after the 101.

The test API endpoint here does what the real API server will do for pods/exec|attach|
portforward: authenticate to the kubelet's streaming server with a client certificate and hand
the upgraded connection through with `proxy_streaming_upgrade`. Real kubectl on one end, the
real streaming server (TLS, CN check) and host processes on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from k3py.agent.streaming.proxy import (
    UpstreamError,
    proxy_streaming_get,
    proxy_streaming_upgrade,
)
from k3py.agent.streaming.server import StreamingServer
from tests.agent.test_streaming_kubectl import (
    CONTAINER,
    POD,
    TRANSPORTS,
    FakeApi,
    HostProcessBackend,
    api_resource_list,
    kubectl,
    pod_json,
    start_port_forward,
)
from tests.agent.test_streaming_server import ALLOWED_CN, Pki, _issue, _write


@pytest.fixture
async def proxied_api(tmp_path: Path) -> AsyncIterator[FakeApi]:
    assert shutil.which("kubectl"), "kubectl must be installed (scripts/install-test-deps)"
    ca = _issue("k3py-test-ca", None, ca=True)
    pki = Pki(
        ca=_write(tmp_path, "ca", ca)[0],
        server=_write(tmp_path, "kubelet", _issue("node", ca, server=True)),
        allowed_client=_write(tmp_path, "apiserver", _issue(ALLOWED_CN, ca)),
        other_cn_client=_write(tmp_path, "other", _issue("other", ca)),
        foreign_client=_write(tmp_path, "other", _issue("other", ca)),
    )
    backend = HostProcessBackend()
    kubelet = StreamingServer(
        backend,
        cert_file=pki.server[0],
        key_file=pki.server[1],
        client_ca_file=pki.ca,
        allowed_common_names=[ALLOWED_CN],
    )
    kubelet_port = await kubelet.start("127.0.0.1", 0)
    kubelet_client = pki.client_context(pki.allowed_client)
    upgrades: list[str] = []
    pod_path = f"/api/v1/namespaces/default/pods/{POD}"

    async def proxy(request: web.Request, kubelet_path: str) -> web.StreamResponse:
        upgrades.append(request.headers.get("Upgrade", ""))
        query = request.rel_url.raw_query_string  # still percent-encoded, as it came
        try:
            return await proxy_streaming_upgrade(
                request, "127.0.0.1", kubelet_port, f"{kubelet_path}?{query}", kubelet_client
            )
        except UpstreamError as exc:
            return web.json_response(
                {"kind": "Status", "message": str(exc), "code": 502}, status=502
            )

    async def pod_exec(request: web.Request) -> web.StreamResponse:
        container = request.query.get("container") or CONTAINER
        return await proxy(request, f"/exec/default/{POD}/{container}")

    async def pod_port_forward(request: web.Request) -> web.StreamResponse:
        return await proxy(request, f"/portForward/default/{POD}")

    async def pod_log(request: web.Request) -> web.StreamResponse:
        container = request.query.get("container") or CONTAINER
        path_qs = f"/containerLogs/default/{POD}/{container}?{request.rel_url.raw_query_string}"
        return await proxy_streaming_get(
            request, "127.0.0.1", kubelet_port, path_qs, kubelet_client
        )

    def static(payload: object) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response(payload)

        return answer

    app = web.Application()
    version = {"major": "1", "minor": "32", "gitVersion": "v1.32.4"}
    app.router.add_get("/version", static(version))
    app.router.add_get("/api", static({"kind": "APIVersions", "versions": ["v1"]}))
    app.router.add_get("/apis", static({"kind": "APIGroupList", "groups": []}))
    app.router.add_get("/api/v1", static(api_resource_list()))
    app.router.add_get(pod_path, static(pod_json(80)))
    app.router.add_get(pod_path + "/log", pod_log)
    for method in ("GET", "POST"):
        app.router.add_route(method, pod_path + "/exec", pod_exec)
        app.router.add_route(method, pod_path + "/portforward", pod_port_forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: t, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: test}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: u, namespace: default}}]\n"
        "current-context: t\n"
    )
    try:
        yield FakeApi(url, kubeconfig, tmp_path / "cache", backend, [], upgrades, [32])
    finally:
        await runner.cleanup()
        await kubelet.stop()
        for process in backend.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_exec_through_the_proxy(proxied_api: FakeApi, websockets: bool) -> None:
    result = await kubectl(
        proxied_api,
        "exec",
        "-i",
        POD,
        "--",
        "sh",
        "-c",
        "tr a-z A-Z; echo err >&2; exit 3",
        stdin=b"proxied input\n",
        websockets=websockets,
    )
    assert (result.code, result.stdout) == (3, "PROXIED INPUT\n")
    assert "err\n" in result.stderr and "command terminated with exit code 3" in result.stderr
    assert proxied_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]


async def test_logs_through_the_proxy(proxied_api: FakeApi) -> None:
    result = await kubectl(proxied_api, "logs", POD, "--tail=3")
    assert (result.code, result.stdout) == (0, "c log line 7\nc log line 8\nc log line 9\n")
    # kubectl checks container names itself, so ask directly: the kubelet's 404 Status passes.
    async with aiohttp.ClientSession() as http:
        url = f"{proxied_api.url}/api/v1/namespaces/default/pods/{POD}/log?container=ghost"
        async with http.get(url) as response:
            assert response.status == 404
            status = await response.json()
    assert status["reason"] == "NotFound"
    assert status["message"] == 'container "ghost" in pod "x" not found'


async def test_kubelet_refusal_reaches_kubectl(proxied_api: FakeApi) -> None:
    result = await kubectl(proxied_api, "exec", POD, "-c", "ghost", "--", "true", websockets=False)
    assert result.code != 0
    assert 'container "ghost" in pod "x" not found' in result.stderr


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_port_forward_through_the_proxy(proxied_api: FakeApi, websockets: bool) -> None:
    async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
        writer.close()

    service = await asyncio.start_server(shout, "127.0.0.1", 0)
    service_port = service.sockets[0].getsockname()[1]
    process, local_port = await start_port_forward(proxied_api, service_port, websockets)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
        payload = os.urandom(20_000).hex().encode() + b"\n"
        writer.write(payload)
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 20) == payload.upper()
        writer.close()
        await writer.wait_closed()
        assert proxied_api.upgrades == ["websocket" if websockets else "SPDY/3.1"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
        service.close()
        await service.wait_closed()


async def test_unreachable_streaming_server_is_an_upstream_error() -> None:
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await proxy_streaming_upgrade(
                    request, "127.0.0.1", dead_port, "/exec/a/b/c", None
                )
            except UpstreamError as exc:
                return web.json_response({"message": str(exc)}, status=502)

        app = web.Application()
        app.router.add_post("/exec", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{runner.addresses[0][1]}/exec"
                headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
                async with http.post(url, headers=headers) as response:
                    assert response.status == 502
                    message = (await response.json())["message"]
                    assert message.startswith(
                        f"cannot reach the streaming server at 127.0.0.1:{dead_port}"
                    )
        finally:
            await runner.cleanup()
