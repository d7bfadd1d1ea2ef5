"""Rule catalogue throughput: the built-in catalogue vs a 10-rule catalogue (CONTRACT.md
section 9), and the cost of posted limits (section 10, issue 18): the same 10 rules plus
three posted_limit_over tiers with the roads loaded, side by side, in the stream
(dataflows.alerts) and in the backfill.

``python -m benchmarks.catalogue [--readings N] [--rows N] [--quick] [--out DIR]``

* The fleet: ``--trucks`` trucks (default 2,000) in central Helsinki, one reading every
  ~10 s each (ts jittered by 0-3 s), speeds 50-89 km/h with short episodes at 91-140 (as
  benchmarks/alerts.py). Nine trucks in ten drive a loop on the roads of the Helsinki
  extract (``road_loops``: depot and three stops joined by shortest paths on
  devtools/road_fleet.py's ``RoadNetwork``; 64 loops, each truck on one from its own
  starting point), moving along it as far as its speeds take it, with 3 m of GPS noise per
  axis; so nearly all their readings match a road and most have a posted limit. The rest
  (truck numbers ending in 3) drive the earlier loops across a wider box (through the West
  Harbour zone now and then; a share of them near a road). The stream's readings are the
  first ``--readings`` of the backfill's ``--rows``.
* The driver history: devtools/history_generator.py's for the same trucks (most have a
  vehicle class, every 10th none); both contenders of a pair use it.
* The 10-rule catalogue (``catalogue_files``): every kind of section 9 in this release
  (instant_over, count_over, duration_over, deceleration, zone_over; posted_limit_over is
  not), scoped to everyone, to vehicle classes, to truck patterns and to both; two
  versions, the second in force from the middle of the stream's readings, changing two
  rules' definitions (their state starts again) and one rule's severity. Run with
  ``FLEET_ROADS=none``: no road index, no matching (what it meant before posted limits).
* The posted-limit catalogue (``catalogue_files(..., posted_limits=True)``): the same two
  versions plus, in each, the three tiers of catalogue/rules/0003-posted-limits.yaml
  (light, moderate, severe), with the roads on: the default Helsinki extract, its index
  from a ``FLEET_ROADS_CACHE`` warmed once before any timing (as production starts). Its
  ten rules must give the 10-rule catalogue's alerts, and its tiers must give alerts.
* Stream: one pre-filled 16-partition topic; the plain loop (benchmarks/plain_alerts.py,
  built-in rules), the alerts flow with the built-in catalogue, with the 10-rule one and
  with the posted-limit one, each 1 process, ``FLEET_KAFKA_TAIL=false``, timed as whole
  processes (start-up included). The built-in flow must give the plain loop's alerts (by
  rule).
* Backfill: ``python -m bytewax.run dataflows.backfill`` over a Parquet lake of the same
  readings (Hive-partitioned by date, 4 files), alerts to a ``.jsonl`` file, with the
  built-in, the 10-rule and the posted-limit catalogue.
* Each set is run alternately, ``--rounds`` times (default 2: plain, built-in, 10-rule,
  posted-limit, plain, ...), and each contender's best run counts: the machine's noise
  hits every side alike. Every round must give each contender the same alerts. Other
  load (``pgrep -f pytest``, the load average) is recorded before and after.

The ratios: the built-in flow over the plain loop, the 10-rule catalogue over the built-in,
and the posted-limit catalogue over the 10-rule one (issue 18's aim: posted limits cost at
most a third of the rate, a ratio of 0.67 or more).

``--quick``: 60,000 readings and 300,000 rows, to check that it runs. Writes
``DIR/catalogue.json`` and ``DIR/catalogue.md`` (benchmarks.report's table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt
import polars as pl
import shapely
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks import report
from benchmarks.alerts import PARTITIONS, START_MS, timed
from connectors.kafka import ensure_topics
from connectors.roads import DEFAULT_MATCH_M, default_extract, load_road_index
from devtools.history_generator import HistoryShape
from devtools.history_generator import write as write_history
from devtools.launcher import FlowProcess
from devtools.localbrokers import local_brokers
from devtools.road_fleet import RoadNetwork
from domain.readings import Reading, encode_canonical
from domain.timestamps import format_rfc3339_ms

ROOT = Path(__file__).resolve().parents[1]
INTERVAL_MS = 10_000
# Central Helsinki: a truck off the roads drives a loop around its own centre within this
# box (most of the box lies outside the road extract, 60.164-60.179 N, 24.935-24.953 E).
LAT_RANGE = (60.155, 60.185)
LON_RANGE = (24.90, 24.98)
OFF_ROAD = 3  # trucks whose number ends in this drive those loops; the rest on the roads
ROAD_LOOPS = 64
LOOP_STOPS = 3  # besides the loop's depot
GPS_SIGMA_M = 3.0  # per axis, as benchmarks/roads.py
M_PER_DEG_LAT = 111_320.0  # enough for placing points: segments are tens of metres
# GeoJSON positions are [lon, lat]. The centre zone is an octagon (~16 % of the box), the
# harbour a rectangle (~7 %).
ZONES: dict[str, list[list[float]]] = {
    "Helsinki centre": [
        [24.935, 60.163],
        [24.955, 60.163],
        [24.960, 60.167],
        [24.960, 60.172],
        [24.955, 60.176],
        [24.935, 60.176],
        [24.930, 60.172],
        [24.930, 60.167],
        [24.935, 60.163],
    ],
    "West Harbour": [
        [24.905, 60.155],
        [24.925, 60.155],
        [24.925, 60.163],
        [24.905, 60.163],
        [24.905, 60.155],
    ],
}

# The 10 rules of version 1. Version 2 (``_VERSION_2_CHANGES``) changes two definitions and
# one severity. Scopes: everyone (5), vehicle classes (3), truck patterns (1), both (1).
RULES_V1 = """\
  - id: instant_overspeed
    kind: instant_over
    speed_over_kmh: 130
    cooldown_s: 600
    severity: critical
  - id: sustained_speeding
    kind: count_over
    speed_over_kmh: 90
    count: 5
    within_s: 600
    cooldown_s: 600
  - id: heavy_truck_speeding
    kind: count_over
    speed_over_kmh: 85
    count: 5
    within_s: 600
    scope: {vehicle_classes: [heavy]}
  - id: light_overspeed
    kind: instant_over
    speed_over_kmh: 120
    scope: {vehicle_classes: [light, medium]}
  - id: speeding_for_a_minute
    kind: duration_over
    speed_over_kmh: 100
    for_s: 60
    max_gap_s: 30
  - id: heavy_cruising
    kind: duration_over
    speed_over_kmh: 95
    for_s: 30
    scope: {trucks: ["T00*", "T010*"], vehicle_classes: [heavy]}
  - id: harsh_braking
    kind: deceleration
    drop_kmh: 45
    within_s: 15
    cooldown_s: 60
  - id: city_depot_speeding
    kind: count_over
    speed_over_kmh: 80
    count: 3
    within_s: 300
    scope: {trucks: ["T001*", "T0150?", "T01999"]}
  - id: centre_slow_zone
    kind: zone_over
    zone: Helsinki centre
    speed_over_kmh: 50
  - id: harbour_zone
    kind: zone_over
    zone: West Harbour
    speed_over_kmh: 40
    scope: {vehicle_classes: [heavy, medium]}
"""
_VERSION_2_CHANGES = {
    "    drop_kmh: 45\n": "    drop_kmh: 40\n",  # harsh_braking: a new definition
    "    zone: Helsinki centre\n    speed_over_kmh: 50\n": (
        "    zone: Helsinki centre\n    speed_over_kmh: 60\n"  # centre_slow_zone: the same
    ),
    "    cooldown_s: 600\n  - id: heavy_truck_speeding": (
        "    cooldown_s: 600\n    severity: critical\n  - id: heavy_truck_speeding"
    ),  # sustained_speeding: only the severity (its state carries on)
}
# The three tiers of the sample catalogue's version 3 (catalogue/rules/0003-posted-limits.yaml).
POSTED_RULES = """\
  - id: posted_speeding_light
    kind: posted_limit_over
    over_kmh: 9
    for_s: 60
    max_gap_s: 30
    cooldown_s: 600
  - id: posted_speeding_moderate
    kind: posted_limit_over
    over_kmh: 15
    over_pct: 20
    for_s: 20
    max_gap_s: 30
    cooldown_s: 600
  - id: posted_speeding_severe
    kind: posted_limit_over
    over_pct: 40
    for_s: 5
    cooldown_s: 300
    severity: critical
"""
POSTED_RULE_IDS = ("posted_speeding_light", "posted_speeding_moderate", "posted_speeding_severe")
RULE_IDS = (
    "instant_overspeed",
    "sustained_speeding",
    "heavy_truck_speeding",
    "light_overspeed",
    "speeding_for_a_minute",
    "heavy_cruising",
    "harsh_braking",
    "city_depot_speeding",
    "centre_slow_zone",
    "harbour_zone",
)


def zones_geojson() -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
            for name, ring in ZONES.items()
        ],
    }


def catalogue_files(second_version_ms: int, posted_limits: bool = False) -> dict[str, str]:
    """The two versions' files: version 1 from 2020, version 2 from ``second_version_ms``;
    with ``posted_limits``, each version also has the three posted-limit tiers."""
    v1 = RULES_V1 + (POSTED_RULES if posted_limits else "")
    v2 = v1
    for old, new in _VERSION_2_CHANGES.items():
        if v2.count(old) != 1:
            raise AssertionError(f"version 2's change does not apply once: {old!r}")
        v2 = v2.replace(old, new)
    name = "posted-limits" if posted_limits else "ten-rules"
    return {
        f"0001-{name}.yaml": f"version: 1\neffective_from: 2020-01-01T00:00:00Z\nrules:\n{v1}",
        f"0002-{name}.yaml": (
            f"version: 2\neffective_from: {format_rfc3339_ms(second_version_ms)}\nrules:\n{v2}"
        ),
    }


def write_catalogue(
    directory: Path, second_version_ms: int, posted_limits: bool = False
) -> tuple[Path, Path]:
    """The rules directory and the zones file (FLEET_RULES, FLEET_ZONES) under ``directory``."""
    rules = directory / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for name, text in catalogue_files(second_version_ms, posted_limits).items():
        (rules / name).write_text(text)
    zones = directory / "zones.geojson"
    zones.write_text(json.dumps(zones_geojson(), indent=1))
    return rules, zones


@dataclass(frozen=True)
class RoadLoops:
    """Closed routes on the roads, end to end in one polyline: ``along`` is the metres from
    the first loop's start to each node, each loop starting 1 m after the previous one ends
    (so interpolation never joins two loops); ``start`` and ``length`` per loop."""

    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    along: npt.NDArray[np.float64]
    start: npt.NDArray[np.float64]
    length: npt.NDArray[np.float64]

    def position(
        self, loop: npt.NDArray[np.int64], metres: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Where a truck is ``metres`` into its ``loop`` (lap after lap)."""
        at = self.start[loop] + np.mod(metres, self.length[loop])
        return np.interp(at, self.along, self.lat), np.interp(at, self.along, self.lon)


def road_loops(count: int, seed: int) -> RoadLoops:
    """``count`` loops on the Helsinki extract's roads: a depot and ``LOOP_STOPS`` stops,
    nodes on named ways drawn per seed, joined by shortest paths (devtools/road_fleet.py's
    network: every way two-way, its largest connected part)."""
    network = RoadNetwork.load()
    named = network.named_nodes()
    places = random.Random(f"{seed}/loops")
    lats: list[npt.NDArray[np.float64]] = []
    lons: list[npt.NDArray[np.float64]] = []
    alongs: list[npt.NDArray[np.float64]] = []
    starts: list[float] = []
    lengths: list[float] = []
    offset = 0.0
    for _ in range(count):
        stops = places.sample(named, LOOP_STOPS + 1)
        nodes = [stops[0]]
        for a, b in pairwise([*stops, stops[0]]):
            nodes += nx.shortest_path(network.graph, a, b, weight="length")[1:]
        lat = np.array([n[0] for n in nodes])
        lon = np.array([n[1] for n in nodes])
        scale = math.cos(math.radians(float(lat.mean())))
        step = np.hypot(np.diff(lat), np.diff(lon) * scale) * M_PER_DEG_LAT
        keep = np.r_[True, step > 0]  # no repeated node: interpolation needs rising x
        along = np.r_[0.0, np.cumsum(step)][keep]
        lats.append(lat[keep])
        lons.append(lon[keep])
        alongs.append(offset + along)
        starts.append(offset)
        lengths.append(float(along[-1]))
        offset += float(along[-1]) + 1.0
    return RoadLoops(
        np.concatenate(lats),
        np.concatenate(lons),
        np.concatenate(alongs),
        np.array(starts),
        np.array(lengths),
    )


def fleet_readings(rows: int, trucks: int, seed: int = 3) -> pl.DataFrame:
    """``rows`` readings, step by step (each step: one reading of every truck, in truck
    order): event_id, truck_id, ts_ms, speed_kmh, lat, lon. Deterministic; any prefix is
    the same for a larger ``rows``."""
    rng = np.random.default_rng(seed)
    steps = -(-rows // trucks)
    # On the roads: each truck's loop, how far into it it starts, and the distance it has
    # driven (its speeds times the nominal 10 s); its own generator, so the speeds and the
    # off-road loops are those of the fleet before the roads.
    loops = road_loops(ROAD_LOOPS, seed)
    on_roads = np.random.default_rng([seed, 18])
    off_road = np.arange(trucks) % 10 == OFF_ROAD
    loop = on_roads.integers(0, ROAD_LOOPS, trucks)
    driven = on_roads.uniform(0, 1, trucks) * loops.length[loop]
    # Off the roads: a loop of radius ~0.4-1.4 km around a centre in the box, one lap per
    # 20-60 minutes; ``phase`` its start.
    centre_lat = rng.uniform(LAT_RANGE[0] + 0.006, LAT_RANGE[1] - 0.006, trucks)
    centre_lon = rng.uniform(LON_RANGE[0] + 0.012, LON_RANGE[1] - 0.012, trucks)
    radius = rng.uniform(0.004, 0.012, trucks)
    phase = rng.uniform(0, 2 * np.pi, trucks)
    per_step = 2 * np.pi / rng.uniform(120, 360, trucks)
    speeding = np.zeros(trucks, dtype=np.int64)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("ts", "speed", "lat", "lon")}
    for step in range(steps):
        start = (speeding == 0) & (rng.random(trucks) < 0.01)
        speeding[start] = rng.integers(4, 11, int(start.sum()))
        fast = speeding > 0
        speeding[fast] -= 1
        speed = np.where(fast, rng.uniform(91, 140, trucks), rng.uniform(50, 89, trucks))
        angle = phase + step * per_step
        speed = np.round(speed, 1)
        columns["speed"].append(speed)
        columns["ts"].append(
            START_MS + step * INTERVAL_MS + rng.integers(0, 3_001, trucks, dtype=np.int64)
        )
        road_lat, road_lon = loops.position(loop, driven)
        noise = on_roads.normal(0.0, GPS_SIGMA_M / M_PER_DEG_LAT, (2, trucks))
        road_lat = road_lat + noise[0]
        road_lon = road_lon + noise[1] / np.cos(np.radians(road_lat))
        driven += speed / 3.6 * (INTERVAL_MS / 1000)
        lat = np.where(off_road, centre_lat + radius / 2 * np.sin(angle), road_lat)
        lon = np.where(off_road, centre_lon + radius * np.cos(angle), road_lon)
        columns["lat"].append(np.round(lat, 6))
        columns["lon"].append(np.round(lon, 6))
    n = pl.int_range(0, steps * trucks, eager=True).alias("n")[:rows]
    frame = pl.DataFrame(
        {
            "n": n,
            "ts_ms": np.concatenate(columns["ts"])[:rows],
            "speed_kmh": np.concatenate(columns["speed"])[:rows],
            "lat": np.concatenate(columns["lat"])[:rows],
            "lon": np.concatenate(columns["lon"])[:rows],
        }
    )
    truck = pl.format("T{}", (pl.col("n") % trucks).cast(pl.String).str.zfill(5))
    return frame.select(
        pl.format("{}-{}", truck, pl.col("n")).alias("event_id"),
        truck.alias("truck_id"),
        "ts_ms",
        "speed_kmh",
        "lat",
        "lon",
    )


def position_shares(frame: pl.DataFrame, cache_dir: Path) -> dict[str, float]:
    """Where the readings are: the share within the match distance of a road (matched as
    the flows match, in batches of 1,000), of those on a road with a limit (for a truck
    that is not heavy), and in each zone."""
    index = load_road_index(default_extract(), cache_dir)
    lats, lons = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    ways = np.concatenate(
        [
            index.match(lats[i : i + 1_000], lons[i : i + 1_000], DEFAULT_MATCH_M)[0]
            for i in range(0, len(lats), 1_000)
        ]
    )
    limited = np.array([way.limit is not None for way in index.ways])
    matched = ways >= 0
    shares = {
        "on_a_road": float(matched.mean()),
        "on_a_road_with_a_limit": float((matched & limited[np.maximum(ways, 0)]).mean()),
    }
    for name, ring in ZONES.items():
        inside = shapely.intersects_xy(shapely.Polygon(ring), lons, lats)
        shares[f"in {name}"] = float(np.mean(inside))
    return {name: round(share, 4) for name, share in shares.items()}


def as_readings(frame: pl.DataFrame) -> list[Reading]:
    return [Reading(*row) for row in frame.iter_rows()]


def prefill(bootstrap: str, topic: str, frame: pl.DataFrame) -> float:
    """Produce the readings (canonical form, positions included), keyed by truck; seconds."""
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], PARTITIONS, 1)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": "100",
            "batch.num.messages": "100000",
            "batch.size": "16000000",
            "queue.buffering.max.messages": "2000000",
            "queue.buffering.max.kbytes": "2000000",
        }
    )
    started = time.monotonic()
    for reading in as_readings(frame):
        value = encode_canonical(reading)
        while True:
            try:
                producer.produce(topic, value, reading.truck_id)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    return time.monotonic() - started


def build_lake(root: Path, frame: pl.DataFrame, files_per_day: int = 4) -> None:
    """The readings as the lake holds them (CONTRACT.md section 8): date=YYYY-MM-DD/*.parquet."""
    lake = frame.select(
        "event_id",
        "truck_id",
        pl.col("ts_ms").cast(pl.Datetime("ms", "UTC")).alias("ts"),
        "speed_kmh",
        "lat",
        "lon",
        (pl.int_range(0, pl.len()) % files_per_day).alias("file"),
    ).with_columns(pl.col("ts").dt.date().alias("date"))
    for (day, file), part in lake.partition_by("date", "file", as_dict=True).items():
        directory = root / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.drop("date", "file").write_parquet(
            directory / f"part-{file}.parquet", compression="zstd"
        )


def alerts_by_rule_on_topic(bootstrap: str, topic: str) -> Counter[str]:
    """Every alert on ``topic`` (read to its end), counted by rule."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "count", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    counts: Counter[str] = Counter()
    done = set[int]()
    while len(done) < len(partitions):
        for message in consumer.consume(10_000, 1.0):
            error = message.error()
            partition = message.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    done.add(partition)
                continue
            counts[json.loads(message.value() or b"{}")["rule"]] += 1
    consumer.close()
    return counts


def alerts_by_rule_in_file(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    with path.open("rb") as lines:
        for line in lines:
            counts[json.loads(line)["rule"]] += 1
    return counts


@dataclass(frozen=True)
class Contender:
    label: str
    module: str
    env: dict[str, str]
    runner: str | None = "bytewax.run"


def other_load() -> dict[str, Any]:
    """What else ran on the machine: test suites (``pgrep -f pytest``) and the load average."""
    found = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True, check=False)
    return {
        "pytest_processes": len(found.stdout.split()),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _best(runs: list[dict[str, Any]], units: int) -> dict[str, Any]:
    """The fastest of a contender's runs, with every run's time; the alerts must agree."""
    counts = [run["alerts_by_rule"] for run in runs]
    if any(c != counts[0] for c in counts):
        raise RuntimeError(f"rounds disagree on the alerts: {counts}")
    seconds = min(run["seconds"] for run in runs)
    return {
        "seconds": round(seconds, 2),
        "runs_s": [round(run["seconds"], 2) for run in runs],
        "per_s": round(units / seconds),
        "alerts": sum(counts[0].values()),
        "alerts_by_rule": dict(sorted(counts[0].items())),
    }


def stream(
    tmp: Path,
    frame: pl.DataFrame,
    env: dict[str, str],
    catalogue_envs: dict[str, dict[str, str]],
    rounds: int,
) -> dict[str, Any]:
    readings = frame.height
    with local_brokers(tmp / "brokers") as brokers:
        bootstrap = brokers.kafka_brokers
        seconds = prefill(bootstrap, "bench.telemetry", frame)
        print(f"prefilled {readings} readings in {seconds:.1f}s", flush=True)
        base = {
            **env,
            "FLEET_KAFKA_BROKERS": bootstrap,
            "FLEET_TOPIC_TELEMETRY": "bench.telemetry",
            "FLEET_KAFKA_TAIL": "false",
            "FLEET_TOPIC_PARTITIONS": str(PARTITIONS),
        }
        contenders = [
            Contender("plain loop", "benchmarks.plain_alerts", base, runner=None),
            Contender("alerts flow, built-in", "dataflows.alerts", base),
            *(
                Contender(f"alerts flow, {name}", "dataflows.alerts", {**base, **extra})
                for name, extra in catalogue_envs.items()
            ),
        ]
        runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in contenders}
        for round_ in range(rounds):
            for index, contender in enumerate(contenders):
                name = f"{round_}.{index}"
                run_env = {
                    **contender.env,
                    "FLEET_TOPIC_ALERTS": f"bench.alerts.{name}",
                    "FLEET_TOPIC_LATE": f"bench.late.{name}",
                    "FLEET_TOPIC_DLQ": f"bench.dlq.{name}",
                }
                log = tmp / f"stream-{name}.log"
                flow = FlowProcess(contender.module, run_env, log, runner=contender.runner)
                seconds = timed([flow])
                alerts = alerts_by_rule_on_topic(bootstrap, f"bench.alerts.{name}")
                runs[contender.label].append({"seconds": seconds, "alerts_by_rule": alerts})
                rate = readings / seconds
                print(
                    f"stream {contender.label:36s} {seconds:6.2f}s {rate:8.0f}/s "
                    f"{sum(alerts.values())} alerts",
                    flush=True,
                )
    results = {label: _best(found, readings) for label, found in runs.items()}
    plain, builtin = results["plain loop"], results["alerts flow, built-in"]
    if plain["alerts_by_rule"] != builtin["alerts_by_rule"]:
        raise RuntimeError(
            "the built-in alerts flow and the plain loop disagree: "
            f"{builtin['alerts_by_rule']} vs {plain['alerts_by_rule']}"
        )
    return results


def backfill(
    tmp: Path,
    frame: pl.DataFrame,
    env: dict[str, str],
    catalogue_envs: dict[str, dict[str, str]],
    rounds: int,
) -> dict[str, Any]:
    rows = frame.height
    lake = tmp / "lake"
    started = time.monotonic()
    build_lake(lake, frame)
    print(f"lake of {rows} rows in {time.monotonic() - started:.1f}s", flush=True)
    base = {**env, "FLEET_BACKFILL_INPUT": str(lake)}
    contenders = [
        Contender("backfill, built-in", "dataflows.backfill", base),
        *(
            Contender(f"backfill, {name}", "dataflows.backfill", {**base, **extra})
            for name, extra in catalogue_envs.items()
        ),
    ]
    runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in contenders}
    for round_ in range(rounds):
        for index, contender in enumerate(contenders):
            name = f"{round_}.{index}"
            out = tmp / f"alerts-{name}.jsonl"
            flow = FlowProcess(
                contender.module,
                {**contender.env, "FLEET_ALERTS_OUT": str(out)},
                tmp / f"backfill-{name}.log",
            )
            seconds = timed([flow], timeout_s=3600)
            alerts = alerts_by_rule_in_file(out)
            runs[contender.label].append({"seconds": seconds, "alerts_by_rule": alerts})
            print(
                f"backfill {contender.label:34s} {seconds:6.2f}s {rows / seconds:8.0f} rows/s "
                f"{sum(alerts.values())} alerts",
                flush=True,
            )
    return {label: _best(found, rows) for label, found in runs.items()}


TEN, POSTED = "10-rule catalogue", "posted-limit catalogue"


def check_posted(results: dict[str, Any], flow: str) -> None:
    """The posted-limit catalogue's tiers gave alerts, and its ten rules gave the 10-rule
    catalogue's (the roads change no other rule)."""
    ten = results[f"{flow}, {TEN}"]["alerts_by_rule"]
    posted = results[f"{flow}, {POSTED}"]["alerts_by_rule"]
    tiers = {rule: posted.get(rule, 0) for rule in POSTED_RULE_IDS}
    if sum(tiers.values()) == 0:
        raise RuntimeError(f"{flow}: the posted-limit tiers gave no alert")
    others = {rule: count for rule, count in posted.items() if rule not in POSTED_RULE_IDS}
    if others != ten:
        raise RuntimeError(f"{flow}: the ten rules disagree with roads on: {others} vs {ten}")


def _ratio(rows: dict[str, Any], label: str, baseline: str) -> float:
    rate: float = rows[label]["per_s"] / rows[baseline]["per_s"]
    return round(rate, 3)


def run(readings: int, rows: int, trucks: int, rounds: int) -> dict[str, Any]:
    started = time.monotonic()
    frame = fleet_readings(max(readings, rows), trucks)
    print(f"fleet of {frame.height} readings in {time.monotonic() - started:.1f}s", flush=True)
    steps = readings // trucks
    # Version 2 from the middle of the stream's readings (most of the backfill's are later).
    second_version_ms = START_MS + steps // 2 * INTERVAL_MS
    results: dict[str, Any] = {
        "readings": readings,
        "rows": rows,
        "trucks": trucks,
        "rounds": rounds,
        "second_version_from": format_rfc3339_ms(second_version_ms),
        "road_loops": ROAD_LOOPS,
        "load_before": other_load(),
    }
    with tempfile.TemporaryDirectory(prefix="fleetwatch-catalogue-") as name:
        tmp = Path(name)
        history = tmp / "history"
        write_history(HistoryShape(trucks=trucks, start=date(2026, 11, 20), days=11), history)
        rules, zones = write_catalogue(tmp / "catalogue", second_version_ms)
        posted_rules, _ = write_catalogue(tmp / "posted", second_version_ms, posted_limits=True)
        # The roads cache, built once here: every posted-limit run starts from it.
        roads_cache = tmp / "roads-cache"
        index = load_road_index(default_extract(), roads_cache)
        results["roads"] = {"extract": default_extract().name, "ways": len(index.ways)}
        results["positions"] = position_shares(frame[:readings], roads_cache)
        print(f"positions of the stream's readings: {results['positions']}", flush=True)
        env = {"FLEET_HISTORY_DIR": str(history)}
        catalogue_envs = {
            TEN: {"FLEET_RULES": str(rules), "FLEET_ZONES": str(zones), "FLEET_ROADS": "none"},
            POSTED: {
                "FLEET_RULES": str(posted_rules),
                "FLEET_ZONES": str(zones),
                "FLEET_ROADS_CACHE": str(roads_cache),
            },
        }
        results["stream"] = stream(tmp, frame[:readings], env, catalogue_envs, rounds)
        check_posted(results["stream"], "alerts flow")
        results["backfill"] = backfill(tmp, frame[:rows], env, catalogue_envs, rounds)
        check_posted(results["backfill"], "backfill")
    results["load_after"] = other_load()
    stream_, backfill_ = results["stream"], results["backfill"]
    results["ratios"] = {
        "stream_builtin_over_plain": _ratio(stream_, "alerts flow, built-in", "plain loop"),
        "stream_catalogue_over_builtin": _ratio(
            stream_, f"alerts flow, {TEN}", "alerts flow, built-in"
        ),
        "stream_posted_over_catalogue": _ratio(
            stream_, f"alerts flow, {POSTED}", f"alerts flow, {TEN}"
        ),
        "backfill_catalogue_over_builtin": _ratio(
            backfill_, f"backfill, {TEN}", "backfill, built-in"
        ),
        "backfill_posted_over_catalogue": _ratio(
            backfill_, f"backfill, {POSTED}", f"backfill, {TEN}"
        ),
    }
    for name, value in results["ratios"].items():
        print(f"ratio {name}: {value:.2f}")
    silent = [
        rule
        for rule in (*RULE_IDS, *POSTED_RULE_IDS)
        for where, label in (
            (stream_, f"alerts flow, {POSTED}"),
            (backfill_, f"backfill, {POSTED}"),
        )
        if rule not in where[label]["alerts_by_rule"]
    ]
    if silent:
        print(f"note: rules that gave no alert in a run: {sorted(set(silent))}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.catalogue", description=__doc__)
    parser.add_argument("--readings", type=int, help="stream readings (default 300,000)")
    parser.add_argument("--rows", type=int, help="backfill rows (default 2,000,000)")
    parser.add_argument("--trucks", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="60,000 readings, 300,000 rows")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    readings = args.readings or (60_000 if args.quick else 300_000)
    rows = args.rows or (300_000 if args.quick else 2_000_000)
    from benchmarks.__main__ import standalone  # not at the top: benchmarks.__main__ imports this

    return standalone(
        "catalogue",
        args.quick,
        args.out,
        lambda: run(readings, rows, args.trucks, args.rounds),
        report.catalogue_markdown,
    )


if __name__ == "__main__":
    main()
