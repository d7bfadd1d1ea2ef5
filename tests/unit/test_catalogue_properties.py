"""Random catalogues and random fleets through the real flows, against the reference.

CONTRACT.md section 9: everything section 4 says about order, ties, duplicates, lateness,
bounded input and "exactly the alerts of the same readings sorted, whatever the arrival
order, the number of workers or a restart" holds for every kind, in the stream and the
backfill alike. So, for random catalogues (1-3 versions, rules of every kind, scopes,
rules kept, changed, removed and re-added across versions, zones with a hole) and random
fleets (disorder within the allowed lateness, resends, bad records, positions on zone
boundaries or missing, time steps on the rules' boundaries):

    alerts flow on 1 worker == on 2 workers == sorted reference == backfill

alert for alert: (rule, rule_version, truck_id, event_ids, severity), deceleration details
within 1e-3 and posted-limit details exactly. posted_limit_over rules judge readings matched
to a small road network (ways along some of the grid's lines, with km/h, mph, hgv and no
limits) by the flows' own bulk matching; the reference gets the raw tags of each matched way.
And a run aborted mid-stream and resumed from its snapshots with a catalogue that gained a
version after the abort point gives the alerts of an uninterrupted run with that catalogue
(repeats allowed)."""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml  # type: ignore[import-untyped]  # no stubs needed: safe_load gives Any
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, cluster_main, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.jsonl_sink import JsonlSink
from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.parquet_input import ParquetReadingsSource, resolve_inputs
from connectors.road_limits import PostedLimits
from connectors.roads import RoadIndex, RoadWay
from dataflows import alerts as alerts_flow
from dataflows import backfill as backfill_flow
from domain.catalogue import RuleBook
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from domain.timestamps import from_epoch_ms
from runtime.progress import Progress
from runtime.settings import Topics
from tests.catalogues import (
    T0,
    alert_document_key,
    feature,
    feature_collection,
    key_of,
    make_book,
    polygon,
    product_alerts,
    rectangle,
    road_table,
    rule,
    version,
)
from tests.reference import CatalogueAlertKey, reference_catalogue_details

TOPICS = Topics(telemetry="telemetry", alerts="alerts", dlq="dlq", late="late")
CONFIG = RuleConfig()  # ALLOWED_LATENESS 10 s
LATENESS = CONFIG.allowed_lateness_ms

# Zones: two overlapping rectangles and a square with a square hole; every position below
# lies inside, outside, on an edge, on a vertex or in the hole of some of them.
ZONES = feature_collection(
    feature("box1", polygon(rectangle(24.0, 60.0, 24.5, 60.5))),
    feature("box2", polygon(rectangle(24.25, 60.25, 24.75, 60.75))),
    feature(
        "holed",
        polygon(rectangle(25.0, 60.0, 26.0, 61.0), rectangle(25.25, 60.25, 25.75, 60.75)),
    ),
)
ZONE_NAMES = ["box1", "box2", "holed"]
LATS = [59.75, 60.0, 60.125, 60.25, 60.5, 60.625, 60.75, 61.0]
LONS = [23.75, 24.0, 24.25, 24.375, 24.5, 24.75, 25.0, 25.25, 25.5, 25.75, 26.0, 26.25]

# Roads along grid lines (lat, lon): many grid positions lie on one, the rest are far off.
ROAD_WAYS = [
    (RoadWay.of(11, "Eighty Road", "80"), [(60.25, 23.75), (60.25, 24.5)]),
    (RoadWay.of(12, "Mile Street", "50 mph"), [(60.5, 24.25), (60.5, 25.0)]),
    (RoadWay.of(13, "Truck Route", "90", "80"), [(60.0, 25.25), (61.0, 25.25)]),
    (RoadWay.of(14, None, None), [(60.75, 25.5), (60.75, 26.25)]),
    (RoadWay.of(15, "Town Lane", "FI:urban"), [(60.125, 24.0), (60.125, 24.375)]),
]
ROADS = RoadIndex.from_ways([(way, [line]) for way, line in ROAD_WAYS])
LIMITS = PostedLimits(ROADS, 20.0)

TRUCKS = ["T1", "T10", "T2", "T3"]
CLASSES = {"T1": "heavy", "T10": "light", "T2": "heavy"}  # T3 has no class
SCOPES: list[dict[str, list[str]]] = [
    {"trucks": ["T1*"]},
    {"trucks": ["T2", "T3*"]},
    {"vehicle_classes": ["heavy"]},
    {"vehicle_classes": ["light", "medium"]},
    {"trucks": ["T1*"], "vehicle_classes": ["heavy"]},
]

# Thresholds, and speeds on both sides of them (drops of exactly 10 and 20 among them).
SPEEDS_OVER = [80, 90, 100]
SPEEDS = [60.0, 70.0, 79.999, 80.0, 80.001, 90.0, 95.0, 100.0, 100.001, 120.0]
# Time steps in ms: ties, 1 ms, and each side of the rules' 5, 10 and 30 s parameters.
STEPS = [0, 1, 1_000, 4_999, 5_000, 5_001, 10_000, 10_001, 29_999, 30_000, 30_001, 60_000]


# --- Random catalogues ------------------------------------------------------------------------


KINDS = ["instant_over", "count_over", "duration_over", "deceleration", "zone_over"]


def random_rule(rng: random.Random, rule_id: str) -> dict[str, Any]:
    kind = rng.choice([*KINDS, "posted_limit_over"])
    fields: dict[str, Any] = {}
    if kind == "posted_limit_over":
        # Margins that put limit + margin on SPEEDS: 80 + 0, 80 + 10 % = 88, 50 + 30 ...
        for name, choices in (("over_kmh", [0, 10, 30]), ("over_pct", [0, 10, 25])):
            if rng.random() < 0.6:
                fields[name] = rng.choice(choices)
        if rng.random() < 0.6:
            fields["for_s"] = rng.choice([0, 5, 10, 30])
        if rng.random() < 0.4:
            fields["max_gap_s"] = rng.choice([5, 10, 30])
    elif kind != "deceleration":
        fields["speed_over_kmh"] = rng.choice(SPEEDS_OVER)
    if kind == "count_over":
        fields["count"] = rng.randint(1, 3)
        fields["within_s"] = rng.choice([0, 5, 10, 30])
    elif kind == "duration_over":
        fields["for_s"] = rng.choice([0, 5, 10, 30])
        if rng.random() < 0.7:
            fields["max_gap_s"] = rng.choice([5, 10, 30])
    elif kind == "deceleration":
        fields["drop_kmh"] = rng.choice([10, 20])
        fields["within_s"] = rng.choice([1, 5, 10])
    elif kind == "zone_over":
        fields["zone"] = rng.choice(ZONE_NAMES)
    if rng.random() < 0.8:
        fields["cooldown_s"] = rng.choice([0, 0, 5, 30, 600])
    if rng.random() < 0.4:
        fields["severity"] = rng.choice(["warning", "critical"])
    if rng.random() < 0.3:
        fields["scope"] = rng.choice(SCOPES)
    return rule(kind, rule_id, **fields)


def changed(rng: random.Random, previous: dict[str, Any]) -> dict[str, Any]:
    """The same rule with one parameter (not severity) changed, or its scope."""
    out = dict(previous)
    name = rng.choice([k for k in out if k not in ("id", "kind", "severity")])
    if name == "scope":
        out["scope"] = rng.choice([s for s in SCOPES if s != out["scope"]])
    elif name == "zone":
        out["zone"] = rng.choice([z for z in ZONE_NAMES if z != out["zone"]])
    elif name == "count":
        out["count"] = out["count"] % 3 + 1
    elif name == "over_pct":
        out["over_pct"] = out["over_pct"] + 5
    else:
        out[name] = out[name] + 1
    return out


def random_catalogue(rng: random.Random, starts: Sequence[int]) -> list[str]:
    """One YAML text per start (epoch ms, distinct); later versions keep, re-severity,
    change, remove and re-add the rules of the one before."""
    pool = ["a", "b", "c", "d", "e", "f"]
    numbers = rng.sample(range(1, 50), len(starts))
    texts: list[str] = []
    current: dict[str, dict[str, Any]] = {}
    removed: dict[str, dict[str, Any]] = {}
    for index, (number, start) in enumerate(zip(numbers, starts, strict=True)):
        if index == 0:
            ids = rng.sample(pool, rng.randint(1, 5))
            current = {i: random_rule(rng, i) for i in ids}
        else:
            following: dict[str, dict[str, Any]] = {}
            for rule_id, previous in current.items():
                fate = rng.random()
                if fate < 0.4:
                    following[rule_id] = previous
                elif fate < 0.55:
                    severity = "critical" if previous.get("severity") != "critical" else "warning"
                    following[rule_id] = {**previous, "severity": severity}
                elif fate < 0.75:
                    following[rule_id] = changed(rng, previous)
                else:
                    removed[rule_id] = previous
            for rule_id, previous in list(removed.items()):
                if rule_id not in following and rng.random() < 0.5:
                    following[rule_id] = previous  # re-added as it was
                    del removed[rule_id]
            free = [i for i in pool if i not in following and i not in removed]
            if free and (not following or rng.random() < 0.4):
                new_id = rng.choice(free)
                following[new_id] = random_rule(rng, new_id)
            current = dict(list(following.items())[:5])
        texts.append(version(*current.values(), number=number, effective_from=start))
    return texts


# --- Random fleets ----------------------------------------------------------------------------


@dataclass
class Scenario:
    readings: list[Reading]  # every reading once
    arrivals: list[Reading]  # in arrival order, with resends
    arrival_ms: list[int]  # when each arrival reached Kafka
    bad_after: list[int]  # a bad record goes in after these arrival positions
    texts: list[str]

    def book(self) -> RuleBook:
        return make_book(self.texts, ZONES, CLASSES)

    def expected(self) -> dict[CatalogueAlertKey, dict[str, Any]]:
        return reference_catalogue_details(
            self.readings, self.texts, ZONES, CLASSES, road_table(ROADS, self.readings)
        )


def random_position(rng: random.Random) -> tuple[float | None, float | None]:
    roll = rng.random()
    if roll < 0.15:
        return None, None
    if roll < 0.2:
        return rng.choice(LATS), None  # half a position is none
    if roll < 0.3:
        return rng.uniform(59.5, 61.5), rng.uniform(23.5, 26.5)
    return rng.choice(LATS), rng.choice(LONS)


def random_fleet(rng: random.Random, trucks: int, per_truck: int) -> list[Reading]:
    readings: list[Reading] = []
    for truck in rng.sample(TRUCKS, trucks):
        ts = T0 + rng.randint(0, 20_000)
        for n in range(per_truck):
            ts += rng.choice(STEPS)
            lat, lon = random_position(rng)
            event_id = f"e{n:03d}{rng.choice('ab')}"  # ties go by event_id, not by n
            readings.append(Reading(event_id, truck, ts, rng.choice(SPEEDS), lat, lon))
    return readings


def version_starts(rng: random.Random, readings: list[Reading], count: int) -> list[int]:
    """Distinct effective_from instants inside the fleet's span: often exactly a reading's
    ts or 1 ms either side of it."""
    first = min(r.ts_ms for r in readings)
    last = max(r.ts_ms for r in readings)
    starts: set[int] = set()
    if rng.random() < 0.7:
        starts.add(first - rng.choice([0, 1, 5_000]))  # the first version covers (nearly) all
    while len(starts) < count:
        if rng.random() < 0.6:
            starts.add(rng.choice(readings).ts_ms + rng.choice([-1, 0, 0, 1]))
        else:
            starts.add(rng.randint(first, last))
    return sorted(starts)[:count]


def arrival_order(rng: random.Random, readings: list[Reading]) -> tuple[list[Reading], list[int]]:
    """Each reading delayed by at most the lateness (so none is late), some resent later
    (a resend may be late: it goes to the late topic, and changes nothing)."""
    timed: list[tuple[int, int, Reading]] = []
    for r in readings:
        arrival = r.ts_ms + rng.randint(0, LATENESS)
        timed.append((arrival, len(timed), r))
        if rng.random() < 0.15:
            timed.append((arrival + rng.randint(0, 3 * LATENESS), len(timed), r))
    timed.sort()
    return [r for _, _, r in timed], [a for a, _, _ in timed]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    trucks = draw(st.integers(2, 4))
    per_truck = draw(st.integers(1, 40))
    versions = draw(st.integers(1, 3))
    readings = random_fleet(rng, trucks, per_truck)
    texts = random_catalogue(rng, version_starts(rng, readings, versions))
    arrivals, arrival_ms = arrival_order(rng, readings)
    bad_after = sorted(rng.sample(range(len(arrivals)), min(3, len(arrivals))))
    return Scenario(readings, arrivals, arrival_ms, bad_after, texts)


# --- Running the flows ------------------------------------------------------------------------

BAD_RECORDS = [b"{broken", b"", b'{"event_id": "x"']


def fetches(scenario: Scenario, seed: int) -> list[Fetch]:
    """Kafka fetches of 1-4 records each (timestamps: when each reached Kafka), with the
    bad records (invalid JSON) in between."""
    rng = random.Random(seed)
    out: list[Fetch] = []
    values: list[bytes] = []
    stamps: list[int] = []
    bad = list(scenario.bad_after)
    for position, (r, arrived) in enumerate(
        zip(scenario.arrivals, scenario.arrival_ms, strict=True)
    ):
        values.append(encode_canonical(r))
        stamps.append(arrived)
        while bad and bad[0] == position:
            bad.pop(0)
            values.append(BAD_RECORDS[len(bad) % len(BAD_RECORDS)])
            stamps.append(arrived)
        if len(values) >= rng.randint(1, 4):
            out.append(Fetch(0, 0, len(values) - 1, values, stamps))
            values, stamps = [], []
    if values:
        out.append(Fetch(0, 0, len(values) - 1, values, stamps))
    return out


def stream(
    items: Sequence[object], book: RuleBook, workers: int, clock: TimeTestingGetter | None = None
) -> list[OutboundRecord]:
    """dataflows.alerts over ``items`` (a frozen test clock: no truck is ever flushed for
    being quiet, so wall time cannot make a reading late)."""
    clock = clock or TimeTestingGetter(from_epoch_ms(T0))
    out: list[OutboundRecord] = []
    flow = alerts_flow.build_flow(
        TestingSource(items),
        TestingSink(out),
        TOPICS,
        CONFIG,
        clock.get,
        rule_book=lambda: book,
        limits=LIMITS,
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


def documents(records: list[OutboundRecord], topic: str = "alerts") -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.topic == topic]


def lake_frame(readings: list[Reading]) -> pl.DataFrame:
    """Readings with the lake's columns (CONTRACT.md section 8), written with Polars."""
    return pl.DataFrame(
        {
            "event_id": [r.event_id for r in readings],
            "truck_id": [r.truck_id for r in readings],
            "ts": pl.Series([r.ts_ms for r in readings], dtype=pl.Int64).cast(
                pl.Datetime("ms", "UTC")
            ),
            "speed_kmh": [r.speed_kmh for r in readings],
            "lat": pl.Series([r.lat for r in readings], dtype=pl.Float64),
            "lon": pl.Series([r.lon for r in readings], dtype=pl.Float64),
        }
    )


def backfill(readings: list[Reading], book: RuleBook) -> list[dict[str, Any]]:
    """dataflows.backfill over one Parquet file holding ``readings`` (resends included)."""
    with tempfile.TemporaryDirectory() as directory:
        lake = Path(directory) / "lake" / "date=2026-12-01"
        lake.mkdir(parents=True)
        lake_frame(readings).write_parquet(lake / "part-0.parquet")
        out = Path(directory) / "alerts.jsonl"
        progress = Progress(interval_s=3600)
        prefilter = book.catalogue.prefilter  # as dataflows.backfill drops rows: exactly
        source = ParquetReadingsSource(
            resolve_inputs(str(Path(directory) / "lake")),
            prefilter,
            progress=progress,
        )
        flow = backfill_flow.build_flow(
            source,
            JsonlSink(out),
            JsonlSink(backfill_flow.dead_letter_path(out)),
            CONFIG,
            None,
            progress,
            rule_book=book,
            limits=LIMITS,
        )
        run_main(flow)
        dead = backfill_flow.dead_letter_path(out)
        assert not dead.exists() or dead.read_text() == "", "no row is a dead letter"
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def keys(alerts: list[dict[str, Any]]) -> set[CatalogueAlertKey]:
    return {alert_document_key(a) for a in alerts}


def assert_details_agree(
    alerts: list[dict[str, Any]], expected: dict[CatalogueAlertKey, dict[str, Any]]
) -> None:
    for alert in alerts:
        details = alert["details"]
        want = expected[alert_document_key(alert)]
        if details.get("kind") == "deceleration":
            assert math.isclose(details["drop_kmh"], want["drop_kmh"], abs_tol=1e-3), alert
            assert math.isclose(
                details["deceleration_ms2"], want["deceleration_ms2"], abs_tol=1e-3
            ), alert
        elif details.get("kind") == "posted_limit_over":
            assert want == {k: details[k] for k in want}, alert
            assert alert["threshold_kmh"] == want["posted_limit_kmh"], alert
        else:
            assert want == {}


# --- The properties ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(0, 2**16))
def test_stream_on_one_and_two_workers_and_backfill_give_the_sorted_reference(
    scenario: Scenario, batching: int
) -> None:
    book = scenario.book()
    expected = scenario.expected()
    items = fetches(scenario, batching)

    one = stream(items, book, workers=1)
    alerts_one = documents(one)
    assert keys(alerts_one) == set(expected), "1 worker"
    assert len(alerts_one) == len(expected), "no alert twice without a restart"
    assert_details_agree(alerts_one, expected)
    dead = documents(one, "dlq")
    assert [d["reason"] for d in dead] == ["invalid_json"] * len(scenario.bad_after)

    two = documents(stream(items, book, workers=2))
    assert keys(two) == set(expected), "2 workers"
    assert len(two) == len(expected)
    assert_details_agree(two, expected)

    filled = backfill(scenario.arrivals, book)  # resends are duplicates in the lake too
    assert keys(filled) == set(expected), "backfill"
    assert len(filled) == len(expected)
    assert_details_agree(filled, expected)


def test_the_generated_scenarios_exercise_every_kind_and_boundary() -> None:
    """The random catalogues are not vacuous: over a fixed sample (checked with the
    reference, which is fast), every kind fires, under many versions, with both severities."""
    fired_kinds: set[str] = set()
    versions: set[int] = set()
    severities: set[str] = set()
    alerts = 0
    for seed in range(60):
        rng = random.Random(seed)
        readings = random_fleet(rng, 3, 40)
        texts = random_catalogue(rng, version_starts(rng, readings, 3))
        found = reference_catalogue_details(
            readings, texts, ZONES, CLASSES, road_table(ROADS, readings)
        )
        alerts += len(found)
        by_id = {
            (document["version"], r["id"]): r["kind"]
            for document in map(yaml.safe_load, texts)
            for r in document["rules"]
        }
        for rule_id, number, _, _, severity in found:
            fired_kinds.add(by_id[(number, rule_id)])
            versions.add(number)
            severities.add(severity)
    assert fired_kinds == {*KINDS, "posted_limit_over"}
    assert severities == {"warning", "critical"}
    assert len(versions) > 10
    assert alerts > 300


def test_random_catalogues_with_posted_limits_agree_with_the_reference() -> None:
    """The product's judging (readings given their limits by the flows' bulk matching) and
    the reference, over many fixed random fleets and catalogues: cheap enough for far more
    cases than the flows above, so a wrong margin or class shows here first."""
    judged = 0
    for seed in range(200):
        rng = random.Random(seed)
        readings = random_fleet(rng, 3, 40)
        texts = random_catalogue(rng, version_starts(rng, readings, 3))
        expected = reference_catalogue_details(
            readings, texts, ZONES, CLASSES, road_table(ROADS, readings)
        )
        attached = list(readings)
        LIMITS.attach([attached], CLASSES)
        found = {
            key_of(a): a.details for a in product_alerts(attached, make_book(texts, ZONES, CLASSES))
        }
        assert set(found) == set(expected), seed
        for key, details in found.items():
            if details.get("kind") == "posted_limit_over":
                judged += 1
                assert expected[key] == {k: details[k] for k in expected[key]}, seed
    assert judged > 50  # the comparison is not vacuous


# --- Recovery with a changed catalogue --------------------------------------------------------


def recovery_fleet() -> list[Reading]:
    rng = random.Random(11)
    readings: list[Reading] = []
    for n in range(1_800):
        truck = TRUCKS[n % 4]
        ts = T0 + n * 1_000 + rng.choice([0, 0, 1, 250])
        lat, lon = random_position(rng)
        readings.append(Reading(f"e{n:05d}", truck, ts, rng.choice(SPEEDS), lat, lon))
    return readings


BASE_RULES = [
    rule("instant_over", "spike", speed_over_kmh=100, cooldown_s=30),
    rule("count_over", "sustained", speed_over_kmh=90, count=3, within_s=10, cooldown_s=20),
    rule("duration_over", "long", speed_over_kmh=80, for_s=10, max_gap_s=5, cooldown_s=0),
    rule("deceleration", "brake", drop_kmh=20, within_s=5, cooldown_s=0),
    rule("zone_over", "yard", zone="holed", speed_over_kmh=70, cooldown_s=5),
]


def test_resume_with_a_changed_catalogue_gives_the_uninterrupted_alerts(tmp_path: Path) -> None:
    readings = recovery_fleet()
    rng = random.Random(12)
    arrivals, arrival_ms = arrival_order(rng, readings)
    cuts = (500, 1_200)
    # The version added after the first abort applies from well after every reading that
    # arrived before it: it changes a rule, re-severs another, drops one and adds one.
    after_abort = max(r.ts_ms for r in arrivals[: cuts[0]]) + 60_000
    v1 = version(*BASE_RULES, number=1, effective_from=T0)
    v2 = version(
        rule("instant_over", "spike", speed_over_kmh=100, cooldown_s=30, severity="critical"),
        rule("count_over", "sustained", speed_over_kmh=90, count=4, within_s=10, cooldown_s=20),
        BASE_RULES[2],
        BASE_RULES[4],
        rule("count_over", "many", speed_over_kmh=100, count=2, within_s=30, scope=SCOPES[2]),
        number=2,
        effective_from=after_abort,
    )
    before, after = make_book([v1], ZONES, CLASSES), make_book([v1, v2], ZONES, CLASSES)

    items: list[object] = [
        Fetch(0, 0, 0, [encode_canonical(r)], [a])
        for r, a in zip(arrivals, arrival_ms, strict=True)
    ]
    for cut in reversed(cuts):
        items.insert(cut, TestingSource.ABORT())
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    source = TestingSource(items)
    out: list[OutboundRecord] = []
    clock = TimeTestingGetter(from_epoch_ms(T0))
    seen_after_each_run = []
    for book in [before, after, after]:  # aborted, aborted, then to the end
        flow = alerts_flow.build_flow(
            source, TestingSink(out), TOPICS, CONFIG, clock.get, rule_book=lambda b=book: b
        )
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
        seen_after_each_run.append(len(documents(out)))
    assert 0 < seen_after_each_run[0] < seen_after_each_run[1] < seen_after_each_run[2], (
        "the runs were cut short, and the first (with the old catalogue) gave alerts"
    )

    uninterrupted = documents(stream(items_without_aborts(items), after, workers=1))
    expected = reference_catalogue_details(readings, [v1, v2], ZONES, CLASSES)
    assert keys(uninterrupted) == set(expected)
    assert keys(documents(out)) == set(expected), "resumed with the changed catalogue"
    by_version = {alert["rule_version"] for alert in documents(out)}
    assert by_version == {1, 2}, "both versions judged readings"
    assert any(a["rule"] == "many" for a in documents(out)), "the added rule fired"


def items_without_aborts(items: list[object]) -> list[object]:
    return [i for i in items if not isinstance(i, TestingSource.ABORT)]
