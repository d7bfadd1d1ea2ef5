"""Posted limits end to end (CONTRACT.md section 10): ``python -m bytewax.run
dataflows.alerts`` on real brokers, with FLEET_RULES holding a ``posted_limit_over`` rule and
FLEET_ROADS a small extract written here. Readings on a 30 km/h street (20 for heavy
trucks) fire with the street's limit and name; the same speeds off the roads, or without a
position, do not. A second start loads the index from FLEET_ROADS_CACHE; a missing extract
stops the flow with one line that names FLEET_ROADS."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from devtools.launcher import FlowProcess
from domain.readings import Reading, encode_canonical
from domain.timestamps import format_rfc3339_ms, to_epoch_ms
from tests.integration.flows import Namespace, consume_until, produce
from tests.unit.test_roads import write_extract

T0 = to_epoch_ms((datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0))
S = 1_000
HEAVY, MEDIUM = "T00000", "T00001"  # vehicle classes in the sample history's trucks.parquet
STREET_LAT = 60.17  # Testikatu runs east-west along it, 24.93-24.94
ON_STREET = (STREET_LAT, 24.935)
OFF_ROADS = (60.171, 24.935)  # ~110 m north of it


def extract(path: Path) -> Path:
    nodes = {1: (STREET_LAT, 24.93), 2: (STREET_LAT, 24.94)}
    tags = {"highway": "residential", "name": "Testikatu", "maxspeed": "30", "maxspeed:hgv": "20"}
    return write_extract(path, nodes, [(501, [1, 2], tags)])


def catalogue(directory: Path) -> Path:
    directory.mkdir()
    rule = {"id": "posted", "kind": "posted_limit_over", "over_kmh": 5, "cooldown_s": 0}
    document = {"version": 1, "effective_from": format_rfc3339_ms(T0 - 86_400_000)}
    text = yaml.safe_dump({**document, "rules": [rule]}, sort_keys=False)
    (directory / "0001.yaml").write_text(text)
    return directory


def reading(event_id: str, truck: str, s: float, speed: float, where: Any) -> tuple[bytes, bytes]:
    lat, lon = where if where is not None else (None, None)
    value = encode_canonical(Reading(event_id, truck, T0 + round(s * S), speed, lat, lon))
    return truck.encode(), value


def test_posted_limits_in_the_running_alerts_flow(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "roads-cache"
    env = namespace.env(
        FLEET_RULES=str(catalogue(tmp_path / "rules")),
        FLEET_ROADS=str(extract(tmp_path / "street.osm.pbf")),
        FLEET_ROADS_CACHE=str(cache),
        FLEET_ALLOWED_LATENESS_S="1",
    )
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [
            reading("h1", HEAVY, 0, 25.5, ON_STREET),  # over 20 + 5: heavy's hgv limit
            reading("m1", MEDIUM, 0, 25.5, ON_STREET),  # not over 30 + 5
            reading("m2", MEDIUM, 1, 35.5, ON_STREET),  # over 30 + 5
            reading("m3", MEDIUM, 2, 90.0, OFF_ROADS),  # no road within 20 m
            reading("m4", MEDIUM, 3, 90.0, None),  # no position
        ],
    )
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    try:
        flow.wait_for_event("roads_loaded", timeout_s=30)
        records = consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("alerts"),
            lambda found: len(found) >= 2,
            timeout_s=30,
            settle_s=2.0,
        )
    finally:
        flow.stop()
    alerts = {a["truck_id"]: a for a in (r.json() for r in records)}
    assert sorted(alerts) == [HEAVY, MEDIUM], [r.json() for r in records]
    heavy, medium = alerts[HEAVY], alerts[MEDIUM]
    assert (heavy["event_ids"], heavy["threshold_kmh"]) == (["h1"], 20.0)
    assert heavy["details"] == {
        "kind": "posted_limit_over",
        "posted_limit_kmh": 20.0,
        "road_name": "Testikatu",
        "osm_way_id": 501,
        "limit_source": "hgv",
        "duration_s": 0.0,
        "for_s": 0.0,
    }
    assert (medium["event_ids"], medium["threshold_kmh"]) == (["m2"], 30.0)
    assert medium["details"]["limit_source"] == "maxspeed"
    assert list(cache.glob("*.npz")), "the built index is cached"

    # The next start reads the cache instead of the extract.
    again = FlowProcess("dataflows.alerts", env, logs / "alerts-again.log").start()
    try:
        again.wait_for_event("roads_cache_loaded", timeout_s=30)
    finally:
        again.stop()


def test_a_missing_extract_stops_the_flow_naming_fleet_roads(
    namespace: Namespace, tmp_path: Path
) -> None:
    env = namespace.env(
        FLEET_RULES=str(catalogue(tmp_path / "rules")),
        FLEET_ROADS=str(tmp_path / "nowhere.osm.pbf"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.alerts"],
        env={**os.environ, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "FLEET_ROADS" in done.stderr, done.stderr
    assert "nowhere.osm.pbf" in done.stderr, done.stderr
