"""The sample catalogue (catalogue/): it loads strictly, its version 1 is the built-in rules,
its newest version shows every kind this release has, and its yard is where the demo's
trucks drive (docs/rules.md)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.catalogue import catalogue_files, load_catalogue, load_zones
from devtools.demo import demo_fleet
from devtools.simulator import FleetConfig, FleetSimulator
from domain.alerts import build_alert, encode_alert
from domain.catalogue import (
    KINDS,
    Catalogue,
    CatalogueError,
    CatalogueVersion,
    Detection,
    RuleBook,
    VersionInForce,
    parse_version,
)
from domain.readings import Reading
from domain.rules import RuleConfig, TruckState, builtin_book
from domain.timestamps import to_epoch_ms
from tests.kube import ROOT

CATALOGUE = ROOT / "catalogue"
RULES = CATALOGUE / "rules"
ZONES = CATALOGUE / "zones.geojson"
YARD = "South Harbour yard"
G = 9.80665  # m/s² per g
# Version 2 of the sample applies from here on.
DECEMBER = to_epoch_ms(datetime(2026, 12, 1, tzinfo=UTC))


def sample() -> Catalogue:
    return load_catalogue(RULES, ZONES)


def in_force(catalogue: Catalogue, ts_ms: int) -> VersionInForce:
    version = catalogue.at(ts_ms)
    assert version is not None
    return version


def version_file(number: int) -> Path:
    (path,) = [p for p in catalogue_files(RULES) if p.name.startswith(f"{number:04d}-")]
    return path


def fleet(config: FleetConfig, count: int) -> list[Reading]:
    """The simulator's valid readings in arrival order (resends included: the rules must
    drop them)."""
    return [m.reading for m in FleetSimulator(config).messages(count) if m.reading is not None]


def detections(readings: Iterable[Reading], book: RuleBook) -> list[Detection]:
    """Every detection of ``book`` over the readings, each truck fed in arrival order in
    batches of 7 arrivals, then flushed (the end of a bounded input)."""
    config = RuleConfig()
    by_truck: dict[str, list[Reading]] = defaultdict(list)
    for reading in readings:
        by_truck[reading.truck_id].append(reading)
    found: list[Detection] = []
    for truck in sorted(by_truck):
        state = TruckState()
        arrivals = by_truck[truck]
        for start in range(0, len(arrivals), 7):
            found.extend(state.ingest(arrivals[start : start + 7], config, book).detections)
        found.extend(state.evaluate_released(config, flush=True, book=book))
    return found


def alerts(found: list[Detection]) -> list[dict[str, Any]]:
    """The alerts as JSON objects, detected_at fixed."""
    return [json.loads(encode_alert(build_alert(d, detected_at_ms=0))) for d in found]


def without(documents: list[dict[str, Any]], *fields: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in doc.items() if k not in fields} for doc in documents]


# --- Loading -----------------------------------------------------------------------------


def test_the_sample_directory_loads_strictly_with_the_sample_zones() -> None:
    catalogue = sample()
    assert [(v.version, v.source) for v in catalogue.versions] == [
        (1, "0001-builtin.yaml"),
        (2, version_file(2).name),
        (3, version_file(3).name),
    ]
    assert in_force(catalogue, DECEMBER - 1).version.version == 1
    assert in_force(catalogue, DECEMBER).version.version == 2
    assert in_force(catalogue, DECEMBER + 12 * 3_600_000).version.version == 3
    assert catalogue.at(to_epoch_ms(datetime(2020, 1, 1, tzinfo=UTC)) - 1) is None
    zones = load_zones(ZONES)
    for path in catalogue_files(RULES):
        parse_version(path.read_bytes(), path.name, zones)
    assert (CATALOGUE / "kustomization.yaml").is_file()  # and k8s/ ships exactly these files


def test_the_zone_rule_needs_the_sample_zones() -> None:
    with pytest.raises(CatalogueError) as refused:
        load_catalogue(RULES)
    assert [(p.file, p.rule, p.field) for p in refused.value.problems] == [
        (version_file(number).name, "yard_slow_zone", "zone") for number in (2, 3)
    ]


def test_every_sample_rule_says_in_a_comment_what_it_is_for() -> None:
    for path in catalogue_files(RULES):
        lines = path.read_text().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("  - id: ")]
        assert starts, path
        for i in starts:
            assert lines[i - 1].lstrip().startswith("#"), f"{path.name}: {lines[i]} unexplained"


# --- Version 1 is the built-in catalogue -------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_version_1_gives_the_alerts_of_the_built_in_rules(seed: int) -> None:
    """The same alerts, ids included, for a random fleet with resends and disorder; only
    rule_version (1, not 0) and details (the kind, not {}) differ."""
    config = FleetConfig(
        trucks=25,
        seed=seed,
        interval_s=7.0,
        resend_share=0.02,
        disorder_s=6.0,
        episode_chance=0.05,
        spike_chance=0.01,
    )
    readings = fleet(config, 15_000)
    version_1 = RuleBook(Catalogue([parse_version(version_file(1).read_bytes(), "0001")]))
    builtin = alerts(detections(readings, builtin_book(RuleConfig())))
    as_data = alerts(detections(readings, version_1))
    assert {a["rule"] for a in builtin} == {"instant_overspeed", "sustained_speeding"}
    assert len(builtin) > 40
    assert without(as_data, "rule_version", "details") == without(
        builtin, "rule_version", "details"
    )
    assert {a["rule_version"] for a in builtin} == {0}
    assert {a["rule_version"] for a in as_data} == {1}
    assert {a["details"]["kind"] for a in as_data} == {"instant_over", "count_over"}


def test_before_version_2_the_sample_catalogue_is_the_built_in_rules() -> None:
    """Readings before version 2's effective_from: version 1 judges them, whatever else the
    directory holds."""
    config = FleetConfig(trucks=10, seed=4, start_ms=DECEMBER - 86_400_000, episode_chance=0.05)
    readings = [r for r in fleet(config, 8_000) if r.ts_ms < DECEMBER]
    builtin = alerts(detections(readings, builtin_book(RuleConfig())))
    whole = alerts(detections(readings, RuleBook(sample())))
    assert builtin
    assert without(whole, "rule_version", "details") == without(builtin, "rule_version", "details")


# --- Version 2 ---------------------------------------------------------------------------


def newest() -> CatalogueVersion:
    return sample().versions[-1]


def test_the_newest_version_has_a_rule_of_every_kind() -> None:
    kinds = {rule.definition.kind.name for rule in newest().rules}
    assert set(KINDS) == kinds
    assert "posted_limit_over" in kinds


def test_the_newest_version_scopes_rules_by_vehicle_class_and_by_truck() -> None:
    scopes = {rule.id: rule.definition.scope for rule in newest().rules}
    assert scopes["heavy_truck_speeding"].vehicle_classes == frozenset({"heavy"})
    assert scopes["city_depot_speeding"].trucks == frozenset({"T001*"})
    assert scopes["city_depot_speeding"].matches("T00142", None)
    assert not scopes["city_depot_speeding"].matches("T00042", None)


def test_the_built_in_rules_keep_their_state_across_the_change_to_version_2() -> None:
    catalogue = sample()
    lineages = [
        {rule.id: (lineage, start) for rule, lineage, start in in_force(catalogue, ts).judged}
        for ts in (DECEMBER - 1, DECEMBER)
    ]
    for rule_id in ("instant_overspeed", "sustained_speeding"):
        assert lineages[0][rule_id] == lineages[1][rule_id]


def test_harsh_braking_is_about_0_4_g_and_stricter_rules_are_stricter() -> None:
    documents = {r["id"]: r for r in yaml.safe_load(version_file(2).read_text())["rules"]}
    braking = documents["harsh_braking"]
    g = braking["drop_kmh"] / 3.6 / braking["within_s"] / G
    assert 0.38 <= g <= 0.42
    assert braking["cooldown_s"] >= braking["within_s"]  # one hard stop, one alert
    sustained = documents["sustained_speeding"]["speed_over_kmh"]
    assert documents["heavy_truck_speeding"]["speed_over_kmh"] < sustained
    assert documents["city_depot_speeding"]["speed_over_kmh"] < sustained
    assert documents["yard_slow_zone"]["speed_over_kmh"] <= 30


# --- The yard is where the demo's trucks drive -------------------------------------------


def test_the_yard_is_where_the_demo_trucks_drive() -> None:
    yard = load_zones(ZONES)[YARD]
    # devtools/demo.py's fleet with its defaults (200 trucks, 2,000 messages/s for 60 s),
    # the first 100 s of its drive, an hour into 1 December.
    demo = demo_fleet(200, 2000.0, 60.0, end_ms=DECEMBER + 3_600_000)
    readings = [m.reading for m in demo.messages(20_000) if m.reading is not None]
    inside = [
        r
        for r in readings
        if r.lat is not None and r.lon is not None and yard.contains(r.lat, r.lon)
    ]
    assert inside, "no reading of the demo fleet falls in the sample yard: move it"
    # The yard is a yard, not a region: a few hundred metres across.
    lons, lats = zip(*load_geometry()["coordinates"][0], strict=True)
    metres_north = (max(lats) - min(lats)) * 111_320
    metres_east = (max(lons) - min(lons)) * 111_320 * math.cos(math.radians(min(lats)))
    assert 200 <= metres_north <= 1000
    assert 200 <= metres_east <= 1000
    # And the sample catalogue tells of it once version 2 is in force.
    found = detections(readings, RuleBook(sample()))
    yard_alerts = [a for a in alerts(found) if a["rule"] == "yard_slow_zone"]
    assert yard_alerts
    assert {a["details"]["zone"] for a in yard_alerts} == {YARD}
    assert {a["rule_version"] for a in yard_alerts} == {2}


def load_geometry() -> dict[str, Any]:
    (feature,) = json.loads(ZONES.read_text())["features"]
    assert feature["properties"]["name"] == YARD
    geometry: dict[str, Any] = feature["geometry"]
    return geometry
