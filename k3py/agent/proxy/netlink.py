"""A small nf_tables netlink client: set elements in one transaction, and names listed.

Why not only ``nft``: before it sends anything, the ``nft`` tool (and libnftables) reads the
table back from the kernel to resolve names — every chain and set, and for interval maps
every element of every one of them. With one interval map per Service that read grows with
the number of Services (measured: 9 s for one element change with 10,000 Services, 0.12 s
with 1,000), so the part of the ruleset that changes all the time — endpoints, which are set
elements only (see ``ruleset``) — is written here directly: ``NEWSETELEM`` / ``DELSETELEM``
messages in one ``nfnetlink`` batch, which the kernel applies as a single transaction (all
or nothing), addressing sets by name. Nothing is read first, so the cost of one endpoint
change does not depend on the size of the table. Chains, rules and sets themselves change
only when a Service's spec does, and are still written with ``nft -f`` (``nft.py``).

Listing: ``chain_names`` and ``set_names`` dump the names in a table (the proxy's state after
a restart), ``table_exists`` checks for the table.

Messages are built by hand from ``linux/netfilter/nf_tables.h``: a netlink header, the
``nfgenmsg`` header (family, version, resource id), then attributes (type-length-value,
aligned to 4 bytes; nested ones flagged ``NLA_F_NESTED``). The socket lives in the network
namespace of the thread that opened it, like every command of the pod network.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFPROTO_IPV4 = 2

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000

# enum nf_tables_msg_types
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_DELTABLE = 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_GETCHAIN = 4
NFT_MSG_NEWSET = 9
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14

NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3
NFTA_SET_TABLE = 1
NFTA_SET_NAME = 2
NFTA_SET_FLAGS = 3
NFT_SET_ANONYMOUS = 0x1
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_SET_ELEM_FLAGS = 3
NFT_SET_ELEM_INTERVAL_END = 0x1
NFTA_DATA_VALUE = 1
NFTA_DATA_VERDICT = 2
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2
NFT_JUMP = -3
NFT_GOTO = -4

# Elements per NEWSETELEM message: keeps each message far below the kernel's limits while a
# big map is still written in a few messages (one transaction either way).
ELEMENTS_PER_MESSAGE = 512
SOCKET_BUFFER = 32 << 20
RECEIVE_BUFFER = 1 << 20  # one datagram: a dump part or an acknowledgement
REPLY_TIMEOUT = 30.0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors do not echo the (possibly large) request back


class NetlinkError(OSError):
    """The kernel refused a request (``errno`` is set) or answered something unexpected."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``goto <chain>`` (or ``jump``) as set element data."""

    chain: str
    code: int = NFT_GOTO


@dataclass(frozen=True, slots=True)
class Element:
    """One set element as the kernel stores it: key bytes, and data bytes or a verdict for
    maps. Interval sets hold a range as a start element and an end element
    (``interval_end``, no data) at the first key past the range."""

    key: bytes
    data: bytes | Verdict | None = None
    interval_end: bool = False


@dataclass(frozen=True, slots=True)
class ElementOp:
    """Add ``elements`` to a set, delete them, or flush the set (``flush``: every element)."""

    set_name: str
    add: bool
    elements: tuple[Element, ...] = ()
    flush: bool = False

    def describe(self) -> str:
        if self.flush:
            return f"flush set {self.set_name}"
        verb = "add" if self.add else "delete"
        return f"{verb} {len(self.elements)} element(s) of set {self.set_name}"


@dataclass(frozen=True)
class EncodedBatch:
    """A transaction encoded for sending: its bytes, what each message does (by sequence number,
    for errors) and the sequence numbers of the batch's begin and end."""

    payload: bytes
    described: Mapping[int, str]
    bounds: tuple[int, int]


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, parts: Iterable[bytes]) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _string(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _be32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack(">i" if value < 0 else ">I", value))


_KEY_VALUE = struct.Struct("=HHHH")  # KEY nest header, then the DATA_VALUE header
_END_FLAG = struct.pack("=HH", 8, NFTA_SET_ELEM_FLAGS) + struct.pack(">I", NFT_SET_ELEM_INTERVAL_END)


def _value(kind: int, payload: bytes) -> bytes:
    """A nest of one ``NFTA_DATA_VALUE`` (what keys and data values are)."""
    pad = b"\0" * (-len(payload) % 4)
    inner = 4 + len(payload)
    return _KEY_VALUE.pack(4 + inner + len(pad), kind | NLA_F_NESTED, inner, NFTA_DATA_VALUE) + payload + pad


def encode_element(element: Element) -> bytes:
    """One ``NFTA_LIST_ELEM`` (called for every element of a sync: kept cheap)."""
    body = _value(NFTA_SET_ELEM_KEY, element.key)
    data = element.data
    if isinstance(data, Verdict):
        verdict = [_be32(NFTA_VERDICT_CODE, data.code), _string(NFTA_VERDICT_CHAIN, data.chain)]
        body += _nested(NFTA_SET_ELEM_DATA, [_nested(NFTA_DATA_VERDICT, verdict)])
    elif data is not None:
        body += _value(NFTA_SET_ELEM_DATA, data)
    if element.interval_end:
        body += _END_FLAG
    return struct.pack("=HH", 4 + len(body), NFTA_LIST_ELEM | NLA_F_NESTED) + body


def _header(kind: int, flags: int, seq: int, family: int, res_id: int, payload: bytes) -> bytes:
    length = 16 + 4 + len(payload)
    return struct.pack("=IHHII", length, kind, flags, seq, 0) + struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload


def _nft_type(message: int) -> int:
    return (NFNL_SUBSYS_NFTABLES << 8) | message


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & ~NLA_F_NESTED, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


class NftNetlink:
    """One ``NETLINK_NETFILTER`` socket, in the calling thread's network namespace; not
    thread-safe (the syncer uses it from one thread at a time)."""

    def __init__(self, family: int = NFPROTO_IPV4) -> None:
        self.family = family
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            for option, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):  # SO_*BUFFORCE
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                except OSError:  # not CAP_NET_ADMIN in the user namespace: the plain limit
                    self._sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.settimeout(REPLY_TIMEOUT)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = int.from_bytes(os.urandom(3), "big")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NftNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return self._seq

    # -- transactions -----------------------------------------------------------------------

    def commit(self, table: str, ops: Sequence[ElementOp]) -> None:
        """Applies ``ops`` in order as one transaction; raises ``NetlinkError`` (nothing applied)
        naming the first operation the kernel refused."""
        self.send_batch(self.encode(table, ops))

    def encode(self, table: str, ops: Sequence[ElementOp]) -> EncodedBatch | None:
        """The transaction for ``ops``, ready to send (None: nothing to do)."""
        if not ops:
            return None
        messages: list[bytes] = []
        described: dict[int, str] = {}
        begin_seq = self._next_seq()
        messages.append(_header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin_seq, 0, NFNL_SUBSYS_NFTABLES, b""))
        for op in ops:
            head = [_string(NFTA_SET_ELEM_LIST_TABLE, table), _string(NFTA_SET_ELEM_LIST_SET, op.set_name)]
            if op.flush:
                chunks: list[tuple[Element, ...]] = [()]
            else:
                chunks = [op.elements[i:i + ELEMENTS_PER_MESSAGE] for i in range(0, len(op.elements), ELEMENTS_PER_MESSAGE)]
            for chunk in chunks:
                seq = self._next_seq()
                described[seq] = op.describe()
                body = list(head)
                if chunk:
                    body.append(_nested(NFTA_SET_ELEM_LIST_ELEMENTS, (encode_element(e) for e in chunk)))
                kind = NFT_MSG_NEWSETELEM if op.add and not op.flush else NFT_MSG_DELSETELEM
                flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0)
                messages.append(_header(_nft_type(kind), flags, seq, self.family, 0, b"".join(body)))
        end_seq = self._next_seq()
        messages.append(_header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, 0, NFNL_SUBSYS_NFTABLES, b""))
        return EncodedBatch(b"".join(messages), described, (begin_seq, end_seq))

    def send_batch(self, batch: EncodedBatch | None) -> None:
        """Sends a transaction made by ``encode`` and waits for the kernel's verdict."""
        if batch is None:
            return
        # One buffer: a datagram of more than 1,024 pieces would exceed the kernel's iovec limit.
        self._sock.send(batch.payload)
        self._await_acks(dict(batch.described), batch=batch.bounds)

    def delete_table(self, table: str) -> bool:
        """Deletes the table with everything in it; False if there was none."""
        begin_seq, seq, end_seq = self._next_seq(), self._next_seq(), self._next_seq()
        messages = [
            _header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin_seq, 0, NFNL_SUBSYS_NFTABLES, b""),
            _header(_nft_type(NFT_MSG_DELTABLE), NLM_F_REQUEST | NLM_F_ACK, seq, self.family, 0,
                    _string(NFTA_TABLE_NAME, table)),
            _header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, 0, NFNL_SUBSYS_NFTABLES, b""),
        ]
        self._sock.sendmsg(messages)
        try:
            self._await_acks({seq: f"delete table {table}"}, batch=(begin_seq, end_seq))
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def _await_acks(self, pending: dict[int, str], batch: tuple[int, int]) -> None:
        failure: NetlinkError | None = None
        while pending:
            for kind, _flags, seq, payload in self._receive():
                if kind != NLMSG_ERROR:
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if seq in batch and code:  # the batch itself was refused (say, EPERM)
                    raise NetlinkError(code, f"nf_tables transaction refused: {os.strerror(code)}")
                if seq not in pending:
                    continue
                what = pending.pop(seq)
                if code and failure is None:
                    failure = NetlinkError(code, f"{what}: {os.strerror(code)}")
                if code:
                    # The kernel aborted the whole batch; the remaining acknowledgements
                    # still arrive for the messages it had accepted, or never: stop here.
                    pending.clear()
        if failure is not None:
            raise failure

    def _receive(self) -> list[tuple[int, int, int, bytes]]:
        data = self._sock.recv(RECEIVE_BUFFER)
        found: list[tuple[int, int, int, bytes]] = []
        offset = 0
        while offset + 16 <= len(data):
            length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                break
            found.append((kind, flags, seq, data[offset + 16:offset + length]))
            offset += (length + 3) & ~3
        return found

    # -- listing ----------------------------------------------------------------------------

    def _dump(self, message: int, attributes: bytes = b"") -> Iterator[dict[int, bytes]]:
        seq = self._next_seq()
        self._sock.send(_header(_nft_type(message), NLM_F_REQUEST | NLM_F_DUMP, seq, self.family, 0, attributes))
        while True:
            for kind, _flags, reply_seq, payload in self._receive():
                if reply_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code == 0:
                        continue
                    if code == errno.ENOENT:
                        return
                    raise NetlinkError(code, f"listing nf_tables objects: {os.strerror(code)}")
                yield dict(_attributes(payload[4:]))  # past the nfgenmsg header

    def chain_names(self, table: str) -> set[str]:
        """Every chain of ``table`` (empty if there is no such table)."""
        return {
            _text(attrs[NFTA_CHAIN_NAME])
            for attrs in self._dump(NFT_MSG_GETCHAIN)
            if NFTA_CHAIN_NAME in attrs and _text(attrs.get(NFTA_CHAIN_TABLE, b"")) == table
        }

    def set_names(self, table: str) -> set[str]:
        """Every named set and map of ``table``."""
        names: set[str] = set()
        for attrs in self._dump(NFT_MSG_GETSET, _string(NFTA_SET_TABLE, table)):
            if _text(attrs.get(NFTA_SET_TABLE, b"")) != table or NFTA_SET_NAME not in attrs:
                continue
            flags = struct.unpack(">I", attrs[NFTA_SET_FLAGS])[0] if len(attrs.get(NFTA_SET_FLAGS, b"")) == 4 else 0
            if not flags & NFT_SET_ANONYMOUS:
                names.add(_text(attrs[NFTA_SET_NAME]))
        return names

    def table_exists(self, table: str) -> bool:
        return any(_text(attrs.get(NFTA_TABLE_NAME, b"")) == table for attrs in self._dump(NFT_MSG_GETTABLE))
