"""The DNS listeners: UDP and TCP on one address and port, on the shared asyncio loop.

The loop also runs the API server, the controllers and the kubelet, so DNS work is bounded per
loop iteration and a flood costs the flooder, not everyone else.

UDP. The socket is read directly when it becomes readable (``loop.add_reader``), up to
``read_batch`` datagrams or half the ``budget`` of reading at a time (reading is cheap: a
flood is drained from the kernel's buffer, where it would otherwise crowd out everyone's
queries), and the batch is answered within ``budget`` seconds (reading included); what is left when the budget runs out is dropped
(the clients retry), and the loop moves on to its other work before the next batch. The batch is answered in rounds over the sources — first
every source's first query (up to 32 sources of them even when reading used up the budget),
then every second one — so a client sending thousands of queries a second takes its turn like
the others instead of pushing their queries out of the budget.
A large receive buffer (``SO_RCVBUFFORCE``) absorbs bursts between batches. Replies are sent
without waiting: a full send buffer drops the reply, as UDP may. Questions that must go
upstream become tasks, at most ``max_pending`` at once; beyond that they are dropped.

TCP. At most ``max_connections`` at once (more are closed on accept); each reads
length-prefixed queries one after the other, pipelined or not, and is closed after
``idle_timeout`` seconds without a complete query or when a reply cannot be written within
that time. After each answer the handler yields to the loop, so a client that pipelines a
burst cannot hold it. A length above the query limit gets FORMERR and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import time
from typing import Any

from k3py.agent.dns.wire import MAX_QUERY_BYTES, QueryProcessor, header_only

log = logging.getLogger("k3py.agent.dns")

RECEIVE_BUFFER = 1 << 20  # ~1,000 queries of burst; more would only queue them longer
FIRST_ROUND = 32  # sources whose first query of a batch is answered even past the budget


class DNSServer:
    def __init__(
        self,
        processor: QueryProcessor,
        address: str,
        port: int = 53,
        *,
        read_batch: int = 512,
        budget: float = 0.005,
        max_pending: int = 512,
        max_connections: int = 128,
        idle_timeout: float = 10.0,
    ) -> None:
        self.processor = processor
        self.address = address
        self.port = port
        self.read_batch = read_batch
        self.budget = budget
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._udp: socket.socket | None = None
        self._tcp: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self.dropped = 0  # queries read but not answered for lack of budget or capacity

    async def start(self) -> int:
        """Bind both listeners; returns the port (the one chosen when ``port`` is 0)."""
        self._loop = asyncio.get_running_loop()
        for attempt in range(20 if self.port == 0 else 1):
            try:
                return await self._bind()
            except OSError:  # port 0: the TCP side of the chosen UDP port may be taken; again
                if attempt == (19 if self.port == 0 else 0):
                    raise
        raise AssertionError("unreachable")

    async def _bind(self) -> int:
        assert self._loop is not None
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.setblocking(False)
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    udp.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
                    break
                except OSError:
                    continue
            udp.bind((self.address, self.port))
            port = udp.getsockname()[1]
            self._tcp = await asyncio.start_server(
                self._tcp_client, self.address, port, family=family, reuse_address=True, backlog=128,
            )
        except BaseException:
            udp.close()
            raise
        self._udp = udp
        self.port = port
        self._loop.add_reader(udp.fileno(), self._udp_readable)
        log.info("cluster DNS listening on %s:%d (UDP and TCP)", self.address, port)
        return port

    async def stop(self) -> None:
        if self._udp is not None and self._loop is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in [*self._pending, *self._connections]:
            task.cancel()
        await asyncio.gather(*self._pending, *self._connections, return_exceptions=True)

    # -- UDP ----------------------------------------------------------------------------

    def _udp_readable(self) -> None:
        sock = self._udp
        if sock is None:
            return
        started = time.perf_counter()
        batch: list[tuple[bytes, Any]] = []
        reading_until = started + self.budget / 2
        for count in range(1, self.read_batch + 1):
            try:
                batch.append(sock.recvfrom(65535))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                log.debug("DNS receive: %s", e)
                break
            if not count % 32 and time.perf_counter() > reading_until:
                break
        if not batch:
            return
        first_round = 1
        if len(batch) > 1:
            batch, first_round = _in_rounds(batch)
        deadline = started + self.budget
        process = self.processor.process
        for index, (data, source) in enumerate(batch):
            if index >= first_round and time.perf_counter() > deadline:
                self.dropped += len(batch) - index
                break
            try:
                result = process(data, False)
            except Exception:
                log.exception("DNS query from %s failed", source[0])
                result = header_only(data, 2) if len(data) >= 12 else None
            if result is None:
                continue
            if isinstance(result, bytes):
                self._send(result, source)
            elif len(self._pending) >= self.max_pending:
                result.close()
                self.dropped += 1
            else:
                task = asyncio.ensure_future(self._send_later(result, source))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    def _send(self, data: bytes, destination: Any) -> None:
        sock = self._udp
        if sock is None:
            return
        try:
            sock.sendto(data, destination)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as e:
            log.debug("DNS reply to %s: %s", destination, e)

    async def _send_later(self, pending: Any, destination: Any) -> None:
        data = await pending
        if data is not None:
            self._send(data, destination)

    # -- TCP ----------------------------------------------------------------------------

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.max_connections or task is None:
            writer.close()
            return
        self._connections.add(task)
        try:
            while True:
                try:
                    length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.idle_timeout))[0]
                    if length > MAX_QUERY_BYTES:
                        head = await asyncio.wait_for(reader.readexactly(min(length, 12)), self.idle_timeout)
                        if len(head) == 12:
                            reply = header_only(head, 1)
                            writer.write(struct.pack("!H", len(reply)) + reply)
                            await asyncio.wait_for(writer.drain(), self.idle_timeout)
                        return
                    data = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                result = self.processor.process(data, True)
                if result is None:
                    return
                if not isinstance(result, bytes):
                    result = await result
                    if result is None:
                        return
                writer.write(struct.pack("!H", len(result)) + result)
                try:
                    await asyncio.wait_for(writer.drain(), self.idle_timeout)
                except (TimeoutError, ConnectionError):
                    return
                await asyncio.sleep(0)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def _in_rounds(batch: list[tuple[bytes, Any]]) -> tuple[list[tuple[bytes, Any]], int]:
    """The batch reordered in rounds over its source addresses (each source's first query,
    then each second...), so a flooding source cannot push others out of the budget; and how
    many of the first round are answered whatever the budget (at most ``FIRST_ROUND``)."""
    by_source: dict[Any, list[tuple[bytes, Any]]] = {}
    for item in batch:
        by_source.setdefault(item[1][0], []).append(item)
    if len(by_source) == 1:
        return batch, 1
    ordered = [item for round_ in itertools.zip_longest(*by_source.values()) for item in round_ if item is not None]
    return ordered, min(len(by_source), FIRST_ROUND)
