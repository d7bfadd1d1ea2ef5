"""The fault proxy of the network drills (tests/integration/proxy.py), on loopback sockets:
an echo server behind it, plain sockets in front."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.proxy import (
    FaultProxy,
    Mode,
    ProxyStats,
    kafka_client_id,
    parse_kafka_client_id,
)

QUIET_S = 0.3  # long enough for an echo on loopback to come back, were it forwarded


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        server.connections += 1
        try:
            while data := self.request.recv(65_536):
                self.request.sendall(data)
        except ConnectionResetError:
            server.resets += 1
        finally:
            server.ended += 1


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0  # accepted from the proxy
    ended = 0  # closed or reset by the proxy
    resets = 0


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def target(server: EchoServer) -> tuple[str, int]:
    host, port = server.server_address[:2]
    return str(host), int(port)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(target(echo)) as started:
        yield started


@pytest.fixture
def kafka_proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(target(echo), identify=kafka_client_id) as started:
        yield started


def kafka_request(client_id: str | None, api_key: int = 18, version: int = 3) -> bytes:
    """A size-prefixed request with header v1/v2's fields (ApiVersions by default)."""
    if client_id is None:
        name = struct.pack(">h", -1)
    else:
        encoded = client_id.encode()
        name = struct.pack(">h", len(encoded)) + encoded
    body = struct.pack(">hhi", api_key, version, 7) + name + b"\x00"  # empty tagged fields
    return struct.pack(">i", len(body)) + body


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(QUIET_S)
    return sock


def receive(sock: socket.socket, size: int, timeout_s: float = 5.0) -> bytes:
    """Exactly ``size`` bytes (raises on EOF or timeout)."""
    sock.settimeout(timeout_s)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return data


def silent(sock: socket.socket) -> bool:
    """Nothing arrives for QUIET_S (and the connection is still open)."""
    sock.settimeout(QUIET_S)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    return False


def ends_with_reset(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        sock.recv(1)
    except ConnectionResetError:
        return True
    return False


def reset_on_arrival(proxy: FaultProxy, first: bytes = b"") -> bool:
    """A new connection (sending ``first``) is reset; on loopback the reset may come
    before ``connect`` returns."""
    try:
        with connect(proxy) as sock:
            if first:
                sock.sendall(first)
            return ends_with_reset(sock)
    except ConnectionResetError:
        return True


def ends_with_eof(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(1) == b""


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- parsing the client id --------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (kafka_request("drill-alerts")[4:], "drill-alerts"),
        (kafka_request("rdkafka", api_key=3, version=12)[4:], "rdkafka"),  # Metadata
        (kafka_request("")[4:], ""),
        (kafka_request(None)[4:], None),  # a null client id
        (kafka_request("drill-alerts")[4:12], None),  # cut inside the name
        (b"\x00\x12\x00\x03", None),  # no room for a header
        (struct.pack(">hhih", 18, 3, 1, 2) + b"\xff\xfe", None),  # not UTF-8
    ],
    ids=["apiversions", "metadata", "empty", "null", "truncated", "short", "not-utf8"],
)
def test_client_id_is_read_from_the_request_header(
    request_bytes: bytes, expected: str | None
) -> None:
    assert parse_kafka_client_id(request_bytes) == expected


# -- modes on every connection -----------------------------------------------------------


def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        assert receive(sock, 5) == b"hello"
    assert proxy.stats.accepted[None] == 1


def test_stall_holds_everything_until_restored(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"before")
        assert receive(sock, 6) == b"before"
        proxy.set_mode(Mode.STALL)
        sock.sendall(b"during")
        assert silent(sock)
        with connect(proxy) as newcomer:  # accepted, but held: not even connected upstream
            newcomer.sendall(b"late")
            assert silent(newcomer)
            assert echo.connections == 1
            proxy.set_mode(Mode.PASS)
            assert receive(sock, 6) == b"during"  # held, not lost
            assert receive(newcomer, 4) == b"late"
        wait_until(lambda: echo.connections == 2)


def test_reset_resets_live_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert receive(sock, 1) == b"x"
        proxy.set_mode(Mode.RESET)
        assert ends_with_reset(sock)
    assert reset_on_arrival(proxy)
    assert proxy.stats.reset[None] == 1
    assert proxy.stats.refused[None] == 1
    proxy.set_mode(Mode.PASS)
    with connect(proxy) as sock:
        sock.sendall(b"again")
        assert receive(sock, 5) == b"again"


def test_reset_while_stalled_resets_the_held_connection(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.STALL)
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert silent(sock)
        proxy.set_mode(Mode.RESET)
        assert ends_with_reset(sock)


def test_drop_closes_live_connections_and_new_ones(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert receive(sock, 1) == b"x"
        proxy.set_mode(Mode.DROP)
        assert ends_with_eof(sock)
    with connect(proxy) as newcomer:
        assert ends_with_eof(newcomer)
    assert proxy.stats.dropped[None] == 1
    assert proxy.stats.refused[None] == 1


@pytest.mark.parametrize(("mode", "resets"), [(Mode.DROP, 0), (Mode.RESET, 1)])
def test_the_upstream_side_ends_too(
    proxy: FaultProxy, echo: EchoServer, mode: Mode, resets: int
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert receive(sock, 1) == b"x"
        assert proxy.connections() == 1
        proxy.set_mode(mode)
        wait_until(lambda: echo.ended == 1)
    assert echo.resets == resets
    assert proxy.connections() == 0


def test_fault_restores_pass_afterwards(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        with proxy.fault(Mode.STALL):
            sock.sendall(b"held")
            assert silent(sock)
        assert receive(sock, 4) == b"held"
    assert proxy.mode_for(None) is Mode.PASS


def test_an_unreachable_target_resets_the_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # nothing listens there
        with FaultProxy(("127.0.0.1", port)) as proxy:
            assert reset_on_arrival(proxy)


def test_only_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("192.0.2.1", 9092))


# -- modes per Kafka client id -----------------------------------------------------------


def test_a_mode_for_some_clients_leaves_the_others_alone(kafka_proxy: FaultProxy) -> None:
    flow_request, test_request = kafka_request("drill-flow"), kafka_request("rdkafka")
    with connect(kafka_proxy) as flow, connect(kafka_proxy) as other:
        for sock, request in ((flow, flow_request), (other, test_request)):
            sock.sendall(request)
            assert receive(sock, len(request)) == request  # the first request is forwarded
        kafka_proxy.set_mode(Mode.STALL, clients={"drill-flow"})
        flow.sendall(b"ping")
        other.sendall(b"ping")
        assert receive(other, 4) == b"ping"
        assert silent(flow)
        with connect(kafka_proxy) as flow_again:  # a new connection of the stalled client
            flow_again.sendall(flow_request)
            assert silent(flow_again)
            kafka_proxy.set_mode(Mode.RESET, clients={"drill-flow"})
            assert ends_with_reset(flow)
            assert ends_with_reset(flow_again)
        assert reset_on_arrival(kafka_proxy, flow_request)
        other.sendall(b"still")
        assert receive(other, 5) == b"still"
        kafka_proxy.set_mode(Mode.PASS, clients={"drill-flow"})
        with connect(kafka_proxy) as restored:
            restored.sendall(flow_request)
            assert receive(restored, len(flow_request)) == flow_request
    stats = kafka_proxy.reset_stats()
    assert stats.accepted == {"drill-flow": 4, "rdkafka": 1}
    assert stats.reset == {"drill-flow": 2}
    assert stats.refused == {"drill-flow": 1}
    assert kafka_proxy.stats == ProxyStats()


def test_a_mode_for_everyone_overrides_per_client_modes(kafka_proxy: FaultProxy) -> None:
    kafka_proxy.set_mode(Mode.STALL, clients={"a"})
    kafka_proxy.set_mode(Mode.DROP)
    assert kafka_proxy.mode_for("a") is Mode.DROP
    assert kafka_proxy.mode_for("b") is Mode.DROP
    kafka_proxy.set_mode(Mode.PASS)
    assert kafka_proxy.mode_for("a") is Mode.PASS


def test_a_client_that_leaves_before_its_first_request_is_forgotten(
    kafka_proxy: FaultProxy,
) -> None:
    with connect(kafka_proxy) as sock:
        sock.sendall(b"\x00\x00")
    wait_until(lambda: kafka_proxy.connections() == 0)
    assert sum(kafka_proxy.stats.accepted.values()) == 0
