"""The node's resolver configuration: which resolv.conf, and which upstream servers in it.

One file serves two readers, as in k3s: the kubelet copies it into pods with ``dnsPolicy:
Default`` (and host-network pods under ``ClusterFirst``), and the cluster DNS forwards every
name outside the cluster domain to its nameservers.

Which file (``choose_resolv_conf``): ``--resolv-conf`` when given; else ``/etc/resolv.conf``
when it names a nameserver that is not a loopback address; else systemd-resolved's
``/run/systemd/resolve/resolv.conf`` (the real upstreams behind its 127.0.0.53 stub) when that
one does; else ``/etc/resolv.conf`` as it is. k3s makes the same choice for the same reason: a
loopback nameserver means nothing inside a pod's network namespace.

Which servers (``upstream_servers``): the file's nameservers, minus loopback addresses and
minus the cluster DNS's own address(es). Forwarding to either could send a query back to us
(a host stub that forwards the cluster domain to the cluster DNS, or a resolv.conf naming
10.43.0.10 itself) — a loop that multiplies every query until something times out. Unlike
k3s there is no public fallback resolver: with no usable upstream, external names get SERVFAIL
saying so, and no packet leaves the node unasked.

Parsing follows the kubelet's ``parseResolvConf``: comments start with ``#`` (or ``;``, as
glibc reads them), ``nameserver`` lines accumulate, the last ``search`` and the last
``options`` line win, trailing dots of search domains are dropped.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("k3py.agent.dns")

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
MAX_RESOLV_CONF_BYTES = 1 << 20  # a resolv.conf is a few lines; never read more than this


@dataclass(frozen=True)
class ResolvConf:
    """The three things a resolv.conf says that Kubernetes cares about."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> ResolvConf:
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            nameservers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:]]
        elif fields[0] == "options":
            options = fields[1:]
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def read_resolv_conf(path: Path) -> ResolvConf:
    """The parsed file; an unreadable file reads as empty (logged)."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_RESOLV_CONF_BYTES).decode("utf-8", "replace")
    except OSError as e:
        log.warning("cannot read %s: %s", path, e.strerror or e)
        return ResolvConf()
    return parse_resolv_conf(text)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _has_usable_nameserver(path: Path) -> bool:
    if not path.is_file():
        return False
    return any(not _is_loopback(n) for n in read_resolv_conf(path).nameservers)


def choose_resolv_conf(explicit: str | Path | None = None) -> Path:
    """The resolv.conf this node uses for pods and upstream forwarding (see the module
    docstring); ``explicit`` is ``--resolv-conf``."""
    if explicit:
        return Path(explicit)
    for candidate in (HOST_RESOLV_CONF, SYSTEMD_RESOLV_CONF):
        if _has_usable_nameserver(candidate):
            return candidate
    return HOST_RESOLV_CONF


def upstream_servers(conf: ResolvConf, own_addresses: Iterable[str] = ()) -> list[str]:
    """The nameservers the cluster DNS may forward to: valid addresses, no loopback, not
    ourselves, in the file's order, without duplicates."""
    own = set(own_addresses)
    servers: list[str] = []
    for entry in conf.nameservers:
        try:
            address = ipaddress.ip_address(entry.split("%")[0])
        except ValueError:
            log.warning("resolv.conf: ignoring nameserver %r: not an IP address", entry)
            continue
        if address.is_loopback:
            log.warning("resolv.conf: not forwarding to loopback nameserver %s (it could loop back to us)", entry)
            continue
        if str(address) in own:
            log.warning("resolv.conf: not forwarding to %s: that is the cluster DNS itself", entry)
            continue
        if str(address) not in servers:
            servers.append(str(address))
    return servers
