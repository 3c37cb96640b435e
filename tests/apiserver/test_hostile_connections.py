"""Idle, half-open and slow connections: they are closed in time and never lock the admin out.

As found: 1,008 idle unauthenticated TLS connections locked the admin out of k3py — the
process hit its open-file limit (1024, the usual soft limit services start with), every
``accept()`` failed, and asyncio logged a traceback for each failure (35 MB of log in 14 s);
idle connections were never closed. Now the server raises its soft limit to the hard limit,
closes a connection that has not finished TLS and sent a request head within 32 s (upstream's
ReadHeaderTimeout) and idle keep-alive ones after 90 s, and at its connection cap closes the
oldest idle connection that has not authenticated to make room.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import selectors
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apiserver.hostile import metrics, raise_own_open_file_limit
from tests.cluster import TestCluster

IDLE_CONNECTIONS = 1200


@pytest.fixture
def own_file_limit() -> Iterator[None]:
    """This test process opens well over a thousand sockets."""
    old = raise_own_open_file_limit()
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _server_started_with_soft_file_limit(base: Path, soft: int, *args: str) -> TestCluster:
    """A server started the way many hosts start services: a soft open-file limit of
    ``soft`` (the hard limit stays). The limit is inherited from this process at spawn."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    cluster = TestCluster(base, args)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return cluster


def _open_idle_tls(cluster: TestCluster, count: int, client_cert: bool = False) -> list[ssl.SSLSocket]:
    """``count`` TLS connections that finish the handshake and then send nothing."""
    context = cluster.ssl_context(client_cert=client_cert)

    def open_all() -> list[ssl.SSLSocket]:
        opened: list[ssl.SSLSocket] = []
        for _ in range(count):
            try:
                raw = socket.create_connection(("127.0.0.1", cluster.port), timeout=5)
                opened.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
            except OSError as e:
                _close_all(list(opened))
                raise AssertionError(f"the server stopped completing TLS handshakes after {len(opened)} connections: {e!r}") from None
        return opened

    return cluster.in_netns(open_all)


def _closed_by_server(sockets: list[socket.socket], within: float) -> tuple[int, float]:
    """Wait until the server has closed every socket (EOF or reset), or ``within`` seconds
    pass; returns how many it closed and when the last one went."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed, last = 0, 0.0
    deadline = time.monotonic() + within
    while closed < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ssl.SSLError, OSError):
                data = b""
            if not data:
                selector.unregister(sock)
                closed += 1
                last = time.monotonic()
    selector.close()
    return closed, last


def _admin_request_seconds(cluster: TestCluster) -> float:
    started = time.monotonic()
    status, body, _ = cluster.request("GET", "/api/v1/namespaces", timeout=30)
    assert status == 200, body[:200]
    return time.monotonic() - started


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _log_records(cluster: TestCluster, lines_before: int) -> list[str]:
    """The server's log lines since ``lines_before``, without the event-loop watchdog's
    reports (a stall report and its stack are about load, not about these connections)."""
    lines = cluster.log_path.read_text(errors="replace").splitlines()[lines_before:]
    kept: list[str] = []
    in_report = False
    for line in lines:
        if "k3py.util.loopwatch" in line:
            in_report = True
            continue
        if in_report and (line.startswith("  ") or not line.strip()):
            continue
        in_report = False
        kept.append(line)
    return kept


def _assert_few_log_lines(cluster: TestCluster, lines_before: int, connection_lines: int) -> None:
    """A flood of connections is summarised, not logged per connection (main wrote a traceback
    for every accept() that failed for want of file descriptors)."""
    lines = _log_records(cluster, lines_before)
    about_connections = [line for line in lines if "k3py.apiserver.connections" in line]
    assert len(about_connections) == connection_lines, "\n".join(lines[:30])
    assert not any("Traceback" in line or "asyncio" in line for line in lines), "\n".join(lines[:30])
    assert len(lines) < 10, "\n".join(lines[:30])


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def test_1200_idle_tls_connections_do_not_lock_the_admin_out_and_are_closed(
    tmp_path: Path, own_file_limit: None
) -> None:
    """Default settings, soft open-file limit 1024 at start: 1,200 unauthenticated TLS
    connections that send nothing. The admin still gets answers within a second (median of
    three raw requests; kubectl works), the idle connections are all closed by the 32 s
    header timeout, one line in the log says so, and they cost far less than asyncio's
    256 KiB read buffer each."""
    cluster = _server_started_with_soft_file_limit(tmp_path / "c", 1024)
    sockets: list[socket.socket] = []
    try:
        assert cluster.process is not None
        rss_before = _rss_bytes(cluster.process.pid)
        log_lines_before = len(cluster.log_path.read_text().splitlines())
        opened_at = time.monotonic()
        sockets.extend(_open_idle_tls(cluster, IDLE_CONNECTIONS))
        timings = [_admin_request_seconds(cluster) for _ in range(3)]
        assert statistics.median(timings) < 1.0, f"admin requests took {timings}"
        assert "default" in cluster.kubectl("get", "ns", timeout=60).stdout
        m = metrics(cluster)
        assert m["k3py_apiserver_open_connections"] >= IDLE_CONNECTIONS
        per_connection = (_rss_bytes(cluster.process.pid) - rss_before) / IDLE_CONNECTIONS
        assert per_connection < 128 * 1024, f"{per_connection / 1024:.0f} KiB of memory per idle connection"

        closed, last = _closed_by_server(sockets, within=32 + 30)
        assert closed == IDLE_CONNECTIONS, f"only {closed} of {IDLE_CONNECTIONS} idle connections were closed"
        assert last - opened_at >= 30, "idle connections were closed before the header timeout"
        assert metrics(cluster)['k3py_apiserver_closed_connections_total{reason="header_timeout"}'] >= IDLE_CONNECTIONS
        _assert_few_log_lines(cluster, log_lines_before, connection_lines=1)
    finally:
        _close_all(sockets)
        cluster.stop()


def test_at_the_connection_cap_idle_unauthenticated_connections_make_room(
    tmp_path: Path, own_file_limit: None
) -> None:
    """A cap of 200 connections and 1,200 idle unauthenticated ones: the newest connections
    displace the oldest idle unauthenticated ones, so the admin — and an admin connection
    opened before the flood, idle between its requests — keep being served."""
    cluster = TestCluster(tmp_path / "c", ["--max-connections", "200"])
    sockets: list[socket.socket] = []
    try:
        cluster.start()
        context = cluster.ssl_context()
        admin = cluster.in_netns(lambda: http.client.HTTPSConnection("127.0.0.1", cluster.port, context=context, timeout=30))

        def admin_get() -> int:
            admin.request("GET", "/api/v1/namespaces/default")
            response = admin.getresponse()
            response.read()
            return response.status

        assert cluster.in_netns(admin_get) == 200
        log_lines_before = len(cluster.log_path.read_text().splitlines())
        sockets.extend(_open_idle_tls(cluster, IDLE_CONNECTIONS))
        m = metrics(cluster)
        assert m["k3py_apiserver_open_connections"] <= 200
        assert m['k3py_apiserver_closed_connections_total{reason="evicted"}'] >= IDLE_CONNECTIONS - 200
        assert statistics.median(_admin_request_seconds(cluster) for _ in range(3)) < 1.0
        assert cluster.in_netns(admin_get) == 200, "the idle admin connection was evicted"
        assert "default" in cluster.kubectl("get", "ns", timeout=60).stdout
        closed, _ = _closed_by_server(sockets, within=10)
        assert closed >= IDLE_CONNECTIONS - 200
        _assert_few_log_lines(cluster, log_lines_before, connection_lines=1)
    finally:
        _close_all(sockets)
        cluster.stop()


def test_half_open_slow_and_idle_connections_close_but_a_watch_stays(tmp_path: Path) -> None:
    """Short timeouts (2 s for the request head, 3 s idle) so the test need not wait 90 s: a
    TCP connection that never starts TLS, a TLS one that trickles an incomplete request head,
    and a keep-alive connection idle after its request are all closed; a watch that runs
    longer than both timeouts is not."""
    cluster = TestCluster(tmp_path / "c", ["--request-header-timeout", "2", "--idle-connection-timeout", "3"])
    try:
        cluster.start()
        context = cluster.ssl_context()

        def connections() -> tuple[socket.socket, ssl.SSLSocket, ssl.SSLSocket, ssl.SSLSocket]:
            no_tls = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
            slow = context.wrap_socket(socket.create_connection(("127.0.0.1", cluster.port)), server_hostname="127.0.0.1")
            slow.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: k\r\n")  # no blank line: never complete
            idle = context.wrap_socket(socket.create_connection(("127.0.0.1", cluster.port)), server_hostname="127.0.0.1")
            idle.sendall(b"GET /api/v1/namespaces/default HTTP/1.1\r\nHost: k\r\n\r\n")
            watch = context.wrap_socket(socket.create_connection(("127.0.0.1", cluster.port)), server_hostname="127.0.0.1")
            watch.sendall(b"GET /api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=60 HTTP/1.1\r\nHost: k\r\n\r\n")
            return no_tls, slow, idle, watch

        no_tls, slow, idle, watch = cluster.in_netns(connections)
        started = time.monotonic()
        idle.settimeout(10)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        closed, last = _closed_by_server([no_tls, slow, idle], within=20)
        assert closed == 3
        assert last - started >= 2.5, "the idle keep-alive connection was closed before its timeout"

        # The watch has outlived both timeouts and still delivers events.
        cluster.kubectl("create", "configmap", "after-the-timeouts")
        watch.settimeout(10)
        received = b""
        deadline = time.monotonic() + 20
        while b"after-the-timeouts" not in received and time.monotonic() < deadline:
            received += watch.recv(65536)
        assert b"after-the-timeouts" in received
        _close_all([no_tls, slow, idle, watch])
    finally:
        cluster.stop()


def test_garbage_after_the_handshake_is_one_log_line_not_a_traceback_each(tmp_path: Path) -> None:
    """Malformed HTTP on 300 connections: each gets its 400 from aiohttp, the log one line."""
    cluster = TestCluster(tmp_path / "c")
    try:
        cluster.start()
        context = cluster.ssl_context(client_cert=False)
        lines_before = len(cluster.log_path.read_text().splitlines())

        def garbage() -> list[bytes]:
            answers = []
            for _ in range(300):
                with context.wrap_socket(socket.create_connection(("127.0.0.1", cluster.port), timeout=10), server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
                    answers.append(tls.recv(100))
            return answers

        answers = cluster.in_netns(garbage)
        assert all(a.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")) for a in answers), answers[:3]
        new_lines = _log_records(cluster, lines_before)
        assert len([line for line in new_lines if "HTTP error on a client connection" in line]) == 1, "\n".join(new_lines[:30])
        assert not any("Traceback" in line or "aiohttp.server" in line for line in new_lines), "\n".join(new_lines[:30])
        status, body, _ = cluster.request("GET", "/version")
        assert status == 200 and json.loads(body)["major"] == "1"
    finally:
        cluster.stop()


def test_connections_are_admitted_while_others_are_flooding(tmp_path: Path, own_file_limit: None) -> None:
    """A flood that keeps opening connections from several threads while the admin works:
    every admin request is answered (the flood only ever displaces idle unauthenticated
    connections, its own)."""
    cluster = TestCluster(tmp_path / "c", ["--max-connections", "150"])
    stop = threading.Event()
    flood_sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []
    try:
        cluster.start()
        context = cluster.ssl_context(client_cert=False)

        def flood() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    raw = socket.create_connection(("127.0.0.1", cluster.port), timeout=5)
                    flood_sockets.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))

        threads = [threading.Thread(target=cluster.in_netns, args=(flood,), daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        cluster.wait_for(
            lambda: metrics(cluster)['k3py_apiserver_closed_connections_total{reason="evicted"}'] > 0,
            timeout=60, what="the flood to reach the connection cap",
        )  # fmt: skip
        for i in range(10):
            cluster.kubectl("create", "configmap", f"during-flood-{i}", timeout=60)
        assert len(cluster.kubectl_json("get", "configmaps")["items"]) >= 10
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        _close_all(flood_sockets)
        cluster.stop()


def test_a_body_that_never_finishes_arriving_gets_504_and_frees_its_slot(tmp_path: Path) -> None:
    """A POST whose body trickles in and stops: after the request timeout (shortened to 2 s
    from upstream's 60 s) the client gets a Timeout Status and the request leaves the
    in-flight count, so slow clients cannot hold the mutating budget."""
    cluster = TestCluster(tmp_path / "c", ["--request-timeout", "2", "--token", "slow-body-token-0123456789"])
    try:
        cluster.start()
        context = cluster.ssl_context(client_cert=False)

        def slow_post() -> bytes:
            raw = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(
                    b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: k\r\n"
                    b"Authorization: Bearer slow-body-token-0123456789\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":"
                )
                tls.settimeout(15)
                answer = b""
                while True:  # the whole response: its head, then Content-Length bytes
                    chunk = tls.recv(65536)
                    answer += chunk
                    head, sep, rest = answer.partition(b"\r\n\r\n")
                    length = [int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"]
                    if not chunk or (sep and length and len(rest) >= length[0]):
                        return answer

        started = time.monotonic()
        answer = cluster.in_netns(slow_post)
        assert time.monotonic() - started >= 1.5
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 504"), answer[:300]
        status = json.loads(body)
        assert status["reason"] == "Timeout" and "did not arrive within 2 s" in status["message"]
        assert metrics(cluster)['apiserver_current_inflight_requests{request_kind="mutating"}'] == 0
    finally:
        cluster.stop()
