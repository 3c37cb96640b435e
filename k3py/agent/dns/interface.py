"""The cluster DNS address on the node: a dummy interface (``k3py-dns``) holding it.

Pods send DNS to 10.43.0.10 through their gateway; the address being local to the node (a
host route in the ``local`` table, which the kernel consults before the main table with its
``unreachable`` route for the service CIDR), the packets are delivered to our listener — as
NodeLocal DNSCache does with its ``nodelocaldns`` interface. The service proxy leaves this
Service alone (it carries ``k3py.io/node-local: "true"``), so nothing rewrites them on the way.

The interface is of type ``dummy``; where the kernel has no dummy driver (some container
hosts), a bridge without ports serves the same purpose (it is up and holds the address; no
frame ever crosses it). It holds the address alone (/32, /128 for IPv6), is created or
repaired at every start, and removed when the agent stops cleanly.
"""

from __future__ import annotations

import ipaddress

from k3py.agent.network import commands
from k3py.agent.network.config import check_interface_name

DNS_INTERFACE = "k3py-dns"


def ensure_dns_interface(name: str, address: str) -> None:
    """Make ``name`` exist, be up and hold exactly ``address`` (blocking: call in a thread)."""
    check_interface_name(name, "DNS interface name")
    parsed = ipaddress.ip_address(address)
    if not commands.link_exists(name):
        created = commands.ip("link", "add", "name", name, "type", "dummy", check=False)
        if created.returncode != 0 and not commands.link_exists(name):
            commands.ip("link", "add", "name", name, "type", "bridge")
    prefix = 32 if parsed.version == 4 else 128
    wanted = f"{parsed}/{prefix}"
    family = "-4" if parsed.version == 4 else "-6"
    output = commands.ip(family, "-o", "addr", "show", "dev", name, "scope", "global").stdout
    present = {line.split()[3] for line in output.splitlines() if len(line.split()) > 3}
    lines = [f"addr del {stale} dev {name}" for stale in sorted(present - {wanted})]
    extra = " nodad" if parsed.version == 6 else ""
    lines += [f"addr replace {wanted} dev {name}{extra}", f"link set dev {name} up"]
    commands.ip_batch(lines)


def remove_dns_interface(name: str) -> None:
    """Delete the interface (absent is fine)."""
    commands.delete_link(name)
