"""Each kind of catalogue rule through the product (``domain.rules.judge`` and
``TruckState.ingest`` with a ``RuleBook``), table-driven with named instants on both sides of
every boundary (CONTRACT.md section 9). Every row is checked twice: the product gives the
expected alerts, and so does the independent reference (tests/reference.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from domain.alerts import Alert
from domain.catalogue import CatalogueError
from domain.readings import Reading
from domain.rules import RuleConfig, TruckState, builtin_book
from tests.catalogues import (
    MS,
    T0,
    alert_of,
    at,
    feature,
    feature_collection,
    key_of,
    make_book,
    polygon,
    product_alerts,
    product_keys,
    reading,
    rectangle,
    rule,
    sorted_unique,
    version,
)
from tests.reference import (
    CatalogueAlertKey,
    reference_alerts,
    reference_catalogue_alerts,
    reference_catalogue_details,
)

# depot: a square with a square hole; wedge: a triangle with a slanted edge (lon + lat = 85).
DEPOT = polygon(rectangle(24.0, 60.0, 24.5, 60.5), rectangle(24.125, 60.125, 24.375, 60.375))
WEDGE = polygon([[24.0, 60.0], [25.0, 60.0], [24.0, 61.0], [24.0, 60.0]])
ZONES = feature_collection(feature("depot", DEPOT), feature("wedge", WEDGE))
CLASSES = {"T1": "heavy", "T10": "light", "T2": "heavy", "T3": "medium"}


def r(
    event_id: str,
    seconds: float,
    speed: float,
    truck: str = "T1",
    pos: tuple[float | None, float | None] | None = None,
) -> Reading:
    """A reading ``seconds`` after T0; ``pos`` is (lat, lon)."""
    lat, lon = pos if pos is not None else (None, None)
    return reading(event_id, at(seconds), speed, truck, lat, lon)


def fired(
    *event_ids: str, rule_id: str = "r", v: int = 1, truck: str = "T1", severity: str = "warning"
) -> CatalogueAlertKey:
    return (rule_id, v, truck, tuple(event_ids), severity)


@dataclass
class Case:
    texts: list[str]
    readings: list[Reading]
    expected: set[CatalogueAlertKey] = field(default_factory=set)
    zones: dict[str, Any] | None = None
    classes: dict[str, str] = field(default_factory=dict)


def check(case: Case) -> None:
    """The product (``judge`` one reading at a time, and ``TruckState.ingest`` with a flush)
    and the reference each give exactly the expected alerts."""
    book = make_book(case.texts, case.zones, case.classes)
    assert product_keys(case.readings, book) == case.expected, "product (judge)"
    assert ingested_keys(case.readings, book) == case.expected, "product (TruckState)"
    reference = reference_catalogue_alerts(case.readings, case.texts, case.zones, case.classes)
    assert reference == case.expected, "reference"


def ingested_keys(readings: list[Reading], book: Any) -> set[CatalogueAlertKey]:
    keys: set[CatalogueAlertKey] = set()
    config = RuleConfig()
    for ordered in sorted_unique(readings).values():
        state = TruckState()
        detections = state.ingest(ordered, config, book=book).detections
        detections += state.evaluate_released(config, flush=True, book=book)
        keys |= {key_of(alert_of(d)) for d in detections}
    return keys


def table(cases: dict[str, Case]) -> Any:
    return pytest.mark.parametrize("case", cases.values(), ids=cases.keys())


# --- instant_over -------------------------------------------------------------------------


def instant(**fields: Any) -> str:
    return version(rule("instant_over", **{"speed_over_kmh": 100, "cooldown_s": 60, **fields}))


INSTANT: dict[str, Case] = {
    "at X exactly: not over": Case([instant()], [r("a", 0, 100)]),
    "just over X": Case([instant()], [r("a", 0, 100.001)], {fired("a")}),
    "1 ms before the cooldown ends: not counted": Case(
        [instant()], [r("a", 0, 120), r("b", 60 - 0.001, 120)], {fired("a")}
    ),
    "at window_end + cooldown exactly: counted": Case(
        [instant()], [r("a", 0, 120), r("b", 60, 120)], {fired("a"), fired("b")}
    ),
    "the cooldown defaults to 600 s": Case(
        [version(rule("instant_over", speed_over_kmh=100))],
        [r("a", 0, 120), r("b", 599.999, 120), r("c", 600, 120)],
        {fired("a"), fired("c")},
    ),
    "cooldown_s 0: a tie fires twice": Case(
        [instant(cooldown_s=0)], [r("a", 0, 120), r("b", 0, 120)], {fired("a"), fired("b")}
    ),
    "a slow reading does not end the cooldown": Case(
        [instant()], [r("a", 0, 120), r("b", 30, 50), r("c", 59.999, 120)], {fired("a")}
    ),
    "severity critical": Case(
        [instant(severity="critical")], [r("a", 0, 120)], {fired("a", severity="critical")}
    ),
}


@table(INSTANT)
def test_instant_over(case: Case) -> None:
    check(case)


# --- count_over ---------------------------------------------------------------------------


def count(**fields: Any) -> str:
    defaults = {"speed_over_kmh": 90, "count": 3, "within_s": 10, "cooldown_s": 60}
    return version(rule("count_over", **{**defaults, **fields}))


COUNT: dict[str, Case] = {
    "count readings within_s apart exactly": Case(
        [count()], [r("a", 0, 95), r("b", 5, 95), r("c", 10, 95)], {fired("a", "b", "c")}
    ),
    "within_s exceeded by 1 ms": Case(
        [count()], [r("a", 0, 95), r("b", 5, 95), r("c", 10.001, 95)]
    ),
    "the oldest drops out, a later one completes": Case(
        [count()],
        [r("a", 0, 95), r("b", 5, 95), r("c", 10.001, 95), r("d", 10.002, 95)],
        {fired("b", "c", "d")},
    ),
    "at X is not a violation": Case([count()], [r("a", 0, 95), r("b", 1, 90), r("c", 2, 95)]),
    "readings not over do not break the set": Case(
        [count()],
        [r("a", 0, 95), r("x", 1, 50), r("b", 2, 95), r("y", 3, 90), r("c", 4, 95)],
        {fired("a", "b", "c")},
    ),
    "readings in cooldown are not counted; after it the count starts empty": Case(
        [count()],
        [
            *[r(e, s, 95) for e, s in (("a", 0), ("b", 5), ("c", 10))],
            r("d", 69.999, 95),
            r("e", 70, 95),
            r("f", 71, 95),
        ],
        {fired("a", "b", "c")},
    ),
    "the third after the cooldown fires": Case(
        [count()],
        [
            *[r(e, s, 95) for e, s in (("a", 0), ("b", 5), ("c", 10))],
            r("d", 69.999, 95),
            r("e", 70, 95),
            r("f", 71, 95),
            r("g", 72, 95),
        ],
        {fired("a", "b", "c"), fired("e", "f", "g")},
    ),
    "cooldown_s 0: the set is consumed": Case(
        [count(cooldown_s=0)],
        [r(e, i, 95) for i, e in enumerate("abcdef")],
        {fired("a", "b", "c"), fired("d", "e", "f")},
    ),
    "count 1 with within_s 0": Case(
        [count(count=1, within_s=0, cooldown_s=0)],
        [r("a", 0, 95), r("b", 0, 95)],
        {fired("a"), fired("b")},
    ),
    "within_s 0: a tie is within": Case(
        [count(count=2, within_s=0)], [r("a", 0, 95), r("b", 0, 95)], {fired("a", "b")}
    ),
    "within_s 0: 1 ms apart is not": Case(
        [count(count=2, within_s=0)], [r("a", 0, 95), r("b", 0.001, 95)]
    ),
}


@table(COUNT)
def test_count_over(case: Case) -> None:
    check(case)


# --- duration_over ------------------------------------------------------------------------


def duration(**fields: Any) -> str:
    defaults = {"speed_over_kmh": 90, "for_s": 60, "max_gap_s": 30, "cooldown_s": 0}
    return version(rule("duration_over", **{**defaults, **fields}))


DURATION: dict[str, Case] = {
    "for_s reached exactly": Case(
        [duration()], [r("a", 0, 95), r("b", 30, 95), r("c", 60, 95)], {fired("a", "b", "c")}
    ),
    "for_s missed by 1 ms": Case([duration()], [r("a", 0, 95), r("b", 30, 95), r("c", 59.999, 95)]),
    "a gap of max_gap_s exactly keeps the run": Case(
        [duration()], [r("a", 0, 95), r("b", 30, 95), r("c", 60, 95)], {fired("a", "b", "c")}
    ),
    "a gap 1 ms over max_gap_s starts a new run": Case(
        [duration()], [r("a", 0, 95), r("b", 30.001, 95), r("c", 60, 95)]
    ),
    "the new run fires when it has lasted for_s": Case(
        [duration()],
        [r("a", 0, 95), r("b", 30.001, 95), r("c", 60.001, 95), r("d", 90.001, 95)],
        {fired("b", "c", "d")},
    ),
    "a reading at X ends the run": Case(
        [duration()], [r("a", 0, 95), r("b", 30, 90), r("c", 60, 95)]
    ),
    "a gap of 0 keeps the run": Case(
        [duration(for_s=1)],
        [r("a", 0, 95), r("b", 0, 95), r("c", 1, 95)],
        {fired("a", "b", "c")},
    ),
    "for_s 0 fires at every reading over": Case(
        [duration(for_s=0)], [r("a", 0, 95), r("b", 1, 95), r("c", 2, 80)], {fired("a"), fired("b")}
    ),
    "max_gap_s defaults to 30": Case(
        [version(rule("duration_over", speed_over_kmh=90, for_s=60, cooldown_s=0))],
        [r("a", 0, 95), r("b", 30.001, 95), r("c", 60, 95), r("d", 90, 95), r("e", 90.001, 95)],
        {fired("b", "c", "d", "e")},
    ),
    "after an alert the run starts empty": Case(
        [duration(for_s=2)],
        [r(e, i, 95) for i, e in enumerate("abcdef")],
        {fired("a", "b", "c"), fired("d", "e", "f")},
    ),
    "readings in cooldown start no run": Case(
        [duration(for_s=2, cooldown_s=10)],
        [r(e, s, 95) for e, s in zip("abcdefg", (0, 1, 2, 11.999, 12, 13, 14), strict=True)],
        {fired("a", "b", "c"), fired("e", "f", "g")},
    ),
}


@table(DURATION)
def test_duration_over(case: Case) -> None:
    check(case)


# --- deceleration -------------------------------------------------------------------------


def decel(**fields: Any) -> str:
    defaults = {"drop_kmh": 20, "within_s": 5, "cooldown_s": 0}
    return version(rule("deceleration", **{**defaults, **fields}))


DECELERATION: dict[str, Case] = {
    "a drop of drop_kmh within within_s exactly": Case(
        [decel()], [r("a", 0, 100), r("b", 5, 80)], {fired("a", "b")}
    ),
    "a drop 0.001 short": Case([decel()], [r("a", 0, 100), r("b", 5, 80.001)]),
    "1 ms over within_s": Case([decel()], [r("a", 0, 100), r("b", 5.001, 80)]),
    "1 ms apart": Case([decel()], [r("a", 0, 100), r("b", 0.001, 50)], {fired("a", "b")}),
    "a rise is no drop": Case([decel()], [r("a", 0, 80), r("b", 1, 100)]),
    "only adjacent readings pair": Case([decel()], [r("a", 0, 100), r("b", 1, 95), r("c", 2, 79)]),
    "a tie is never a pair, but the later of it is the previous reading": Case(
        [decel()], [r("a", 0, 100), r("b", 0, 70), r("c", 1, 50)], {fired("b", "c")}
    ),
    "the pair is consumed (cooldown_s 0)": Case(
        [decel()],
        [r("a", 0, 100), r("b", 1, 80), r("c", 2, 60), r("d", 3, 40)],
        {fired("a", "b"), fired("c", "d")},
    ),
    "readings in cooldown are no previous reading": Case(
        [decel(cooldown_s=10)],
        [r("a", 0, 100), r("b", 1, 80), r("c", 10.999, 100), r("d", 11, 79), r("e", 12, 59)],
        {fired("a", "b"), fired("d", "e")},
    ),
    "slow readings count (no floor)": Case(
        [decel(drop_kmh=5)], [r("a", 0, 10), r("b", 1, 5)], {fired("a", "b")}
    ),
}


@table(DECELERATION)
def test_deceleration(case: Case) -> None:
    check(case)


# --- zone_over ----------------------------------------------------------------------------


def zone_case(lat: float | None, lon: float | None, fires: bool, zone: str = "depot") -> Case:
    text = version(rule("zone_over", zone=zone, speed_over_kmh=50, cooldown_s=0))
    return Case([text], [r("a", 0, 60, pos=(lat, lon))], {fired("a")} if fires else set(), ZONES)


ZONE: dict[str, Case] = {
    "inside": zone_case(60.0625, 24.0625, True),
    "on an edge": zone_case(60.0, 24.25, True),
    "on a vertex": zone_case(60.5, 24.5, True),
    "just outside an edge": zone_case(60.25, 24.500001, False),
    "outside": zone_case(60.25, 24.75, False),
    "inside the hole": zone_case(60.25, 24.25, False),
    "on the hole's edge": zone_case(60.25, 24.125, True),
    "on the hole's vertex": zone_case(60.375, 24.375, True),
    "on a slanted edge": zone_case(60.25, 24.75, True, "wedge"),
    "just beyond a slanted edge": zone_case(60.250001, 24.75, False, "wedge"),
    "without a position": zone_case(None, None, False),
    "with lat only": zone_case(60.0625, None, False),
    "inside at X exactly: not over": Case(
        [version(rule("zone_over", zone="depot", speed_over_kmh=60))],
        [r("a", 0, 60, pos=(60.0625, 24.0625))],
        zones=ZONES,
    ),
    "cooldown across positions": Case(
        [version(rule("zone_over", zone="depot", speed_over_kmh=50, cooldown_s=10))],
        [
            r("a", 0, 60, pos=(60.0625, 24.0625)),
            r("b", 5, 60, pos=(60.0625, 24.0625)),
            r("c", 10, 60, pos=(60.0625, 24.0625)),
        ],
        {fired("a"), fired("c")},
        ZONES,
    ),
}


@table(ZONE)
def test_zone_over(case: Case) -> None:
    check(case)


# --- scope --------------------------------------------------------------------------------


def scoped(scope: dict[str, list[str]]) -> str:
    return version(rule("instant_over", speed_over_kmh=100, cooldown_s=0, scope=scope))


TRUCKS = ["T1", "T10", "T2", "T3", "T4", "t1"]


def scope_case(scope: dict[str, list[str]], *judged: str) -> Case:
    readings = [r(f"{truck}-a", 0, 120, truck=truck) for truck in TRUCKS]
    expected = {fired(f"{truck}-a", truck=truck) for truck in judged}
    return Case([scoped(scope)], readings, expected, classes=CLASSES)


SCOPE: dict[str, Case] = {
    "a pattern": scope_case({"trucks": ["T1*"]}, "T1", "T10"),
    "an exact name": scope_case({"trucks": ["T1"]}, "T1"),
    "patterns are case-sensitive": scope_case({"trucks": ["t1*"]}, "t1"),
    "? is one character": scope_case({"trucks": ["T?"]}, "T1", "T2", "T3", "T4"),
    "several patterns": scope_case({"trucks": ["T2", "T1?"]}, "T2", "T10"),
    "a class (a truck without class matches none)": scope_case(
        {"vehicle_classes": ["heavy"]}, "T1", "T2"
    ),
    "several classes": scope_case({"vehicle_classes": ["light", "medium"]}, "T10", "T3"),
    "both keys: both must match": scope_case(
        {"trucks": ["T1*"], "vehicle_classes": ["heavy"]}, "T1"
    ),
    "no scope: every truck": Case(
        [version(rule("instant_over", speed_over_kmh=100, cooldown_s=0))],
        [r(f"{truck}-a", 0, 120, truck=truck) for truck in TRUCKS],
        {fired(f"{truck}-a", truck=truck) for truck in TRUCKS},
        classes=CLASSES,
    ),
}


@table(SCOPE)
def test_scope(case: Case) -> None:
    check(case)


def test_a_truck_without_class_is_judged_once_it_has_one() -> None:
    texts = [scoped({"vehicle_classes": ["heavy"]})]
    readings = [r("a", 0, 120, truck="T9")]
    assert product_keys(readings, make_book(texts)) == set()
    with_class = make_book(texts, classes={"T9": "heavy"})
    assert product_keys(readings, with_class) == {fired("a", truck="T9")}


# --- versions -----------------------------------------------------------------------------

V2_AT = 60.0  # the second version's effective_from, seconds after T0


def v(*rules: dict[str, Any], number: int, start_s: float) -> str:
    return version(*rules, number=number, effective_from=at(start_s))


def counting(**fields: Any) -> dict[str, Any]:
    defaults = {"speed_over_kmh": 90, "count": 3, "within_s": 600, "cooldown_s": 0}
    return rule("count_over", "a", **{**defaults, **fields})


def spike(**fields: Any) -> dict[str, Any]:
    return rule("instant_over", "s", **{"speed_over_kmh": 100, "cooldown_s": 600, **fields})


def braking(**fields: Any) -> dict[str, Any]:
    return rule("deceleration", "d", **{"drop_kmh": 20, "within_s": 5, "cooldown_s": 0, **fields})


def fast(*names_at: tuple[str, float]) -> list[Reading]:
    return [r(e, s, 95) for e, s in names_at]


VERSIONS: dict[str, Case] = {
    "a reading at effective_from is judged by the new version": Case(
        [version(spike(cooldown_s=0)), v(spike(speed_over_kmh=120), number=2, start_s=V2_AT)],
        [r("a", V2_AT, 110)],
    ),
    "1 ms before effective_from: the old version": Case(
        [version(spike(cooldown_s=0)), v(spike(speed_over_kmh=120), number=2, start_s=V2_AT)],
        [r("a", V2_AT - 0.001, 110)],
        {fired("a", rule_id="s")},
    ),
    "before the first version: no rule": Case([version(spike())], [reading("a", T0 - MS, 200)]),
    "only severity changes: state carries over, the firing version names the alert": Case(
        [version(counting()), v(counting(severity="critical"), number=2, start_s=2)],
        fast(("a", 0), ("b", 1), ("c", 2)),
        {fired("a", "b", "c", rule_id="a", v=2, severity="critical")},
    ),
    "a changed parameter starts empty": Case(
        [version(counting()), v(counting(within_s=601), number=2, start_s=2)],
        fast(("a", 0), ("b", 1), ("c", 2), ("d", 3)),
    ),
    "after the reset, the new version's readings count": Case(
        [version(counting()), v(counting(within_s=601), number=2, start_s=2)],
        fast(("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)),
        {fired("c", "d", "e", rule_id="a", v=2)},
    ),
    "a changed scope starts empty": Case(
        [version(counting()), v(counting(scope={"trucks": ["T*"]}), number=2, start_s=2)],
        fast(("a", 0), ("b", 1), ("c", 2), ("d", 3)),
    ),
    "a scope written in another order is the same": Case(
        [
            version(counting(scope={"trucks": ["T1", "T2*"]})),
            v(counting(scope={"trucks": ["T2*", "T1", "T1"]}), number=2, start_s=2),
        ],
        fast(("a", 0), ("b", 1), ("c", 2)),
        {fired("a", "b", "c", rule_id="a", v=2)},
    ),
    "defaults spelled out are the same": Case(
        [
            version(rule("count_over", "a", speed_over_kmh=90, count=3, within_s=600)),
            v(counting(cooldown_s=600, severity="warning"), number=2, start_s=2),
        ],
        fast(("a", 0), ("b", 1), ("c", 2)),
        {fired("a", "b", "c", rule_id="a", v=2)},
    ),
    "removed then re-added: starts empty": Case(
        [
            version(counting()),
            v(spike(), number=2, start_s=10),
            v(counting(), number=3, start_s=20),
        ],
        fast(("a", 0), ("b", 1), ("c", 10), ("d", 20), ("e", 21)),
    ),
    "removed then re-added: its own readings count": Case(
        [
            version(counting()),
            v(spike(), number=2, start_s=10),
            v(counting(), number=3, start_s=20),
        ],
        fast(("a", 0), ("b", 1), ("c", 10), ("d", 20), ("e", 21), ("f", 22)),
        {fired("d", "e", "f", rule_id="a", v=3)},
    ),
    "X, Y, X: a version in between differs (no reading under it)": Case(
        [
            version(counting()),
            v(counting(speed_over_kmh=91), number=2, start_s=10),
            v(counting(), number=3, start_s=20),
        ],
        fast(("a", 0), ("b", 1), ("c", 20), ("d", 21)),
    ),
    "X, X, X: the state crosses a version without readings": Case(
        [
            version(counting()),
            v(counting(severity="critical"), number=2, start_s=10),
            v(counting(), number=3, start_s=20),
        ],
        fast(("a", 0), ("b", 1), ("c", 20)),
        {fired("a", "b", "c", rule_id="a", v=3)},
    ),
    "a running cooldown survives a severity change": Case(
        [version(spike()), v(spike(severity="critical"), number=2, start_s=10)],
        [r("a", 0, 120), r("b", 20, 120)],
        {fired("a", rule_id="s")},
    ),
    "a running cooldown ends with a changed definition": Case(
        [version(spike()), v(spike(speed_over_kmh=99), number=2, start_s=10)],
        [r("a", 0, 120), r("b", 20, 120)],
        {fired("a", rule_id="s"), fired("b", rule_id="s", v=2)},
    ),
    "deceleration: the previous reading survives an unchanged definition": Case(
        [version(braking()), v(braking(severity="critical"), number=2, start_s=10)],
        [r("a", 9, 100), r("b", 10, 80)],
        {fired("a", "b", rule_id="d", v=2, severity="critical")},
    ),
    "deceleration: a changed definition has no previous reading": Case(
        [version(braking()), v(braking(within_s=6), number=2, start_s=10)],
        [r("a", 9, 100), r("b", 10, 80)],
    ),
    "rules keep their own state": Case(
        [version(counting(), spike(cooldown_s=0)), v(counting(), number=2, start_s=10)],
        [r("a", 0, 120), r("b", 1, 95), r("c", 10, 120)],
        {fired("a", rule_id="s"), fired("a", "b", "c", rule_id="a", v=2)},
    ),
    "a version without rules silences everything": Case(
        [version(spike(cooldown_s=0)), v(number=2, start_s=10)],
        [r("a", 0, 120), r("b", 10, 120)],
        {fired("a", rule_id="s")},
    ),
}


@table(VERSIONS)
def test_versions(case: Case) -> None:
    check(case)


# --- alerts: details, threshold, position, severity ---------------------------------------


def one_alert(texts: list[str], readings: list[Reading], zones: Any = None) -> Alert:
    [alert] = product_alerts(readings, make_book(texts, zones))
    [(key, _)] = reference_catalogue_details(readings, texts, zones).items()
    assert key_of(alert) == key
    return alert


def test_instant_over_alert() -> None:
    alert = one_alert([instant()], [r("a", 0, 120.5, pos=(60.1, 24.1))])
    assert alert.details == {"kind": "instant_over"}
    assert alert.threshold_kmh == 100.0
    assert alert.position is not None
    assert (alert.position.lat, alert.position.lon) == (60.1, 24.1)
    assert (alert.rule, alert.rule_version, alert.severity) == ("r", 1, "warning")


def test_count_over_alert() -> None:
    alert = one_alert([count(within_s=10.5)], [r("a", 0, 95), r("b", 5, 97), r("c", 10, 99)])
    assert alert.details == {"kind": "count_over", "within_s": 10.5}
    assert alert.threshold_kmh == 90.0
    assert (alert.count, alert.max_speed_kmh, alert.mean_speed_kmh) == (3, 99.0, 97.0)
    assert alert.position is None, "the newest covered reading has no position"


def test_duration_over_alert() -> None:
    readings = [r("a", 0, 95), r("b", 30, 95), r("c", 61.5, 95, pos=(60.2, 24.2))]
    alert = one_alert([duration(max_gap_s=31.5)], readings)
    assert alert.details == {"kind": "duration_over", "duration_s": 61.5, "for_s": 60.0}
    assert alert.threshold_kmh == 90.0
    assert alert.position is not None
    assert (alert.position.lat, alert.position.lon) == (60.2, 24.2)


DECELERATIONS = [
    # (r1 speed, r2 speed, interval s, drop, m/s2)
    (100.0, 75.0, 2.5, 25.0, 2.778),
    (100.0, 80.0, 5.0, 20.0, 1.111),
    (80.5, 60.0, 0.001, 20.5, 5694.444),
    (130.123, 30.0, 3.7, 100.123, 7.517),
]


@pytest.mark.parametrize(("first", "second", "interval", "drop", "ms2"), DECELERATIONS)
def test_deceleration_alert(
    first: float, second: float, interval: float, drop: float, ms2: float
) -> None:
    readings = [r("a", 10, first), r("b", 10 + interval, second)]
    texts = [decel(within_s=5)]
    alert = one_alert(texts, readings)
    assert alert.details == {
        "kind": "deceleration",
        "drop_kmh": drop,
        "deceleration_ms2": ms2,
        "interval_s": interval,
    }
    assert alert.threshold_kmh == 20.0, "the rule's drop_kmh"
    [expected] = reference_catalogue_details(readings, texts).values()
    assert math.isclose(alert.details["drop_kmh"], expected["drop_kmh"], abs_tol=1e-3)
    assert math.isclose(
        alert.details["deceleration_ms2"], expected["deceleration_ms2"], abs_tol=1e-3
    )


def test_zone_over_alert() -> None:
    text = version(rule("zone_over", zone="depot", speed_over_kmh=50, severity="critical"))
    alert = one_alert([text], [r("a", 0, 60, pos=(60.0625, 24.0625))], ZONES)
    assert alert.details == {"kind": "zone_over", "zone": "depot"}
    assert alert.threshold_kmh == 50.0
    assert alert.severity == "critical"
    assert alert.position is not None
    assert (alert.position.lat, alert.position.lon) == (60.0625, 24.0625)


def test_rule_version_and_severity_come_from_the_firing_version() -> None:
    texts = [
        version(counting(), number=4),
        v(counting(severity="critical"), number=9, start_s=1),
        v(counting(), number=2, start_s=2),
    ]
    alert = one_alert(texts, fast(("a", 0), ("b", 1), ("c", 2)))
    assert (alert.rule_version, alert.severity) == (2, "warning")
    alert = one_alert(texts, fast(("a", 0), ("b", 1), ("c", 1.5)))
    assert (alert.rule_version, alert.severity) == (9, "critical")


# --- the built-in catalogue ---------------------------------------------------------------


def test_the_builtin_catalogue_gives_no_details_and_version_0() -> None:
    config = RuleConfig()
    readings = [r(f"e{i}", i, 95, pos=(60.0, 24.0)) for i in range(5)] + [r("x", 10, 140)]
    state = TruckState()
    detections = state.ingest(readings, config).detections
    detections += state.evaluate_released(config, flush=True)
    alerts = [alert_of(d) for d in detections]
    assert {(a.rule, a.truck_id, tuple(a.event_ids)) for a in alerts} == reference_alerts(
        readings, config
    )
    by_rule = {a.rule: a for a in alerts}
    assert set(by_rule) == {"sustained_speeding", "instant_overspeed"}
    assert all(a.details == {} and a.rule_version == 0 for a in alerts)
    assert by_rule["instant_overspeed"].severity == "critical"
    assert by_rule["instant_overspeed"].threshold_kmh == 130.0
    assert by_rule["sustained_speeding"].severity == "warning"
    assert by_rule["sustained_speeding"].threshold_kmh == 90.0
    assert product_keys(readings, builtin_book(config)) == {
        ("instant_overspeed", 0, "T1", ("x",), "critical"),
        ("sustained_speeding", 0, "T1", ("e0", "e1", "e2", "e3", "e4"), "warning"),
    }


# --- sub-millisecond values: the product and the reference disagree ------------------------

SUB_MS: dict[str, Case] = {
    "effective_from 0.5 ms after a reading does not judge it": Case(
        [version(spike(cooldown_s=0), effective_from="2026-12-01T00:00:59.9995Z")],
        [r("a", 59.999, 120), r("b", 60, 120)],
        {fired("b", rule_id="s")},
    ),
    "deceleration within_s 0.0006: 1 ms apart is too far": Case(
        [decel(within_s=0.0006)], [r("a", 0, 100), r("b", 0.001, 50)]
    ),
    "duration_over for_s 0.0004: one reading has not lasted it": Case(
        [duration(for_s=0.0004)], [r("a", 0, 95)]
    ),
    "cooldown_s 0.0004: a tie is in the cooldown": Case(
        [instant(cooldown_s=0.0004)], [r("a", 0, 120), r("b", 0, 120)], {fired("a")}
    ),
    "max_gap_s 1.0006: a gap of 1001 ms ends the run": Case(
        [duration(for_s=1, max_gap_s=1.0006)], [r("a", 0, 95), r("b", 1.001, 95)]
    ),
}


@table(SUB_MS)
def test_sub_millisecond_values_per_the_reference(case: Case) -> None:
    """The contract compares times exactly; the reference converts seconds to ms exactly
    (and an effective_from with sub-ms digits applies from the next whole ms)."""
    reference = reference_catalogue_alerts(case.readings, case.texts, case.zones, case.classes)
    assert reference == case.expected


@table(SUB_MS)
def test_sub_millisecond_values_are_refused_by_the_product(case: Case) -> None:
    """Where the reference compares below a millisecond, the product refuses the file:
    times are whole milliseconds, as the readings' are, so no boundary is ever rounded."""
    with pytest.raises(CatalogueError, match="whole number of milliseconds"):
        make_book(case.texts, case.zones, case.classes)
