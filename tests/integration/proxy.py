"""A TCP proxy for network-fault drills: pass, stall (blackhole), reset or drop connections.

The drills put one ``FaultProxy`` between a flow and a broker and switch its mode from the
test while real processes run:

* ``pass``: bytes flow both ways.
* ``stall``: connections stay open and nothing is forwarded, either way (a blackhole); new
  connections are accepted and held the same way. Restoring ``pass`` forwards what was
  held, as TCP would once a partition heals, unless a side gave up meanwhile.
* ``reset``: existing connections are reset (RST: ``SO_LINGER`` 0, then close), on both
  sides; new ones are accepted and reset at once.
* ``drop``: existing connections are closed (FIN), on both sides; new ones are accepted
  and closed at once.

A listening socket cannot refuse some connections and not others, so "refuse" is accept
then reset (or close); clients see a connection that fails during set-up, and retry as
they would after ECONNREFUSED. Likewise a stall happens above TCP: the client's kernel
sees its bytes acknowledged, only the answers are missing, and a client notices the
outage by its request or keep-alive timeouts, as it would behind a real blackhole.

Kafka clients learn the broker's address from metadata, so the broker must advertise the
proxy (Tansu's ``--advertised-listener-url``) for every connection to pass through it. To
fault one flow's connections while the test's own clients keep working, a proxy built with
``identify=kafka_client_id`` reads each connection's first Kafka request before choosing
what to do with it, and ``set_mode(mode, clients={...})`` applies to the connections whose
request header named one of those ``client.id``s (a flow's is set with
``FLEET_KAFKA_CLIENT_ID``). Without ``clients`` a mode applies to every connection.

The proxy runs an asyncio loop on a thread of its own; ``set_mode`` returns once the mode
is in force (held, reset or closed). Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import socket
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

_CHUNK = 65_536
_MAX_FIRST_REQUEST = 1 << 20  # bytes of a first Kafka request read in whole to find its client id


class Mode(enum.StrEnum):
    PASS = "pass"
    STALL = "stall"
    RESET = "reset"
    DROP = "drop"


# Reads what a connection sends first and names its client: (bytes read, client id or None).
# The bytes are forwarded upstream before anything else once the connection passes.
Identify = Callable[[asyncio.StreamReader], Awaitable[tuple[bytes, str | None]]]


def parse_kafka_client_id(request: bytes) -> str | None:
    """The client id in a Kafka request header (size prefix excluded): int16 api_key, int16
    api_version, int32 correlation_id, then client_id as an int16-length nullable string
    (header v1 and v2 alike). None when absent, null or not UTF-8."""
    if len(request) < 10:
        return None
    (length,) = struct.unpack_from(">h", request, 8)
    if length < 0 or len(request) < 10 + length:
        return None
    try:
        return request[10 : 10 + length].decode()
    except UnicodeDecodeError:
        return None


async def kafka_client_id(reader: asyncio.StreamReader) -> tuple[bytes, str | None]:
    """Read a connection's first Kafka request (int32 size, then the request) and name its
    client. A request too large to hold is identified by its first bytes only."""
    prefix = await reader.readexactly(4)
    (size,) = struct.unpack(">i", prefix)
    if size < 10:
        return prefix, None
    body = await reader.readexactly(min(size, _MAX_FIRST_REQUEST))
    return prefix + body, parse_kafka_client_id(body)


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the fault proxy only uses loopback addresses, not {host}")


@dataclass
class ProxyStats:
    """What the proxy did, per client id (``None``: unidentified)."""

    accepted: Counter[str | None] = field(default_factory=Counter)
    refused: Counter[str | None] = field(default_factory=Counter)  # reset/closed on arrival
    reset: Counter[str | None] = field(default_factory=Counter)  # live ones reset
    dropped: Counter[str | None] = field(default_factory=Counter)  # live ones closed
    bytes_up: int = 0
    bytes_down: int = 0


class _Link:
    """One proxied connection: the client's side, the upstream side (once connected), and a
    gate both pumps wait on before reading and before writing."""

    def __init__(
        self, client_id: str | None, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.client_id = client_id
        self.client_reader = reader
        self.client_writer = writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.gate = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_writer, self.upstream_writer) if w is not None]

    def reset(self) -> None:
        for writer in self.writers():
            _reset(writer)

    def drop(self) -> None:
        for writer in self.writers():
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: linger on, zero seconds, and no flushing of what is buffered."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listen on 127.0.0.1:``port`` (0: any free port) and forward to ``target``."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        port: int = 0,
        identify: Identify | None = None,
        name: str = "proxy",
    ) -> None:
        _require_loopback(target[0])
        self.target = target
        self.name = name
        self.stats = ProxyStats()
        self._requested_port = port
        self._identify = identify
        self._default = Mode.PASS
        self._by_client: dict[str, Mode] = {}
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    # -- control, from any thread ------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: what clients connect to (and a broker advertises)."""
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: Mode, clients: Collection[str] | None = None) -> None:
        """Apply ``mode`` to every connection (``clients`` None: and forget per-client modes)
        or only to those whose client id is in ``clients``; returns once it is in force."""
        self._call(self._apply(Mode(mode), None if clients is None else frozenset(clients)))

    def reset_stats(self) -> ProxyStats:
        """Start counting afresh; returns the counts so far."""
        return self._call(self._reset_stats())

    def mode_for(self, client_id: str | None) -> Mode:
        if client_id is None:
            return self._default
        return self._by_client.get(client_id, self._default)

    def connections(self, client_id: str | None = None) -> int:
        """Live connections (of ``client_id`` only, when given)."""
        return self._call(self._count(client_id))

    @contextlib.contextmanager
    def fault(self, mode: Mode, clients: Collection[str] | None = None) -> Iterator[None]:
        """``mode`` for the body of a ``with``, then ``pass`` for the same connections."""
        self.set_mode(mode, clients)
        try:
            yield
        finally:
            self.set_mode(Mode.PASS, clients)

    # -- the loop's side ---------------------------------------------------------------

    def _call(self, coroutine: Awaitable[T]) -> T:
        async def run() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        self._links.clear()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _reset_stats(self) -> ProxyStats:
        stats, self.stats = self.stats, ProxyStats()
        return stats

    async def _count(self, client_id: str | None) -> int:
        return sum(client_id is None or link.client_id == client_id for link in self._links)

    async def _apply(self, mode: Mode, clients: frozenset[str] | None) -> None:
        if clients is None:
            self._default = mode
            self._by_client.clear()
        else:
            self._by_client.update(dict.fromkeys(clients, mode))
        for link in list(self._links):
            if clients is not None and link.client_id not in clients:
                continue
            if mode is Mode.PASS:
                link.gate.set()
            elif mode is Mode.STALL:
                link.gate.clear()
            else:
                self._end(link, mode)

    def _end(self, link: _Link, mode: Mode) -> None:
        self._links.discard(link)
        if mode is Mode.RESET:
            self.stats.reset[link.client_id] += 1
            link.reset()
        else:
            self.stats.dropped[link.client_id] += 1
            link.drop()
        if link.task is not None and link.task is not asyncio.current_task():
            link.task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(task, reader, writer)
        except asyncio.CancelledError:
            pass  # reset or dropped by _end, or the proxy stopped
        finally:
            self._handlers.discard(task)

    async def _serve(
        self, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head, client_id = b"", None
        if self._identify is not None:
            try:
                head, client_id = await self._identify(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                return
        self.stats.accepted[client_id] += 1
        mode = self.mode_for(client_id)
        if mode is Mode.RESET or mode is Mode.DROP:
            self.stats.refused[client_id] += 1
            if mode is Mode.RESET:
                _reset(writer)
            else:
                writer.close()
            return
        link = _Link(client_id, reader, writer)
        link.task = task
        if mode is Mode.PASS:
            link.gate.set()
        self._links.add(link)
        try:
            await self._forward(link, head)
        finally:
            if link in self._links:
                self._links.discard(link)
                link.drop()

    async def _forward(self, link: _Link, head: bytes) -> None:
        await link.gate.wait()  # a stalled new connection is not even connected upstream
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(link.client_writer)
            return
        link.upstream_writer = upstream_writer
        if head:
            upstream_writer.write(head)
            self.stats.bytes_up += len(head)
        up = asyncio.ensure_future(self._pump(link, link.client_reader, upstream_writer, True))
        down = asyncio.ensure_future(self._pump(link, upstream_reader, link.client_writer, False))
        try:
            # Either side closing ends the connection (Kafka and MQTT use no half-close).
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            down.cancel()

    async def _pump(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        upward: bool,
    ) -> None:
        try:
            while True:
                await link.gate.wait()
                data = await source.read(_CHUNK)
                if not data:
                    return
                await link.gate.wait()  # what was read as the stall began is held, not sent
                sink.write(data)
                if upward:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                await sink.drain()
        except ConnectionError:
            return
