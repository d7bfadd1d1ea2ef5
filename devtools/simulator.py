"""A deterministic fleet of trucks: contract-conformant readings plus the faults real fleets send.

For a given seed the same messages come out in the same order: cruising speeds, speeding
episodes (several readings over 90 km/h), rare critical spikes (over 130 km/h), resends of
earlier readings (same payload, same event_id), bounded disorder of event time, every ``ts``
form the contract allows, and a share of bad payloads, each tagged with the DLQ reason the
bridge must give it. ``python -m devtools.simulator --help`` publishes them over MQTT or
writes the valid readings as Parquet.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from domain.dead_letters import PAYLOAD_REASONS, Reason
from domain.readings import Reading
from domain.timestamps import format_rfc3339_ms, from_epoch_ms, to_epoch_ms

DEFAULT_START = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FleetConfig:
    """The simulated fleet's shape; everything else follows from the seed."""

    trucks: int = 20
    seed: int = 1
    start_ms: int = to_epoch_ms(DEFAULT_START)
    interval_s: float = 10.0  # event time between two readings of one truck
    bad_share: float = 0.0
    resend_share: float = 0.0
    disorder_s: float = 0.0  # readings are published up to this much out of event-time order
    episode_chance: float = 0.01
    spike_chance: float = 0.002
    topic_template: str = "fleet/{truck_id}/telemetry"
    truck_prefix: str = "T"

    def truck_ids(self) -> list[str]:
        return [f"{self.truck_prefix}{n:05d}" for n in range(self.trucks)]


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    """One MQTT message and what the bridge must make of it."""

    topic: str
    payload: bytes
    reading: Reading | None  # the valid reading it carries; None for a bad payload
    expected_reason: Reason | None = None  # the DLQ reason for a bad payload
    is_resend: bool = False


@dataclass
class _Truck:
    truck_id: str
    phase_ms: int
    seq: int = 0
    episode_left: int = 0
    lat: float = 52.5
    lon: float = 13.4


@dataclass
class FleetSimulator:
    """Generates ``SimulatedMessage``s; iterate ``messages(count)``."""

    config: FleetConfig
    _rng: random.Random = field(init=False)
    _trucks: list[_Truck] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)
        interval_ms = int(self.config.interval_s * 1000)
        self._trucks = [
            _Truck(truck_id, phase_ms=self._rng.randrange(max(interval_ms, 1)))
            for truck_id in self.config.truck_ids()
        ]
        for truck in self._trucks:
            truck.lat = 47.0 + self._rng.random() * 8
            truck.lon = 6.0 + self._rng.random() * 9

    def messages(self, count: int) -> Iterator[SimulatedMessage]:
        """The first ``count`` messages (resends and bad payloads included)."""
        rng = self._rng
        pending_resends: list[tuple[int, SimulatedMessage]] = []
        emitted = 0
        round_index = 0
        while emitted < count:
            for truck in self._trucks:
                if emitted >= count:
                    return
                due = [m for at, m in pending_resends if at <= emitted]
                pending_resends = [(at, m) for at, m in pending_resends if at > emitted]
                for resend in due:
                    if emitted < count:
                        emitted += 1
                        yield resend
                if emitted >= count:
                    return
                if rng.random() < self.config.bad_share:
                    message = self._bad_message(truck, round_index)
                else:
                    message = self._reading_message(truck, round_index)
                    if rng.random() < self.config.resend_share:
                        resend = SimulatedMessage(
                            message.topic, message.payload, message.reading, is_resend=True
                        )
                        pending_resends.append((emitted + rng.randint(1, 20), resend))
                emitted += 1
                yield message
            round_index += 1

    def _nominal_ms(self, truck: _Truck, round_index: int) -> int:
        return (
            self.config.start_ms + truck.phase_ms + int(round_index * self.config.interval_s * 1000)
        )

    def _next_speed(self, truck: _Truck) -> float:
        rng = self._rng
        if truck.episode_left == 0 and rng.random() < self.config.episode_chance:
            truck.episode_left = rng.randint(4, 12)
        if rng.random() < self.config.spike_chance:
            return round(rng.uniform(131.0, 150.0), 1)
        if truck.episode_left > 0:
            truck.episode_left -= 1
            return round(rng.uniform(91.0, 118.0), 1)
        return round(min(max(rng.gauss(74.0, 7.0), 0.0), 89.0), 1)

    def _motion(self, truck: _Truck, round_index: int) -> tuple[float, float | None, float | None]:
        """Speed, lat and lon of ``truck``'s reading of round ``round_index`` (lat and lon
        None: no position). Here a random walk; ``devtools.road_fleet`` drives on roads."""
        rng = self._rng
        truck.lat = min(max(truck.lat + rng.uniform(-0.01, 0.01), -90.0), 90.0)
        truck.lon = min(max(truck.lon + rng.uniform(-0.01, 0.01), -180.0), 180.0)
        has_position = rng.random() < 0.9
        speed_kmh = self._next_speed(truck)
        if not has_position:
            return speed_kmh, None, None
        return speed_kmh, round(truck.lat, 5), round(truck.lon, 5)

    def _reading_message(self, truck: _Truck, round_index: int) -> SimulatedMessage:
        rng = self._rng
        jitter_ms = int(rng.random() * self.config.disorder_s * 1000)
        ts_ms = self._nominal_ms(truck, round_index) - jitter_ms
        truck.seq += 1
        speed_kmh, lat, lon = self._motion(truck, round_index)
        reading = Reading(
            event_id=f"{truck.truck_id}-{truck.seq:09d}",
            truck_id=truck.truck_id,
            ts_ms=ts_ms,
            speed_kmh=speed_kmh,
            lat=lat,
            lon=lon,
        )
        document: dict[str, object] = {
            "event_id": reading.event_id,
            "truck_id": reading.truck_id,
            "ts": self._ts_form(ts_ms),
            "speed_kmh": reading.speed_kmh,
            "fw": "2.4.1",  # an unknown extra field, which the contract allows
        }
        if reading.lat is not None:
            document["lat"] = reading.lat
            document["lon"] = reading.lon
        payload = json.dumps(document, separators=(",", ":")).encode()
        return SimulatedMessage(self._topic(truck.truck_id), payload, reading)

    def _ts_form(self, ts_ms: int) -> str | int:
        """Every form CONTRACT.md section 2 allows, in realistic proportions."""
        choice = self._rng.random()
        if choice < 0.7:
            return format_rfc3339_ms(ts_ms)
        if choice < 0.8:
            return ts_ms
        moment = from_epoch_ms(ts_ms)
        if choice < 0.9:
            local = moment.astimezone(timezone_plus_two())
            return local.isoformat(timespec="milliseconds")
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _bad_message(self, truck: _Truck, round_index: int) -> SimulatedMessage:
        rng = self._rng
        topic = self._topic(truck.truck_id)
        event_id = f"{truck.truck_id}-bad-{rng.getrandbits(48):012x}"
        ts = format_rfc3339_ms(self._nominal_ms(truck, round_index))
        good: dict[str, object] = {
            "event_id": event_id,
            "truck_id": truck.truck_id,
            "ts": ts,
            "speed_kmh": 80.0,
        }
        # Only the reasons a payload itself can earn; unprocessable means a bug of ours.
        reason = rng.choice([r for r in Reason if r in PAYLOAD_REASONS])
        document = dict(good)
        if reason is Reason.INVALID_JSON:
            text = json.dumps(good)
            return SimulatedMessage(topic, text[: len(text) // 2].encode(), None, reason)
        if reason is Reason.SCHEMA:
            del document[rng.choice(["event_id", "truck_id", "ts", "speed_kmh"])]
        elif reason is Reason.OUT_OF_RANGE:
            document.update(rng.choice([{"speed_kmh": 512.0}, {"speed_kmh": -3}, {"lat": 123.0}]))
        elif reason is Reason.BAD_TIMESTAMP:
            document["ts"] = rng.choice(
                ["yesterday", "2026-13-45T99:00:00Z", "2026-11-24T10:00:00"]
            )
        elif reason is Reason.TRUCK_MISMATCH:
            document["truck_id"] = truck.truck_id + "X"
        elif reason is Reason.TOO_LARGE:
            document["blob"] = "x" * 70_000
        payload = json.dumps(document, separators=(",", ":")).encode()
        return SimulatedMessage(topic, payload, None, reason)

    def _topic(self, truck_id: str) -> str:
        return self.config.topic_template.format(truck_id=truck_id)


def timezone_plus_two() -> timezone:
    return timezone(timedelta(hours=2))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator", description=__doc__)
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--mqtt-protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--trucks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second in all")
    parser.add_argument("--count", type=int, help="messages to send (default: rate x duration)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds, when no --count")
    parser.add_argument("--interval-s", type=float, default=10.0, help="event time per truck step")
    parser.add_argument("--bad-share", type=float, default=0.0)
    parser.add_argument("--resend-share", type=float, default=0.0)
    parser.add_argument("--disorder-s", type=float, default=0.0)
    parser.add_argument("--topic-template", default="fleet/{truck_id}/telemetry")
    parser.add_argument("--start", help="event time of the first reading, RFC 3339 (default: now)")
    parser.add_argument("--parquet", help="write the valid readings here instead of publishing")
    parser.add_argument(
        "--roads",
        action="store_true",
        help="trucks that drive on the roads of Helsinki (devtools.road_fleet), as make demo's",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    config = FleetConfig(
        trucks=args.trucks,
        seed=args.seed,
        start_ms=to_epoch_ms(start),
        interval_s=args.interval_s,
        bad_share=args.bad_share,
        resend_share=args.resend_share,
        disorder_s=args.disorder_s,
        topic_template=args.topic_template,
    )
    count = args.count if args.count is not None else int(args.rate * args.duration)
    if args.roads:
        from devtools.road_fleet import RoadFleetSimulator

        messages = list(RoadFleetSimulator(config).messages(count))
    else:
        messages = list(FleetSimulator(config).messages(count))
    if args.parquet:
        from connectors.parquet import write_readings

        readings = [m.reading for m in messages if m.reading is not None and not m.is_resend]
        write_readings(readings, args.parquet)
        print(f"wrote {len(readings)} readings to {args.parquet}", file=sys.stderr)
        return 0
    from devtools.mqtt_publisher import publish_paced
    from runtime.settings import MqttUrl

    started = time.monotonic()
    sent = publish_paced(
        MqttUrl.parse(args.mqtt_url),
        args.mqtt_protocol,
        [(m.topic, m.payload) for m in messages],
        args.rate,
    )
    elapsed = time.monotonic() - started
    print(f"published {sent} messages in {elapsed:.1f} s ({sent / elapsed:.0f}/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
