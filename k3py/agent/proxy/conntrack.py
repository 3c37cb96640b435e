"""Stale UDP flows: conntrack entries that would keep sending a client to an endpoint that left.

A UDP "connection" is a conntrack entry refreshed by every datagram, and the DNAT chosen for
its first datagram sticks to it: a client that keeps talking (DNS, an ``nc -u`` session)
would keep sending to the endpoint it first got even after that endpoint went away, and get
nothing back. TCP does not need this (the connection breaks and the client reconnects). As
kube-proxy does after each sync, for UDP Service ports only:

- an endpoint no longer used: delete the flows to each of the port's addresses that were
  DNAT'd to it (``--reply-src`` is the DNAT target), and its NodePort's;
- a port that had no endpoint and now has one: delete the flows to its addresses, so nothing
  remembered from before (a rejected or dropped attempt) stands in the way.

Run with Debian's ``conntrack`` tool (package conntrack), in the calling thread's network
namespace; "0 flow entries have been deleted" (exit 1) is success.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from k3py.agent.proxy.model import Categorized, Endpoint, ServicePort

log = logging.getLogger("k3py.agent.proxy")

TIMEOUT = 10.0


@dataclass(frozen=True)
class FlowFilter:
    """``conntrack -D -p udp`` arguments selecting the flows to delete."""

    orig_dst: str = ""
    orig_port_dst: int = 0
    reply_src: str = ""

    def argv(self) -> list[str]:
        argv = ["conntrack", "-D", "-p", "udp"]
        if self.orig_dst:
            argv += ["--orig-dst", self.orig_dst]
        if self.orig_port_dst:
            argv += ["--orig-port-dst", str(self.orig_port_dst)]
        if self.reply_src:
            argv += ["--reply-src", self.reply_src]
        return argv


def stale_flows(port: ServicePort, before: Categorized | None, after: Categorized | None) -> list[FlowFilter]:
    """The flows to delete for one Service port whose endpoints went from ``before`` to
    ``after`` (None: the port did not exist / does not any more)."""
    if port.protocol != "UDP":
        return []
    addresses = (port.cluster_ip, *port.external_ips, *port.load_balancer_ips)
    old: set[Endpoint] = set(before.reachable) if before is not None else set()
    new: set[Endpoint] = set(after.reachable) if after is not None else set()
    filters: list[FlowFilter] = []
    for endpoint in sorted(old - new):
        # Flows are keyed by address: another port of the same endpoint is not touched
        # because the Service port number is part of the filter.
        filters += [FlowFilter(ip, port.port, endpoint.ip) for ip in addresses]
        if port.node_port:
            filters.append(FlowFilter("", port.node_port, endpoint.ip))
    if new and not old and before is not None:
        filters += [FlowFilter(ip, port.port) for ip in addresses]
        if port.node_port:
            filters.append(FlowFilter("", port.node_port))
    return filters


class ConntrackCleaner:
    """Runs the deletions; logs once (and then stays quiet) when the tool is missing."""

    def __init__(self) -> None:
        self._warned = False

    def delete(self, filters: Iterable[FlowFilter]) -> int:
        """Deletes the flows; returns how many commands ran."""
        filters = list(dict.fromkeys(filters))
        if not filters:
            return 0
        if shutil.which("conntrack") is None:
            if not self._warned:
                log.warning("service proxy: the conntrack tool is not installed; stale UDP flows are "
                            "not removed when endpoints change (apt-get install conntrack)")
                self._warned = True
            return 0
        for flow in filters:
            self._run(flow.argv())
        return len(filters)

    @staticmethod
    def _run(argv: Sequence[str]) -> None:
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("service proxy: %s: %s", " ".join(argv), exc)
            return
        if result.returncode not in (0, 1):
            log.warning("service proxy: %s failed: %s", " ".join(argv), result.stderr.strip())
