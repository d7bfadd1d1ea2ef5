"""The as-of join of CONTRACT.md section 6 and the driver fields of section 5."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.alerts import build_alert, encode_alert
from domain.history import (
    ASSIGNMENT_COLUMNS,
    DRIVER_COLUMNS,
    TRUCK_COLUMNS,
    VEHICLE_CLASSES,
    Assignment,
    Driver,
    HistoryIndex,
    Truck,
    driver_context,
)
from domain.readings import Reading
from domain.rules import Detection, Rule
from domain.timestamps import to_epoch_ms
from tests.builders import BEGINNING, BEGINNING_MS, minutes, reading

H = 3_600_000  # an hour in ms
SHIFT_CHANGE = BEGINNING_MS + 8 * H

ALICE = Driver("D-alice", "Alice", "2019-04-01", 5, 84.5, 9_120.0, "high")
BOB = Driver("D-bob", "Bob", "2021-09-15", 0, 77.0, 4_000.5, "low")
CAROL = Driver("D-carol", "Carol", "2020-01-10", 3, 80.0, 7_000.0, "medium")


def at(truck: str, driver: str, start: int, end: int | None) -> Assignment:
    return Assignment(truck, driver, start, end)


INDEX = HistoryIndex.build(
    [ALICE, BOB, CAROL],
    [
        # T1: Alice until the shift change, then Bob (valid_to is exclusive).
        at("T1", "D-alice", BEGINNING_MS, SHIFT_CHANGE),
        at("T1", "D-bob", SHIFT_CHANGE, SHIFT_CHANGE + 8 * H),
        # T2: Carol open-ended; Bob overlaps for two hours with a later valid_from.
        at("T2", "D-carol", BEGINNING_MS, None),
        at("T2", "D-bob", BEGINNING_MS + 2 * H, BEGINNING_MS + 4 * H),
        # T3: an assignment naming a driver nobody knows.
        at("T3", "D-ghost", BEGINNING_MS, None),
    ],
)


@pytest.mark.parametrize(
    ("truck", "ts_ms", "driver"),
    [
        pytest.param("T1", BEGINNING_MS - 1, None, id="before any assignment"),
        pytest.param("T1", BEGINNING_MS, "D-alice", id="valid_from is inclusive"),
        pytest.param("T1", SHIFT_CHANGE - 1, "D-alice", id="last ms of the shift"),
        pytest.param(
            "T1", SHIFT_CHANGE, "D-bob", id="exactly at the shift change: valid_to exclusive"
        ),
        pytest.param("T1", SHIFT_CHANGE + 8 * H, None, id="after the last assignment ended"),
        pytest.param("T2", BEGINNING_MS + 1 * H, "D-carol", id="open-ended"),
        pytest.param("T2", BEGINNING_MS + 3 * H, "D-bob", id="overlap: the latest valid_from wins"),
        pytest.param(
            "T2", BEGINNING_MS + 4 * H, "D-carol", id="after the overlap ends, the open one again"
        ),
        pytest.param("T2", BEGINNING_MS + 10_000 * H, "D-carol", id="open-ended means forever"),
        pytest.param("T9", BEGINNING_MS, None, id="a truck with no assignment"),
    ],
)
def test_driver_as_of(truck: str, ts_ms: int, driver: str | None) -> None:
    assert INDEX.driver_id_at(truck, ts_ms) == driver


def test_equal_valid_from_overlap_is_decided_by_driver_id_not_row_order() -> None:
    rows = [at("T1", "D-b", BEGINNING_MS, None), at("T1", "D-a", BEGINNING_MS, None)]
    assert HistoryIndex.build([], rows).driver_id_at("T1", BEGINNING_MS) == "D-b"
    assert HistoryIndex.build([], rows[::-1]).driver_id_at("T1", BEGINNING_MS) == "D-b"


def test_unknown_driver_gives_the_id_but_no_history() -> None:
    context = driver_context(INDEX, "T3", BEGINNING_MS, 120.0)
    assert (context.driver_id, context.driver, context.high_risk) == ("D-ghost", None, False)


def test_driver_fields_and_derived_values() -> None:
    context = driver_context(INDEX, "T1", BEGINNING_MS + H, 119.0)
    assert context.driver == {
        "driver_id": "D-alice",
        "name": "Alice",
        "hired_on": "2019-04-01",
        "overspeed_events_90d": 5,
        "avg_speed_kmh_90d": 84.5,
        "km_driven_90d": 9_120.0,
        "risk_tier": "high",
        "speed_over_baseline_kmh": 34.5,
        "repeat_offender": True,
    }
    assert context.high_risk


@pytest.mark.parametrize(("events", "repeat"), [(2, False), (3, True), (4, True)])
def test_repeat_offender_threshold(events: int, repeat: bool) -> None:
    driver = Driver("D", "D", "2020-01-01", events, 80.0, 1.0, "low")
    index = HistoryIndex.build([driver], [at("T1", "D", 0, None)])
    context = driver_context(index, "T1", BEGINNING_MS, 90.0)
    assert context.driver is not None
    assert context.driver["repeat_offender"] is repeat


def _sustained_at(window_end_ms: int, truck: str = "T1") -> Detection:
    """Five covered readings, the newest at ``window_end_ms`` with the maximum speed, 99."""
    first = [reading(truck, at=BEGINNING + minutes(m), speed=95.0 + m) for m in range(4)]
    newest = Reading("last", truck, window_end_ms, 99.0)
    return Detection(Rule.SUSTAINED, truck, (*first, newest), 90.0)


def test_alert_uses_the_driver_at_window_end_and_high_risk_makes_it_critical() -> None:
    before = json.loads(encode_alert(build_alert(_sustained_at(SHIFT_CHANGE - 1), 0, INDEX)))
    after = json.loads(encode_alert(build_alert(_sustained_at(SHIFT_CHANGE), 0, INDEX)))
    assert (before["driver_id"], before["severity"]) == ("D-alice", "critical")
    assert (after["driver_id"], after["severity"]) == ("D-bob", "warning")
    assert after["driver"]["speed_over_baseline_kmh"] == 99.0 - 77.0


def test_alert_without_driver_has_null_driver_fields() -> None:
    alert = json.loads(encode_alert(build_alert(_sustained_at(BEGINNING_MS + H, "T9"), 0, INDEX)))
    assert (alert["driver_id"], alert["driver"], alert["severity"]) == (None, None, "warning")


def test_times_are_utc_epoch_ms() -> None:
    assert to_epoch_ms(BEGINNING) == BEGINNING_MS


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["D1", "D2", "D3", "D4"]),
            st.integers(0, 40),
            st.one_of(st.none(), st.integers(1, 30)),
        ),
        max_size=12,
    ),
    st.lists(st.integers(-5, 80), min_size=1, max_size=20),
)
def test_index_agrees_with_the_definition(
    rows: list[tuple[str, int, int | None]], instants: list[int]
) -> None:
    """Brute force from the contract: among rows with valid_from <= t < valid_to (or open),
    the latest valid_from (then the larger driver_id)."""
    assignments = [
        Assignment("T1", d, start, None if length is None else start + length)
        for d, start, length in rows
    ]
    index = HistoryIndex.build([], assignments)
    for t in instants:
        active = [
            a
            for a in assignments
            if a.valid_from_ms <= t and (a.valid_to_ms is None or t < a.valid_to_ms)
        ]
        expected = (
            max(active, key=lambda a: (a.valid_from_ms, a.driver_id)).driver_id if active else None
        )
        assert index.driver_id_at("T1", t) == expected


def test_the_column_rules_cover_every_field_and_only_valid_to_and_depot_are_nullable() -> None:
    """The loaders check DRIVER_COLUMNS and build ``Driver(*row)`` from them, in order."""
    assert [c.name for c in DRIVER_COLUMNS] == [f.name for f in fields(Driver)]
    assert [c.name for c in ASSIGNMENT_COLUMNS] == [
        "truck_id",
        "driver_id",
        "valid_from",
        "valid_to",
    ]
    assert [c.name for c in TRUCK_COLUMNS] == [f.name for f in fields(Truck)]
    every = (*DRIVER_COLUMNS, *ASSIGNMENT_COLUMNS, *TRUCK_COLUMNS)
    assert [c.name for c in every if c.nullable] == ["valid_to", "depot"], "CONTRACT.md section 6"
    [vehicle_class] = [c for c in TRUCK_COLUMNS if c.name == "vehicle_class"]
    assert vehicle_class.choices == VEHICLE_CLASSES == ("heavy", "medium", "light")
    assert TRUCK_COLUMNS[0].non_empty, "truck_id"


# --- Vehicle classes and depots (trucks.parquet) ---------------------------------------


def test_an_index_without_trucks_gives_no_truck_a_class() -> None:
    assert (INDEX.vehicle_classes, INDEX.depots) == ({}, {})
    assert (HistoryIndex().vehicle_classes, HistoryIndex().depots) == ({}, {})
    assert HistoryIndex({}, {}, 0).vehicle_classes == {}, "the old positional call still works"


def test_trucks_give_classes_and_only_known_depots() -> None:
    trucks = [
        Truck("T1", "heavy", "Hamburg"),
        Truck("T2", "light", None),
        Truck("T4", "medium", "Leipzig"),
    ]
    index = HistoryIndex.build([ALICE], [at("T1", "D-alice", BEGINNING_MS, None)], trucks)
    assert index.vehicle_classes == {"T1": "heavy", "T2": "light", "T4": "medium"}
    assert index.depots == {"T1": "Hamburg", "T4": "Leipzig"}, "a null depot is left out"
    assert "T3" not in index.vehicle_classes, "a truck not listed has no class"
    assert index.driver_id_at("T1", BEGINNING_MS) == "D-alice", "the drivers are as before"
