"""Is the input flowing? Liveness of the Kafka partitions a process reads and of the bridges
that feed them, and the *input clock*: time that passes only while the input flows.

Why: the alerts flow evaluates a quiet truck's pending readings once the truck has been
quiet for ALLOWED_LATENESS (CONTRACT.md section 4). Measured on the wall clock, an outage
of Kafka or of the bridge looks like every truck going quiet at once: their readings are
flushed, and the readings still queued upstream arrive afterwards, late. Measured on the
input clock, a truck is quiet only while its input is reachable and caught up (as Flink
marks a source idle), so an outage pauses the quiet time instead of spending it.

The input is *live* when, in this process:

* every Kafka partition it reads is reachable (its leader broker is connected and answered
  within ``STALL_S``) and caught up (what is left to read arrived within the last
  ``STALL_S``: a consumer that keeps pace is live, one draining a backlog is not), as of
  librdkafka statistics no older than ``STALE_S``; and
* every bridge that sent heartbeats (connectors/heartbeat.py) sent one within
  ``STALE_S``, is connected to MQTT, and has had no reading waiting longer than
  ``STALL_S`` for Kafka's confirmation. A bridge that stopped gracefully says so and is
  no longer waited for; one silent for ``forget_s`` (default 10 min) is assumed gone
  (scaled down without a goodbye), and waited for no longer.

Each process judges by the partitions it reads: an outage of the broker or of the bridge
reaches every process alike. (A network fault between one process and Kafka pauses only
that process's clock; trucks whose state another process holds are judged by that
process's input. That case is left open and documented.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from runtime.metrics import INPUT_CLOCK_PAUSED, INPUT_LIVE

log = structlog.get_logger(__name__)

STALE_S = 3.0  # statistics or heartbeats older than this say nothing: not live
STALL_S = 2.0  # a broker silent this long, or a reading unconfirmed this long: stalled
STATISTICS_INTERVAL_MS = "1000"


@dataclass
class _PartitionState:
    reachable: bool = False
    caught_up: bool = False
    at: float = float("-inf")  # monotonic time of the statistics
    high: int = -1  # the high watermark they gave


@dataclass(frozen=True)
class PartitionReading:
    """What one librdkafka statistics document says of one partition."""

    reachable: bool
    high: int  # the high watermark of the last fetch response (-1: unknown)
    position: int  # the next offset the application reads (the low watermark if none yet)


def read_statistics(
    statistics: Mapping[str, Any], topic: str, partition: int, position: int
) -> PartitionReading:
    """Reachable: the partition's leader is a broker in state UP that received something
    within STALL_S (``rxidle``: a blackholed connection stays UP until the socket times
    out, but stops receiving; fetches otherwise answer every fetch.wait.max.ms)."""
    partitions = statistics.get("topics", {}).get(topic, {}).get("partitions", {})
    info = partitions.get(str(partition))
    if info is None:
        return PartitionReading(False, -1, position)
    leader = info.get("leader", -1)
    reachable = any(
        broker.get("nodeid") == leader
        and broker.get("state") == "UP"
        and 0 <= broker.get("rxidle", -1) <= STALL_S * 1_000_000
        for broker in statistics.get("brokers", {}).values()
    )
    if position < 0:  # nothing read yet: from the start of what the partition holds
        position = info.get("lo_offset", -1)
    return PartitionReading(reachable, info.get("hi_offset", -1), position)


def caught_up(reading: PartitionReading, previous_high: int, interval_s: float) -> bool:
    """Within STALL_S of the end: the records not yet read are fewer than arrive in STALL_S
    (the rate from the high watermark's growth since the previous statistics). A consumer
    that keeps pace always trails the end a little; one draining a backlog, or facing
    records that stopped arriving, is behind."""
    if not reading.reachable or reading.high < 0 or reading.position < 0:
        return False
    behind = reading.high - reading.position
    if behind <= 0:
        return True
    if previous_high < 0 or interval_s <= 0:
        return False
    rate = max(reading.high - previous_high, 0) / interval_s
    return behind <= rate * STALL_S


@dataclass
class _LastHeartbeat:
    """The last heartbeat heard from a bridge, and when it was received (monotonic); what
    the bridge sends is connectors/heartbeat.py ``BridgeStatus``."""

    received_at: float
    mqtt_connected: bool
    oldest_unconfirmed_s: float
    leaving: bool = False


@dataclass
class InputLiveness:
    """The liveness of this process's input: partitions report their librdkafka statistics,
    the heartbeat monitor reports bridges. Thread-safe; ``monotonic`` is injectable."""

    monotonic: Callable[[], float] = time.monotonic
    forget_s: float = 600.0
    _partitions: dict[tuple[str, int], _PartitionState] = field(default_factory=dict)
    _bridges: dict[str, _LastHeartbeat] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _state: str | None = None  # live, behind (catching up) or stalled

    def register(self, topic: str, partition: int) -> None:
        """A partition this process reads: not live until its first statistics say so."""
        with self._lock:
            self._partitions.setdefault((topic, partition), _PartitionState())

    def unregister(self, topic: str, partition: int) -> None:
        with self._lock:
            self._partitions.pop((topic, partition), None)

    def report_statistics(self, topic: str, partition: int, statistics: str, position: int) -> None:
        """Called from the partition's consumer with librdkafka's statistics JSON."""
        try:
            document = json.loads(statistics)
        except ValueError:
            return
        reading = read_statistics(document, topic, partition, position)
        now = self.monotonic()
        with self._lock:
            previous = self._partitions.get((topic, partition), _PartitionState())
            self._partitions[(topic, partition)] = _PartitionState(
                reading.reachable,
                caught_up(reading, previous.high, now - previous.at),
                now,
                reading.high,
            )

    def report_bridge(self, bridge: str, heartbeat: Mapping[str, Any], age_s: float = 0.0) -> None:
        """Called by the heartbeat monitor for each heartbeat received (``age_s`` ago)."""
        status = _LastHeartbeat(
            received_at=self.monotonic() - age_s,
            mqtt_connected=bool(heartbeat.get("mqtt_connected", False)),
            oldest_unconfirmed_s=float(heartbeat.get("oldest_unconfirmed_s", 0.0) or 0.0),
            leaving=bool(heartbeat.get("leaving", False)),
        )
        with self._lock:
            if status.leaving:
                self._bridges.pop(bridge, None)
            else:
                self._bridges[bridge] = status

    def live(self) -> bool:
        """Whether the input flows right now (see the module docstring)."""
        now = self.monotonic()
        with self._lock:
            for bridge, status in list(self._bridges.items()):
                if now - status.received_at > self.forget_s:
                    del self._bridges[bridge]
                    log.warning("bridge_forgotten", bridge=bridge, silent_s=self.forget_s)
            unreachable = [
                f"{topic}[{partition}]"
                for (topic, partition), state in self._partitions.items()
                if not state.reachable or now - state.at > STALE_S
            ]
            behind = [
                f"{topic}[{partition}]"
                for (topic, partition), state in self._partitions.items()
                if state.reachable and now - state.at <= STALE_S and not state.caught_up
            ]
            bridges = [
                bridge
                for bridge, status in self._bridges.items()
                if not (
                    now - status.received_at <= STALE_S
                    and status.mqtt_connected
                    and status.oldest_unconfirmed_s <= STALL_S
                )
            ]
            state = "stalled" if unreachable or bridges else "behind" if behind else "live"
            if state != self._state:
                self._log_transition(self._state, state, unreachable, bridges, behind)
                self._state = state
                INPUT_LIVE.set(1 if state == "live" else 0)
        return state == "live"

    @staticmethod
    def _log_transition(
        before: str | None,
        after: str,
        unreachable: list[str],
        bridges: list[str],
        behind: list[str],
    ) -> None:
        # A stall is news (warning, and info when it ends); catching up on a backlog is
        # routine and flips often under load: debug only.
        if after == "stalled":
            log.warning("input_stalled", partitions=unreachable, bridges=bridges)
        elif before == "stalled":
            log.info("input_flowing", behind=behind)
        else:
            log.debug("input_" + after, behind=behind)


@dataclass
class InputClock:
    """Time that passes only while the input is live, as an aware datetime (it starts at
    the wall clock's reading when built). A ticker thread advances it every ``tick_s``;
    stalls are resolved to that granularity."""

    liveness: Callable[[], bool]
    wall: Callable[[], datetime]
    monotonic: Callable[[], float] = time.monotonic
    tick_s: float = 0.1
    _origin: datetime = field(init=False)
    _elapsed_s: float = 0.0
    _last_tick: float = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._origin = self.wall()
        self._last_tick = self.monotonic()

    def tick(self) -> None:
        """Advance by the monotonic time since the last tick if the input is live now."""
        now = self.monotonic()
        live = self.liveness()
        with self._lock:
            step = max(now - self._last_tick, 0.0)
            if live:
                self._elapsed_s += step
            else:
                INPUT_CLOCK_PAUSED.inc(step)
            self._last_tick = now

    def now(self) -> datetime:
        with self._lock:
            return self._origin + timedelta(seconds=self._elapsed_s)

    def start(self) -> InputClock:
        def run() -> None:
            while not self._stop.wait(self.tick_s):
                self.tick()

        self._thread = threading.Thread(target=run, name="fleetwatch-input-clock", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
