"""``posted_limit_over`` (CONTRACT.md section 10) at its boundaries, through the product's
whole path: readings are matched to a small road network by ``PostedLimits.attach`` (the
flows' code), then judged by ``domain.rules.judge`` and ``TruckState.ingest``. Every row is
also checked against the independent reference (tests/reference.py), which gets only the
raw tags of each reading's matched way and parses the limits itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.road_limits import PostedLimits
from connectors.roads import RoadIndex, RoadWay
from domain.readings import Reading
from domain.rules import RuleConfig, TruckState
from domain.speed_limits import RoadLimit
from tests.catalogues import (
    MS,
    alert_of,
    at,
    key_of,
    make_book,
    product_alerts,
    product_keys,
    reading,
    road_table,
    rule,
    sorted_unique,
    version,
)
from tests.reference import (
    CatalogueAlertKey,
    reference_catalogue_alerts,
    reference_catalogue_details,
)

# Parallel east-west ways ~220 m apart (0.002 degrees of latitude), 0.01 degrees (~550 m)
# long, in Helsinki. ``ON[name]`` is a position on that way.
LON0, LON1 = 24.930, 24.940
WAYS = {
    "mannerheimintie": (RoadWay.of(101, "Mannerheimintie", "50", "40"), 60.170),
    "bulevardi": (RoadWay.of(102, "Bulevardi", "30"), 60.172),
    "unposted": (RoadWay.of(103, None, None), 60.174),
    "old_road": (RoadWay.of(104, "Old Road", "30 mph"), 60.176),
    "rural": (RoadWay.of(105, "Rural Road", "FI:rural"), 60.178),
    "signals": (RoadWay.of(106, "Signal Street", "signals"), 60.180),
}
INDEX = RoadIndex.from_ways([(way, [[(lat, LON0), (lat, LON1)]]) for way, lat in WAYS.values()])
ON = {name: (lat, (LON0 + LON1) / 2) for name, (_, lat) in WAYS.items()}
FAR = (60.171, 24.935)  # ~110 m from the two nearest ways
CLASSES = {"H": "heavy", "M": "medium", "L": "light"}
MPH_30 = 30 * 1.609344


def r(
    event_id: str,
    seconds: float,
    speed: float,
    where: str | tuple[float, float] | None = "mannerheimintie",
    truck: str = "M",
) -> Reading:
    """A reading ``seconds`` after T0 on the named way (or at a position, or without one)."""
    lat, lon = ON[where] if isinstance(where, str) else where if where else (None, None)
    return reading(event_id, at(seconds), speed, truck, lat, lon)


def posted(rule_id: str = "r", **fields: Any) -> dict[str, Any]:
    return rule("posted_limit_over", rule_id, **{"cooldown_s": 60, **fields})


def fired(*event_ids: str, rule_id: str = "r", truck: str = "M", severity: str = "warning") -> Any:
    return (rule_id, 1, truck, tuple(event_ids), severity)


def with_limits(readings: list[Reading]) -> list[Reading]:
    """The readings as the flows hand them to the rules: one bulk match, limits attached."""
    attached = list(readings)
    PostedLimits(INDEX, 20.0).attach([attached], CLASSES)
    return attached


@dataclass
class Case:
    rules: list[dict[str, Any]]
    readings: list[Reading]
    expected: set[CatalogueAlertKey] = field(default_factory=set)


def check(case: Case) -> None:
    texts = [version(*case.rules)]
    book = make_book(texts, None, CLASSES)
    readings = with_limits(case.readings)
    assert product_keys(readings, book) == case.expected, "product (judge)"
    ingested: set[CatalogueAlertKey] = set()
    for ordered in sorted_unique(readings).values():
        state = TruckState()
        detections = state.ingest(ordered, RuleConfig(), book=book).detections
        detections += state.evaluate_released(RuleConfig(), flush=True, book=book)
        ingested |= {key_of(alert_of(d)) for d in detections}
    assert ingested == case.expected, "product (TruckState)"
    reference = reference_catalogue_alerts(
        case.readings, texts, None, CLASSES, road_table(INDEX, case.readings)
    )
    assert reference == case.expected, "reference"


CASES: dict[str, Case] = {
    # The margin: max(over_kmh, limit * over_pct / 100), "over" strictly.
    "limit + over_kmh exactly: not over": Case([posted(over_kmh=9)], [r("a", 0, 59)]),
    "just over limit + over_kmh: fires at once": Case(
        [posted(over_kmh=9)], [r("a", 0, 59.001)], {fired("a")}
    ),
    "no margin: the limit itself is not over": Case([posted()], [r("a", 0, 50)]),
    "no margin: just over the limit fires": Case([posted()], [r("a", 0, 50.001)], {fired("a")}),
    "over_pct the larger margin: 20 % of 50 is 10, not 5": Case(
        [posted(over_kmh=5, over_pct=20)], [r("a", 0, 60), r("b", 1, 60.01)], {fired("b")}
    ),
    "over_kmh the larger margin: 15, not 20 % of 30": Case(
        [posted(over_kmh=15, over_pct=20)],
        [r("a", 0, 45, "bulevardi"), r("b", 1, 45.01, "bulevardi")],
        {fired("b")},
    ),
    # Whose limit: a heavy truck's maxspeed:hgv where the way has one.
    "heavy truck: the hgv limit (40, not 50)": Case(
        [posted()], [r("a", 0, 45, truck="H")], {fired("a", truck="H")}
    ),
    "medium truck at the same speed: under 50": Case([posted()], [r("a", 0, 45)]),
    "heavy truck on a way without hgv: maxspeed": Case(
        [posted()],
        [r("a", 0, 30, "bulevardi", truck="H"), r("b", 1, 30.5, "bulevardi", truck="H")],
        {fired("b", truck="H")},
    ),
    # Values: mph, country values; no limit at all.
    "30 mph is 48.28032 km/h: at it, not over": Case([posted()], [r("a", 0, MPH_30, "old_road")]),
    "just over 30 mph": Case([posted()], [r("a", 0, 48.3, "old_road")], {fired("a")}),
    "FI:rural is 80": Case(
        [posted()], [r("a", 0, 80, "rural"), r("b", 1, 80.5, "rural")], {fired("b")}
    ),
    "a way without maxspeed: never over": Case([posted()], [r("a", 0, 300, "unposted")]),
    "maxspeed=signals is no limit": Case([posted()], [r("a", 0, 300, "signals")]),
    "no road within 20 m: never over": Case([posted()], [r("a", 0, 300, FAR)]),
    "no position: never over": Case([posted()], [r("a", 0, 300, None)]),
    # Runs as duration_over's.
    "for_s reached exactly": Case(
        [posted(for_s=60)], [r("a", 0, 60), r("b", 30, 60), r("c", 60, 60)], {fired("a", "b", "c")}
    ),
    "for_s missed by 1 ms": Case(
        [posted(for_s=60)], [r("a", 0, 60), r("b", 30, 60), r("c", 60 - MS / 1000, 60)]
    ),
    "a run goes on across a change of road, each by its own limit": Case(
        [posted(for_s=60)],
        [r("a", 0, 55), r("b", 30, 35, "bulevardi"), r("c", 60, 55)],
        {fired("a", "b", "c")},
    ),
    "a reading at its own limit ends the run": Case(
        [posted(for_s=60)],
        [r("a", 0, 55), r("b", 30, 30, "bulevardi"), r("c", 60, 55), r("d", 90, 55)],
    ),
    "a reading without a position ends the run": Case(
        [posted(for_s=60)],
        [r("a", 0, 55), r("b", 30, 55), r("c", 40, 99, None), r("d", 50, 55), r("e", 75, 55)],
    ),
    "the same run without that reading fires": Case(
        [posted(for_s=60)],
        [r("a", 0, 55), r("b", 30, 55), r("d", 50, 55), r("e", 75, 55)],
        {fired("a", "b", "d", "e")},
    ),
    "a reading off the roads ends the run": Case(
        [posted(for_s=60)],
        [r("a", 0, 55), r("b", 30, 55), r("c", 40, 99, FAR), r("d", 50, 55), r("e", 75, 55)],
    ),
    "a gap over max_gap_s ends the run": Case(
        [posted(for_s=60, max_gap_s=10)],
        [r("a", 0, 55), r("b", 10, 55), r("c", 20 + MS / 1000, 55), r("d", 70, 55)],
    ),
    "a gap of exactly max_gap_s keeps it": Case(
        [posted(for_s=20, max_gap_s=10)],
        [r("a", 0, 55), r("b", 10, 55), r("c", 20, 55)],
        {fired("a", "b", "c")},
    ),
    # Cooldown as for every kind: inclusive end, counting restarts empty.
    "within the cooldown: not counted": Case(
        [posted()], [r("a", 0, 55), r("b", 59.999, 55)], {fired("a")}
    ),
    "at the cooldown's end: fires again": Case(
        [posted()], [r("a", 0, 55), r("b", 60, 55)], {fired("a"), fired("b")}
    ),
    "severity critical": Case(
        [posted(severity="critical")], [r("a", 0, 55)], {fired("a", severity="critical")}
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_posted_limit_over_at_its_boundaries(case: Case) -> None:
    check(case)


def test_the_alert_carries_the_limit_and_the_road_of_the_firing_reading() -> None:
    """threshold_kmh is the limit at the reading that fired; details name its road."""
    texts = [version(posted(for_s=30))]
    raw = [r("a", 0, 55), r("b", 30, 48, "bulevardi", truck="M")]
    (alert,) = product_alerts(with_limits(raw), make_book(texts, None, CLASSES))
    assert alert.threshold_kmh == 30.0
    assert alert.max_speed_kmh == 55.0
    assert alert.details == {
        "kind": "posted_limit_over",
        "posted_limit_kmh": 30.0,
        "road_name": "Bulevardi",
        "osm_way_id": 102,
        "limit_source": "maxspeed",
        "duration_s": 30.0,
        "for_s": 30.0,
    }
    [expected] = reference_catalogue_details(
        raw, texts, None, CLASSES, road_table(INDEX, raw)
    ).values()
    assert expected == {k: alert.details[k] for k in expected}


@pytest.mark.parametrize(
    ("truck", "where", "limit"),
    [
        ("H", "mannerheimintie", RoadLimit(40.0, "hgv", 101, "Mannerheimintie")),
        ("L", "mannerheimintie", RoadLimit(50.0, "maxspeed", 101, "Mannerheimintie")),
        ("unlisted", "mannerheimintie", RoadLimit(50.0, "maxspeed", 101, "Mannerheimintie")),
        ("H", "rural", RoadLimit(80.0, "implicit", 105, "Rural Road")),
        ("H", "unposted", None),
        ("H", FAR, None),
        ("H", None, None),
    ],
)
def test_attach_gives_each_reading_its_trucks_limit(
    truck: str, where: str | tuple[float, float] | None, limit: RoadLimit | None
) -> None:
    (attached,) = with_limits([r("a", 0, 50, where, truck)])
    assert attached.posted_limit == limit
    assert attached.event_id == "a"


def test_attach_matches_a_batch_in_one_query_and_shares_limit_objects() -> None:
    """One bulk query for all the lists it is given, and one object per way and class."""
    calls: list[int] = []

    class Counting(RoadIndex):
        def match(self, lats: Any, lons: Any, max_m: float = 20.0) -> Any:
            calls.append(len(lats))
            return super().match(lats, lons, max_m)

    index = Counting.from_ways([(way, [[(lat, LON0), (lat, LON1)]]) for way, lat in WAYS.values()])
    first = [r(f"a{i}", i, 50) for i in range(50)]
    second = [r(f"b{i}", i, 50, None) for i in range(10)] + [r("c", 0, 50, "bulevardi")]
    PostedLimits(index, 20.0).attach([first, second], CLASSES)
    assert calls == [51]  # the 51 positioned readings, once
    assert len({id(x.posted_limit) for x in first}) == 1
    assert second[-1].posted_limit is not None
    assert second[-1].posted_limit.osm_way_id == 102
