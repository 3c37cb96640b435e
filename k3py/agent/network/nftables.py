"""The node's NAT and localnet rules for pods, as one nftables table this package owns alone.

At node start the table (``ip k3py-nat`` by default) is written whole: ``render_ruleset``
turns the node's configuration and the hostPort mappings of its pods into a script that
creates the table if missing, deletes it and defines it again, and ``nft -f`` applies that
script as one transaction. There is never a moment with half the rules, a restart cannot leave
stale ones, and the rules never depend on what was there before. When pods come and go only
the hostports chain is replaced (flush + add, also one transaction): the base chains stay
registered, which makes it several times cheaper. Other tables (the service proxy's, the
host's own firewall) are not touched.

    chain prerouting / output  (nat, dstnat)   packets for an address of this node go through
                                                 the hostports chain: traffic from outside and
                                                 from the node itself
    chain hostports                              one DNAT rule per hostPort mapping
    chain input (filter)                         upstream's CVE-2020-8558 rule ("block incoming
                                                 localnet connections", kubelet's KUBE-FIREWALL):
                                                 ``route_localnet`` on the bridge (for hostPorts
                                                 reached on 127.0.0.1) would otherwise let a pod
                                                 reach the node's 127.0.0.1-only services by
                                                 sending to 127.0.0.1 through its gateway; a
                                                 packet for 127/8 from outside 127/8 that is not
                                                 part of a connection already seen or DNAT'd is
                                                 dropped
    chain postrouting (nat, srcnat)              - pod egress: pod CIDR → outside the cluster
                                                   CIDR (and not multicast) is masqueraded, so
                                                   the outside sees the node's address
                                                 - hairpin: a pod reaching a pod of this node
                                                   through a DNAT (a hostPort) is masqueraded to
                                                   the bridge address, or the answer would go
                                                   straight across the bridge, past conntrack
                                                 - localhost: a DNAT'd connection from 127/8
                                                   is masqueraded (127/8 may not leave the host)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from k3py.agent.network import commands
from k3py.agent.network.config import NodeNetworkConfig
from k3py.agent.network.hostports import HostPort

MULTICAST = "224.0.0.0/4"
# Upstream's iptables rule `-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate
# RELATED,ESTABLISHED,DNAT -j DROP` in nft terms. `ct status & dnat == 0` tests the DNAT bit
# alone (`ct status != dnat` would compare the whole status word).
LOCALNET_RULE = (
    "ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state != { established, related }"
    ' ct status & dnat == 0 drop comment "block incoming localnet connections"'
)


def _comment(text: str) -> str:
    # nft comments are quoted strings of at most 128 bytes; keep only characters that need
    # no escaping.
    return '"' + re.sub(r"[^A-Za-z0-9 ._:/-]", "_", text)[:120] + '"'


def hostport_rule(pod_ip: str, mapping: HostPort, owner: str) -> str:
    match = f"ip daddr {mapping.host_ip} " if mapping.host_ip else ""
    protocol = mapping.protocol.lower()
    return (
        f"{match}{protocol} dport {mapping.host_port} "
        f"dnat to {pod_ip}:{mapping.container_port} comment {_comment('pod ' + owner)}"
    )


def _hostport_rules(host_ports: Mapping[str, tuple[str, Sequence[HostPort]]]) -> list[str]:
    return [
        hostport_rule(pod_ip, mapping, owner)
        for owner, (pod_ip, mappings) in sorted(host_ports.items())
        for mapping in sorted(mappings)
    ]


def render_host_ports(
    config: NodeNetworkConfig,
    host_ports: Mapping[str, tuple[str, Sequence[HostPort]]],
) -> str:
    """The script that replaces just the hostport chain's rules (one transaction too)."""
    chain = f"ip {config.nft_table} hostports"
    rules = [f"add rule {chain} {rule}\n" for rule in _hostport_rules(host_ports)]
    return f"flush chain {chain}\n" + "".join(rules)


def render_ruleset(
    config: NodeNetworkConfig,
    host_ports: Mapping[str, tuple[str, Sequence[HostPort]]],
) -> str:
    """The script that makes the node's table exactly this.

    ``host_ports`` maps an owner (pod UID) to its pod IP and its mappings.
    """
    table = f"ip {config.nft_table}"
    pods = str(config.pod_network)
    cluster = str(config.cluster_network)
    hostport_rules = _hostport_rules(host_ports)
    lines = [
        f"table {table}",
        f"delete table {table}",
        f"table {table} {{",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tfib daddr type local jump hostports",
        "\t}",
        "\tchain output {",
        # nft accepts the name "dstnat" only on prerouting; -100 is the same priority.
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tfib daddr type local jump hostports",
        "\t}",
        "\tchain hostports {",
        *(f"\t\t{rule}" for rule in hostport_rules),
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\t{LOCALNET_RULE}",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tip saddr {pods} ip daddr != {{ {cluster}, {MULTICAST} }} masquerade"
        f" comment {_comment('pod egress')}",
        f"\t\tct status dnat ip saddr {pods} ip daddr {pods} masquerade"
        f" comment {_comment('hairpin')}",
        f"\t\tct status dnat ip saddr 127.0.0.0/8 ip daddr {pods} masquerade"
        f" comment {_comment('hostPort from localhost')}",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def apply_ruleset(
    config: NodeNetworkConfig,
    host_ports: Mapping[str, tuple[str, Sequence[HostPort]]],
) -> None:
    commands.nft_apply(render_ruleset(config, host_ports))


def apply_host_ports(
    config: NodeNetworkConfig,
    host_ports: Mapping[str, tuple[str, Sequence[HostPort]]],
) -> None:
    commands.nft_apply(render_host_ports(config, host_ports))


def delete_table(config: NodeNetworkConfig) -> None:
    """Removes the node's table (declaring it first makes the delete succeed when absent)."""
    table = f"ip {config.nft_table}"
    commands.nft_apply(f"table {table}\ndelete table {table}\n")
