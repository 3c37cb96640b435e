"""Host-local IP address management: the pod addresses of one node, persisted as files.

Like the CNI ``host-local`` plugin, each allocated address is one file in a directory of its
own for the node's pod CIDR, named after the address and holding the owner's id (the pod UID):

    <data_dir>/ipam/10.42.0.0_24/10.42.0.7         contents: "<pod uid>\\n"
    <data_dir>/ipam/10.42.0.0_24/last_reserved_ip  contents: "10.42.0.7\\n"

The file system is the single source of truth, so an address is never handed out twice — not
across threads, not across a restart of k3py, not across two processes sharing the data dir.
A reservation is an exclusive create: the owner id is first written and fsynced to a private
temporary file, which is then hard-linked to the address's name. ``link(2)`` fails with EEXIST
when the name is taken, exactly like ``open(O_CREAT | O_EXCL)``, but the file appears with its
contents already in place, so a crash can never leave an address reserved by nobody.

Addresses are handed out round-robin from the one after the last reserved, so an address just
released (whose old pod may still have connections in flight elsewhere) is reused last.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import uuid
from pathlib import Path

from k3py.agent.network.config import NetworkConfigError, NetworkError
from k3py.util.private import private_dir

LAST_RESERVED = "last_reserved_ip"
MAX_OWNER_LEN = 253


class AddressesExhausted(NetworkError):
    """Every address of the pod CIDR is taken."""


def check_owner(owner: str) -> str:
    # Owners (pod UIDs) also name files of their own (the pod records): no path separators,
    # and no leading dot, which would hide them.
    if (
        not owner
        or len(owner) > MAX_OWNER_LEN
        or not owner.isprintable()
        or "/" in owner
        or owner.startswith(".")
    ):
        raise NetworkConfigError(
            f"IPAM owner id {owner!r} must be 1 to {MAX_OWNER_LEN} printable characters, "
            "without '/' and not starting with '.'"
        )
    return owner


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HostLocalIPAM:
    """Allocates addresses of ``[first, last]`` of one subnet to owners, one address each."""

    def __init__(
        self,
        directory: Path,
        first: ipaddress.IPv4Address,
        last: ipaddress.IPv4Address,
    ) -> None:
        if int(last) < int(first):
            raise NetworkConfigError(f"IPAM range {first}-{last} is empty")
        self.directory = Path(directory)
        self.first = first
        self.last = last
        # Within one process the lock keeps the round-robin cursor consistent; between
        # processes the exclusive link alone guarantees uniqueness.
        self._lock = threading.Lock()
        private_dir(self.directory)

    @classmethod
    def for_subnet(cls, data_dir: Path, network: ipaddress.IPv4Network) -> HostLocalIPAM:
        """The IPAM of a pod subnet: skips the network address, the gateway (.1), broadcast."""
        directory = private_dir(Path(data_dir) / "ipam") / str(network).replace("/", "_")
        return cls(directory, network.network_address + 2, network.broadcast_address - 1)

    # -- queries ----------------------------------------------------------------------------

    def allocations(self) -> dict[ipaddress.IPv4Address, str]:
        """Every reserved address and its owner."""
        found: dict[ipaddress.IPv4Address, str] = {}
        for entry in os.scandir(self.directory):
            address = self._address_of(entry.name)
            if address is None:
                continue
            try:
                owner = Path(entry.path).read_text().strip()
            except FileNotFoundError:  # released while we looked
                continue
            found[address] = owner
        return found

    def lookup(self, owner: str) -> ipaddress.IPv4Address | None:
        """The address ``owner`` holds, if any."""
        check_owner(owner)
        for address, held_by in self.allocations().items():
            if held_by == owner:
                return address
        return None

    # -- changes ----------------------------------------------------------------------------

    def allocate(self, owner: str) -> ipaddress.IPv4Address:
        """An address for ``owner``: the one it already holds, or a newly reserved one."""
        check_owner(owner)
        with self._lock:
            held = self.lookup(owner)
            if held is not None:
                return held
            size = int(self.last) - int(self.first) + 1
            start = self._next_after_last_reserved()
            for step in range(size):
                candidate = ipaddress.IPv4Address(
                    int(self.first) + (int(start) - int(self.first) + step) % size
                )
                if self._reserve(candidate, owner):
                    self._write_last_reserved(candidate)
                    return candidate
        raise AddressesExhausted(
            f"no free pod address left in {self.first}-{self.last} ({size} addresses in use)"
        )

    def release(self, owner: str) -> list[ipaddress.IPv4Address]:
        """Frees every address ``owner`` holds; returns them (empty when it held none)."""
        check_owner(owner)
        released = []
        with self._lock:
            for address, held_by in self.allocations().items():
                if held_by == owner:
                    with contextlib.suppress(FileNotFoundError):
                        (self.directory / str(address)).unlink()
                    released.append(address)
            if released:
                _fsync_dir(self.directory)
        return released

    # -- internals --------------------------------------------------------------------------

    def _address_of(self, name: str) -> ipaddress.IPv4Address | None:
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            return None  # last_reserved_ip, temporary files
        return address if self.first <= address <= self.last else None

    def _reserve(self, address: ipaddress.IPv4Address, owner: str) -> bool:
        temporary = self.directory / f".reserve-{uuid.uuid4().hex}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{owner}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, self.directory / str(address))
        except FileExistsError:
            return False
        finally:
            temporary.unlink()
        _fsync_dir(self.directory)
        return True

    def _next_after_last_reserved(self) -> ipaddress.IPv4Address:
        try:
            last = ipaddress.IPv4Address((self.directory / LAST_RESERVED).read_text().strip())
        except (FileNotFoundError, ValueError):
            return self.first
        if not self.first <= last < self.last:
            return self.first
        return last + 1

    def _write_last_reserved(self, address: ipaddress.IPv4Address) -> None:
        # Only a hint for round-robin order; a torn write just restarts the scan at .2.
        temporary = self.directory / f".last-{uuid.uuid4().hex}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"{address}\n")
            os.replace(temporary, self.directory / LAST_RESERVED)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
