"""The node-local DNS address on its interface, in a network namespace of the test's own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from k3py.agent.dns.interface import ensure_dns_interface, remove_dns_interface
from tests.cluster import TestHost


@pytest.fixture
def host() -> Iterator[TestHost]:
    made = TestHost("k3py-dnsif")
    yield made
    made.close()


def addresses(host: TestHost) -> list[str]:
    out = subprocess.run(["ip", "-n", host.name, "-4", "-o", "addr", "show", "dev", "k3py-dns"],
                         capture_output=True, text=True, check=False).stdout
    return sorted(line.split()[3] for line in out.splitlines())


def test_the_address_is_held_alone_repaired_and_removed(host: TestHost) -> None:
    host.in_netns(ensure_dns_interface, "k3py-dns", "10.43.0.10")
    assert addresses(host) == ["10.43.0.10/32"]
    link = subprocess.run(["ip", "-n", host.name, "link", "show", "k3py-dns"], capture_output=True, text=True).stdout
    assert "UP" in link
    route = subprocess.run(["ip", "-n", host.name, "route", "get", "10.43.0.10"], capture_output=True, text=True).stdout
    assert route.startswith("local 10.43.0.10")  # delivered to the node itself
    # a changed --cluster-dns: the old address goes, the new one stays alone; twice is harmless
    host.in_netns(ensure_dns_interface, "k3py-dns", "10.43.0.53")
    host.in_netns(ensure_dns_interface, "k3py-dns", "10.43.0.53")
    assert addresses(host) == ["10.43.0.53/32"]
    host.in_netns(remove_dns_interface, "k3py-dns")
    assert addresses(host) == []
    host.in_netns(remove_dns_interface, "k3py-dns")  # already gone: fine
