"""Running iproute2, nftables and sysctl changes, with errors a user can read.

The pod network is configured with the ``ip`` and ``nft`` tools rather than netlink from
Python: they are on every node, their batch modes (``ip -batch -``, ``nft -f -``) apply many
changes in one process start, and ``nft -f`` applies a whole ruleset as one transaction.

Every command runs in the network namespace of the calling thread (a child process inherits
its parent thread's namespaces), which is the node's namespace in production and a test
host's namespace in the tests. Commands for a pod's namespace go through
``nsenter --net=<path>``, because ``ip -n`` only accepts names under /run/netns while the
runtime hands us a path.

/proc/sys/net is also resolved per thread, so ``write_sysctl`` changes the calling thread's
namespace, like the commands.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from k3py.agent.network.config import NetworkError

COMMAND_TIMEOUT = 30.0


def run(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs ``argv``; a failure (when ``check``) raises ``NetworkError`` with its stderr."""
    try:
        result = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise NetworkError(
            f"{argv[0]} is not installed: the pod network needs iproute2, nftables and "
            "util-linux (nsenter)"
        ) from None
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{' '.join(argv)} did not finish in {COMMAND_TIMEOUT:.0f}s") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        shown = " ".join(argv)
        if stdin:
            shown += " <<" + "; ".join(line for line in stdin.splitlines() if line.strip())
        raise NetworkError(f"{shown} failed (exit {result.returncode}): {detail}")
    return result


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], check=check)


def ip_batch(lines: Sequence[str], netns_path: str | None = None) -> None:
    """Runs iproute2 commands (one per line, without the leading ``ip``) in one process,
    in the calling thread's namespace or in the one at ``netns_path``."""
    prefix = ["nsenter", f"--net={netns_path}"] if netns_path else []
    run([*prefix, "ip", "-batch", "-"], stdin="\n".join(lines) + "\n")


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def delete_link(name: str) -> None:
    """Deletes an interface if it exists. A veth also vanishes on its own when the namespace
    of its peer is destroyed (asynchronously), so "already gone" counts as success."""
    result = ip("link", "del", "dev", name, check=False)
    if result.returncode != 0 and link_exists(name):
        raise NetworkError(f"cannot delete interface {name}: {result.stderr.strip()}")


def ipv4_addresses(device: str) -> list[str]:
    """The IPv4 addresses (with prefix) on ``device``."""
    output = ip("-4", "-o", "addr", "show", "dev", device).stdout
    return [line.split()[3] for line in output.splitlines() if len(line.split()) > 3]


def links_with_master(master: str) -> list[str]:
    """Names of the interfaces enslaved to ``master`` (the bridge's ports)."""
    output = ip("-o", "link", "show", "master", master, check=False).stdout
    names = []
    for line in output.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            names.append(fields[1].strip().split("@", 1)[0])
    return names


def nft_apply(script: str) -> None:
    """Applies an nftables script as one transaction: all of it or none."""
    run(["nft", "-f", "-"], stdin=script)


def write_sysctl(key: Sequence[str], value: str) -> None:
    """Sets a sysctl, given as its path parts (``("net", "ipv4", "ip_forward")``, so an
    interface name with a dot stays one part), in the calling thread's network namespace."""
    name = ".".join(key)
    path = Path("/proc/sys", *key)
    try:
        if path.read_text().strip() != value:
            path.write_text(value + "\n")
    except OSError as exc:
        raise NetworkError(f"cannot set sysctl {name}={value}: {exc.strerror}") from None
