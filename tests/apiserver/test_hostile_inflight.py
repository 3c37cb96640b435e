"""The in-flight request limits (upstream's --max-requests-inflight and
--max-mutating-requests-inflight): past them a client gets 429 with Retry-After at once.

The server runs with small limits (3 read-only, 2 mutating). Requests are held in flight the
way a slow or hostile client holds them: a POST whose body never finishes arriving, a list
that waits for a resourceVersion the server has not reached yet (it gives up after 3 s). The
clients are a bearer-token user; the admin certificate (group system:masters) is exempt, as
upstream, and so are watches.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from tests.apiserver.hostile import metrics
from tests.cluster import TestCluster

TOKEN = "inflight-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    args = ["--token", TOKEN, "--max-requests-inflight", "3", "--max-mutating-requests-inflight", "2"]
    with TestCluster(tmp_path_factory.mktemp("inflight"), args) as running:
        yield running


def _token_request(cluster: TestCluster, method: str, path: str, body: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = dict(AUTH)
    if body is not None:
        headers["Content-Type"] = "application/json"
    return cluster.request(method, path, body, headers, client_cert=False)


def _configmap(name: str = "", generate: str = "") -> str:
    meta = {"name": name} if name else {"generateName": generate}
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})


def _hold_a_post(cluster: TestCluster) -> ssl.SSLSocket:
    """A token POST whose head arrived and whose body never finishes: in flight until closed."""
    context = cluster.ssl_context(client_cert=False)

    def start() -> ssl.SSLSocket:
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", cluster.port), timeout=10), server_hostname="127.0.0.1")
        tls.sendall(
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: k\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\":"
        )
        return tls

    return cluster.in_netns(start)


def _assert_429(status: int, body: bytes, headers: dict[str, str]) -> None:
    assert status == 429, body[:300]
    assert headers.get("retry-after") == "1"
    answer = json.loads(body)
    assert answer["kind"] == "Status" and answer["reason"] == "TooManyRequests"
    assert answer["details"]["retryAfterSeconds"] == 1


def test_mutating_requests_past_the_limit_get_429_with_retry_after(cluster: TestCluster) -> None:
    held = [_hold_a_post(cluster), _hold_a_post(cluster)]
    try:
        # Until both held POSTs are being served a new one may still get through: wait for
        # the first refusal (each attempt that gets in creates a ConfigMap, which is harmless).
        refused = cluster.wait_for(
            lambda: (r := _token_request(cluster, "POST", "/api/v1/namespaces/default/configmaps", _configmap(generate="probe-")))[0] == 429 and r,
            timeout=30, what="a third mutating request to be refused",
        )  # fmt: skip
        _assert_429(*refused)
        assert metrics(cluster)['apiserver_current_inflight_requests{request_kind="mutating"}'] == 2

        # The read-only budget is separate; watches and the admin are not limited at all.
        status, body, _ = _token_request(cluster, "GET", "/api/v1/namespaces/default/configmaps")
        assert status == 200, body[:200]
        status, body, _ = cluster.request(
            "POST", "/api/v1/namespaces/default/configmaps", _configmap("by-admin"), {"Content-Type": "application/json"}
        )
        assert status == 201, body[:200]
        cluster.kubectl("create", "configmap", "by-kubectl")
        status, body, _ = _token_request(cluster, "GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1")
        assert status == 200 and b"by-kubectl" in body
    finally:
        for tls in held:
            tls.close()
    # Clients that went away mid-body give their slots back.
    cluster.wait_for(
        lambda: metrics(cluster)['apiserver_current_inflight_requests{request_kind="mutating"}'] == 0,
        timeout=30, what="the abandoned requests to leave the in-flight count",
    )  # fmt: skip
    status, body, _ = _token_request(cluster, "POST", "/api/v1/namespaces/default/configmaps", _configmap("after"))
    assert status == 201, body[:200]


def test_read_only_requests_past_the_limit_get_429(cluster: TestCluster) -> None:
    status, body, _ = _token_request(cluster, "GET", "/api/v1/namespaces/default/configmaps")
    future = int(json.loads(body)["metadata"]["resourceVersion"]) + 1_000_000
    slow_list = f"/api/v1/namespaces/default/configmaps?resourceVersion={future}&resourceVersionMatch=NotOlderThan"
    results: list[int] = []

    def slow() -> None:
        results.append(_token_request(cluster, "GET", slow_list)[0])

    holders = [threading.Thread(target=slow) for _ in range(3)]
    for thread in holders:
        thread.start()
    try:
        cluster.wait_for(
            lambda: metrics(cluster)['apiserver_current_inflight_requests{request_kind="readOnly"}'] == 3,
            timeout=10, interval=0.02, what="three read-only requests in flight",
        )  # fmt: skip
        _assert_429(*_token_request(cluster, "GET", "/api/v1/namespaces"))
        # Health checks and mutating requests are not held up by the read-only budget.
        assert _token_request(cluster, "GET", "/readyz")[0] == 200
        assert _token_request(cluster, "POST", "/api/v1/namespaces/default/configmaps", _configmap("while-reads-wait"))[0] == 201
    finally:
        for thread in holders:
            thread.join(30)
    assert results == [504, 504, 504]  # the server gave up waiting for that resourceVersion
    status, body, _ = _token_request(cluster, "GET", "/api/v1/namespaces")
    assert status == 200, body[:200]
