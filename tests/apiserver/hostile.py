"""Tools for the hostile-client tests: raw TLS sockets, a /readyz prober, the server's loop stalls.

How "the API keeps answering within 100 ms" is measured, and why two ways. A client-side prober
sends ``GET /readyz`` every 20 ms on its own keep-alive connection while the attack is served:
the *median* of its probes must stay under 100 ms, and the slowest under 2 s. And every test
server runs k3py's event-loop watchdog at 100 ms (``k3py/util/loopwatch.py``: it reports any
stretch over 100 ms in which the loop was held, not counting time the loop thread waited for a
CPU); no report of ``MAX_STALL_MS`` (1 s) or more may come while the attack is served.

Why the slowest probe and the watchdog get generous bounds, not 100 ms: the heavy work now runs
on worker threads, and a worker holds the GIL while it runs; on a loaded machine (two cores
shared with other test runs) the kernel can preempt a worker *while it holds the GIL*, and the
loop then waits for it — the watchdog duly reports that as a hold (up to ~250 ms was seen at a
load average of 3, and whole test runs took twice as long at times), and a single probe can be
slow for the test process's own reasons. The median carries the 100 ms bound; the bounds on
the outliers still fail the code before the fixes by a wide margin: its loop stopped for 3 to
20 seconds on each of these attacks.
"""

from __future__ import annotations

import http.client
import re
import resource
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.cluster import TestCluster

PROBE_MEDIAN_SECONDS = 0.1
PROBE_MAX_SECONDS = 2.0
MAX_STALL_MS = 1000


def metrics(cluster: TestCluster) -> dict[str, float]:
    """The server's /metrics as {"name{labels}": value}."""
    status, body, _ = cluster.request("GET", "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:200]!r}"
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class ReadyzProber:
    """Sends GET /readyz every 20 ms from the test host while the ``with`` block runs."""

    def __init__(self, cluster: TestCluster) -> None:
        self.cluster = cluster
        self.latencies: list[tuple[float, float]] = []  # (sent at, seconds to answer)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        context = self.cluster.ssl_context()

        def probe_loop() -> None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.cluster.port, context=context, timeout=60)
            try:
                while not self._stop.is_set():
                    sent = time.monotonic()
                    try:
                        conn.request("GET", "/readyz")
                        response = conn.getresponse()
                        response.read()
                        if response.status != 200:
                            self.failures.append(f"/readyz answered {response.status}")
                    except (OSError, http.client.HTTPException) as e:
                        self.failures.append(repr(e))
                        conn.close()
                        conn = http.client.HTTPSConnection("127.0.0.1", self.cluster.port, context=context, timeout=60)
                    self.latencies.append((sent, time.monotonic() - sent))
                    self._ready.set()
                    time.sleep(0.02)
            finally:
                conn.close()

        self.cluster.in_netns(probe_loop)

    def __enter__(self) -> ReadyzProber:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the /readyz prober never got an answer"
        self.window_start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.window_end = time.monotonic()
        self._stop.set()
        assert self._thread is not None
        self._thread.join(120)

    def during(self) -> list[float]:
        """Latencies of the probes that overlapped the ``with`` block."""
        return [
            took for sent, took in self.latencies if sent < self.window_end and sent + took > self.window_start
        ]


def stall_ms(report: str) -> int:
    """The duration of one watchdog report ("event loop blocked for 237 ms ...")."""
    match = re.search(r"event loop blocked for (\d+) ms", report)
    assert match, report
    return int(match.group(1))


@contextmanager
def responsive(cluster: TestCluster) -> Iterator[ReadyzProber]:
    """Asserts the API stayed responsive while the block ran (see the module docstring)."""
    stalls_before = len(cluster.loop_stalls())
    with ReadyzProber(cluster) as prober:
        yield prober
        time.sleep(0.2)  # the watchdog reports a stall when the loop gets back to its heartbeat
    during = prober.during()
    assert not prober.failures, prober.failures[:5]
    assert during, "no /readyz probe overlapped the attack"
    median, slowest = statistics.median(during), max(during)
    assert median < PROBE_MEDIAN_SECONDS and slowest < PROBE_MAX_SECONDS, (
        f"/readyz during the attack: median {median * 1000:.0f} ms, slowest {slowest * 1000:.0f} ms "
        f"over {len(during)} probes"
    )
    long_stalls = [report for report in cluster.loop_stalls()[stalls_before:] if stall_ms(report) >= MAX_STALL_MS]
    assert not long_stalls, "the server's event loop was held while the attack was served:\n" + "\n".join(long_stalls)


def raise_own_open_file_limit() -> tuple[int, int]:
    """Let this test process open thousands of sockets; returns the old limits."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (old[1], old[1]))
    return old


def raw_tls_exchange(cluster: TestCluster, request: bytes, read_for: float = 5.0) -> bytes:
    """Send raw bytes over a TLS connection with the admin certificate; everything that comes
    back until the server closes the connection or ``read_for`` seconds pass."""
    context = cluster.ssl_context()

    def exchange() -> bytes:
        raw = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            tls.settimeout(0.5)
            data = b""
            deadline = time.monotonic() + read_for
            while time.monotonic() < deadline:
                try:
                    chunk = tls.recv(65536)
                except TimeoutError:
                    continue
                except (ssl.SSLError, ConnectionResetError):
                    break
                if not chunk:
                    break
                data += chunk
            return data

    return cluster.in_netns(exchange)


def server_tracebacks(cluster: TestCluster) -> int:
    return cluster.log_path.read_text(errors="replace").count("Traceback (most recent call last)")
