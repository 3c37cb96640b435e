"""A real upstream resolver for the tests: dnsmasq (Debian's dnsmasq-base), authoritative for
``external.test`` with a few records, on an address and port the test chooses — on loopback,
or inside a network namespace the test made (``netns``)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import dns.exception
import dns.message
import dns.query

EXTERNAL_RECORDS = (
    "--host-record=www.external.test,192.0.2.81",
    "--host-record=api.external.test,192.0.2.82,2001:db8::82",
    "--txt-record=txt.external.test,hello from upstream",
    "--srv-host=_http._tcp.external.test,www.external.test,80",
)


def free_port(address: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``address`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def dnsmasq(address: str, port: int, netns: str | None = None, ttl: int = 60) -> Iterator[subprocess.Popen[bytes]]:
    """dnsmasq answering for external.test (NXDOMAIN for other names of it) on address:port."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    argv = [
        binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        f"--listen-address={address}", "--bind-interfaces", f"--port={port}", "--user=root", "--group=root",
        "--pid-file=", f"--local-ttl={ttl}", "--local=/external.test/", "--log-facility=-", *EXTERNAL_RECORDS,
    ]  # fmt: skip
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if netns is None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    dns.query.udp(dns.message.make_query("www.external.test", "A"), address, port=port, timeout=0.5)
                    break
                except (OSError, dns.exception.Timeout):
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"dnsmasq did not start: {process.stderr.read().decode() if process.stderr else ''}") from None
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
