"""``python -m fleetwatch.history refresh`` (CONTRACT.md section 11, docs/history.md): on a
small lake whose answers are worked out by hand, the window's edges, duplicates, pairs,
overlapping assignments, alert kinds, the risk tiers, a broken lake file, the atomic
replace, and the flows' store picking the new file up."""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from connectors.alert_lake import ALERT_SCHEMA, alerts_frame
from connectors.history import HistoryStore, load_history_dir
from connectors.history_refresh import (
    RefreshError,
    Window,
    _haversine_km,
    driver_stats,
    file_signature,
    tier_expr,
    write_drivers_file,
)
from domain.history_refresh import RISK_CUTOFFS, RISK_FLOOR_KM, risk_tier
from domain.readings import Reading
from domain.scorecards import haversine_km
from domain.timestamps import EPOCH, to_epoch_ms
from fleetwatch import history as cli
from runtime.settings import SAMPLE_HISTORY_DIR, Settings
from tests.reference_scorecards import AssignmentRow, reference_scorecards
from tests.reference_scorecards import _driver as reference_driver

AS_OF = date(2026, 12, 1)
START = datetime(2026, 9, 2, tzinfo=UTC)  # AS_OF - 90 days, UTC: the first instant counted
END = datetime(2026, 12, 1, tzinfo=UTC)  # AS_OF itself: the first instant not counted
HANDOVER = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # T00001: D1 hands over to D2
NESTED = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)  # T00002: D9 drives for an hour inside D3's
MS = timedelta(milliseconds=1)


def s(n: float) -> timedelta:
    return timedelta(seconds=n)


def reading(
    truck: str,
    at: datetime,
    speed: float,
    lat: float | None = None,
    lon: float | None = 0.0,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"{truck}-{to_epoch_ms(at)}",
        "truck_id": truck,
        "ts": at,
        "speed_kmh": float(speed),
        "lat": lat,
        "lon": lon if lat is not None else None,
    }


def alert(
    alert_id: str, rule: str, driver_id: str | None, window_end: datetime, details: str = "{}"
) -> dict[str, Any]:
    end_ms = to_epoch_ms(window_end)
    row: dict[str, Any] = dict.fromkeys(ALERT_SCHEMA)
    row.update(
        alert_id=alert_id,
        rule=rule,
        truck_id="T00001",
        driver_id=driver_id,
        window_start=end_ms - 60_000,
        window_end=end_ms,
        detected_at=end_ms + 500,
        count=1,
        event_ids=["e"],
        max_speed_kmh=120.0,
        mean_speed_kmh=110.0,
        threshold_kmh=90.0,
        severity="warning",
        schema_version=1,
        rule_version=0,
        details=details,
    )
    return row


# T00001 along the meridian 0, 0.001 degrees of latitude per step.
T1 = [
    reading("T00001", HANDOVER - s(30), 50, lat=60.000),  # D1
    reading("T00001", HANDOVER - s(10), 60, lat=60.001),  # D1; pair of 20 s
    reading("T00001", HANDOVER + s(10), 70, lat=60.002),  # D2; its pair (20 s) is D2's
    reading("T00001", HANDOVER + s(70), 4, lat=60.003),  # D2; 60 s: a pair; not moving
    reading("T00001", HANDOVER + s(130) + MS, 80, lat=60.004),  # 60.001 s: no pair
    reading("T00001", HANDOVER + s(140), 80),  # no position: no pair, breaks the chain
    reading("T00001", HANDOVER + s(150), 90, lat=60.005),  # after one without a position
]
T1_BAD = reading("T00001", HANDOVER + s(160), 500, lat=60.006)  # not a valid reading
T2 = [
    reading("T00002", START - MS, 100, lat=61.0),  # before the window: only a pair's first
    reading("T00002", START, 30, lat=61.001),  # the first instant counted, D3; pair 1 ms
    reading("T00002", NESTED + s(1800), 40, lat=61.5),  # D9 (not in drivers.parquet)
    reading("T00002", NESTED + s(7200), 60, lat=61.6),  # D3 again: D9's row has ended
    reading("T00002", END - MS, 50, lat=61.7),  # the last instant counted, D3
]
# As_of itself: not counted. Written outside the date= directories (such a file may hold any
# day, so it is always read): the window's end, not the choice of files, must leave it out.
T2_END = reading("T00002", END, 100, lat=61.701)
T3 = [reading("T00003", HANDOVER, 77, lat=62.0)]  # a truck without a driver

D1_KM = haversine_km(60.000, 0, 60.001, 0)
D2_KM = haversine_km(60.001, 0, 60.002, 0) + haversine_km(60.002, 0, 60.003, 0)
D3_KM = haversine_km(61.0, 0, 61.001, 0)

ALERTS = [
    alert("a1", "sustained_speeding", "D1", HANDOVER - s(5)),  # built-in: count_over
    alert("a1", "sustained_speeding", "D1", HANDOVER - s(5)),  # the same alert again
    alert("a2", "instant_overspeed", "D1", HANDOVER - s(1)),  # built-in: instant_over
    alert("a3", "harsh_braking", "D1", HANDOVER - s(2), '{"kind": "deceleration"}'),
    alert("a4", "posted_speeding_light", "D2", START, '{"kind": "posted_limit_over"}'),
    alert("a5", "posted_speeding_light", "D2", END, '{"kind": "posted_limit_over"}'),
    # The last hour of Nov 30 UTC: in the UTC window, after Helsinki's (its date's file is read).
    alert("a8", "posted_speeding_light", "D2", END - s(7200), '{"kind": "posted_limit_over"}'),
    alert("a6", "sustained_speeding", None, HANDOVER),  # no driver
    alert("a7", "yard_slow_zone", "D3", START - MS, '{"kind": "zone_over"}'),  # before it
]


def readings_frame(readings: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        readings,
        schema={
            "event_id": pl.String,
            "truck_id": pl.String,
            "ts": pl.Datetime("ms", "UTC"),
            "speed_kmh": pl.Float64,
            "lat": pl.Float64,
            "lon": pl.Float64,
        },
    )


def write_lake(lake: Path, readings: list[dict[str, Any]], name: str = "part-0") -> None:
    frame = readings_frame(readings)
    dated = frame.with_columns(pl.col("ts").dt.date().alias("day"))
    for (day,), part in dated.partition_by("day", as_dict=True, include_key=False).items():
        directory = lake / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.write_parquet(directory / f"{name}.parquet")


def write_alerts(lake: Path, rows: list[dict[str, Any]]) -> None:
    frame = alerts_frame(rows)
    dated = frame.with_columns(pl.col("window_end").dt.date().alias("day"))
    for (day,), part in dated.partition_by("day", as_dict=True, include_key=False).items():
        directory = lake / "alerts" / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.write_parquet(directory / f"p0000-{len(list(directory.iterdir()))}.parquet")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def write_history(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "driver_id": ["D1", "D2", "D3", "D4"],
            "name": ["Ada", "Bo", "Cy", "Di"],
            "hired_on": [date(2020, 1, 1)] * 4,
            # Last refresh's figures, all to be replaced (D4 drove nothing since).
            "overspeed_events_90d": [9, 9, 9, 9],
            "avg_speed_kmh_90d": [99.0] * 4,
            "km_driven_90d": [9999.0] * 4,
            "risk_tier": ["low", "low", "high", "high"],
            "email": ["ada@x", "bo@x", "cy@x", "di@x"],  # not the contract's: kept
        }
    ).write_parquet(directory / "drivers.parquet")
    opened = utc("2026-09-01T00:00:00")
    pl.DataFrame(
        {
            "truck_id": ["T00001", "T00001", "T00002", "T00002"],
            "driver_id": ["D1", "D2", "D3", "D9"],
            "valid_from": [opened, HANDOVER, opened, NESTED],
            "valid_to": [HANDOVER, None, None, NESTED + s(3600)],
        },
        schema_overrides={
            "valid_from": pl.Datetime("ms", "UTC"),
            "valid_to": pl.Datetime("ms", "UTC"),
        },
    ).write_parquet(directory / "assignments.parquet")


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, Path]:
    lake, history = tmp_path / "lake", tmp_path / "history"
    write_lake(lake, [*T1, T1_BAD, *T2, *T3])
    write_lake(lake, [T1[2]], name="part-1")  # a duplicate of a D2 reading, in another file
    (lake / "loose").mkdir()
    readings_frame([T2_END]).write_parquet(lake / "loose" / "t2-end.parquet")
    write_alerts(lake, ALERTS)
    write_history(history)
    return lake, history


def run(lake: Path, history: Path, *extra: str, env: dict[str, str] | None = None) -> int:
    args = ["refresh", "--as-of", AS_OF.isoformat(), "--lake", str(lake)]
    args += ["--history", str(history), *extra]
    return cli.main(args, settings_from_env=lambda: Settings.from_env(env or {}))


def drivers(history: Path) -> dict[str, dict[str, Any]]:
    frame = pl.read_parquet(history / "drivers.parquet")
    return {row["driver_id"]: row for row in frame.iter_rows(named=True)}


def test_the_refresh_gives_the_hand_computed_figures(fleet: tuple[Path, Path]) -> None:
    lake, history = fleet
    assert run(lake, history) == cli.EXIT_OK
    rows = drivers(history)
    assert list(rows) == ["D1", "D2", "D3", "D4"]  # every row, in order; D9 is not added
    d1, d2, d3, d4 = (rows[d] for d in ("D1", "D2", "D3", "D4"))
    # D1: a1 once, a2; harsh braking is no overspeed. Few km: the 1,000 km floor, 2/1,000.
    assert (d1["overspeed_events_90d"], d1["risk_tier"]) == (2, "high")
    assert d1["avg_speed_kmh_90d"] == 55.0
    assert d1["km_driven_90d"] == pytest.approx(D1_KM, rel=1e-15)
    # D2: a4 at the window's first instant and a8, not a5 at as_of; 4 km/h is not moving.
    assert (d2["overspeed_events_90d"], d2["risk_tier"]) == (2, "high")
    assert d2["avg_speed_kmh_90d"] == 80.0
    assert d2["km_driven_90d"] == pytest.approx(D2_KM, rel=1e-15)
    # D3: the readings at START and END - 1 ms and after D9's hour; the pair that ends at
    # START; not the reading at END nor D9's.
    assert (d3["overspeed_events_90d"], d3["risk_tier"]) == (0, "low")
    assert d3["avg_speed_kmh_90d"] == pytest.approx((30 + 60 + 50) / 3, rel=1e-15)
    assert d3["km_driven_90d"] == pytest.approx(D3_KM, rel=1e-15)
    assert (d4["overspeed_events_90d"], d4["avg_speed_kmh_90d"], d4["km_driven_90d"]) == (0, 0, 0)
    assert d4["risk_tier"] == "low"
    assert [r["email"] for r in rows.values()] == ["ada@x", "bo@x", "cy@x", "di@x"]
    assert [r["name"] for r in rows.values()] == ["Ada", "Bo", "Cy", "Di"]
    load_history_dir(history)  # what the flows would load: valid


def test_readings_are_counted_once_and_attributed_as_the_flows_do(
    fleet: tuple[Path, Path],
) -> None:
    lake, history = fleet
    stats = driver_stats(lake, load_history_dir(history), Window.as_of_day(AS_OF, UTC))
    readings = dict(stats.by_driver.select("driver_id", "readings").iter_rows())
    # D2: five readings, the duplicate once; D9 drove inside D3's open assignment, and D3
    # drives again once D9's row ends (a join on the latest valid_from alone would say nobody).
    assert readings == {"D1": 2, "D2": 5, "D3": 3, "D9": 1}
    assert stats.unattributed == 1  # T00003
    assert stats.readings == 12
    # Every row of the files read, the bad one, the copy and T2_END too; the lake's date=
    # directories outside the window are not read (there are none here).
    assert stats.rows_read == len(T1) + 1 + len(T2) + len(T3) + 1 + 1
    assert stats.alerts == 6  # a1 (once), a2, a3, a4, a6, a8


def test_the_window_is_local_days_of_fleet_timezone() -> None:
    helsinki = Window.as_of_day(AS_OF, ZoneInfo("Europe/Helsinki"))
    assert (helsinki.first_day, helsinki.last_day) == (date(2026, 9, 2), date(2026, 11, 30))
    assert helsinki.start_ms == to_epoch_ms(utc("2026-09-01T21:00:00"))  # EEST, UTC+3
    assert helsinki.end_ms == to_epoch_ms(utc("2026-11-30T22:00:00"))  # EET, UTC+2
    assert helsinki.utc_dates() == (date(2026, 9, 1), date(2026, 11, 30))


def test_fleet_timezone_moves_the_window(fleet: tuple[Path, Path]) -> None:
    lake, history = fleet
    # In Helsinki the window is [Sep 1 21:00, Nov 30 22:00) UTC: END - 1 ms is out, and
    # START - 1 ms (a reading and a7) is in.
    assert run(lake, history, env={"FLEET_TIMEZONE": "Europe/Helsinki"}) == cli.EXIT_OK
    d3 = drivers(history)["D3"]
    assert d3["avg_speed_kmh_90d"] == pytest.approx((100 + 30 + 60) / 3, rel=1e-15)
    assert d3["overspeed_events_90d"] == 1
    assert drivers(history)["D2"]["overspeed_events_90d"] == 1  # a4 (03:00 local), not a8


def test_settings_name_the_lake_and_the_history(fleet: tuple[Path, Path]) -> None:
    lake, history = fleet
    env = {"FLEET_LAKE_DIR": str(lake), "FLEET_HISTORY_DIR": str(history)}
    code = cli.main(
        ["refresh"],
        settings_from_env=lambda: Settings.from_env(env),
        now=lambda: datetime(2026, 11, 30, 23, 30, tzinfo=UTC),  # today: Nov 30 in UTC
    )
    assert code == cli.EXIT_OK
    # Sep 1 to Nov 29: START - 1 ms is in, END - 1 ms out.
    d3 = drivers(history)["D3"]
    assert d3["avg_speed_kmh_90d"] == pytest.approx((100 + 30 + 60) / 3, rel=1e-15)


def test_the_tiers_follow_the_documented_cut_offs() -> None:
    assert RISK_CUTOFFS == ((0.5, "high"), (0.2, "medium"))  # as docs/history.md says
    assert RISK_FLOOR_KM == 1000
    table = [
        (0, 0.0, "low"),
        (0, 50_000.0, "low"),
        (1, 5_000.01, "low"),  # just under 0.2 per 1,000 km
        (1, 5_000.0, "medium"),  # 0.2
        (2, 5_000.0, "medium"),  # 0.4
        (1, 2_000.0, "high"),  # 0.5
        (1, 0.0, "high"),  # no km: as if 1,000 km, 1 per 1,000 km
        (1, 999.0, "high"),
        (4, 9_000.0, "medium"),  # 0.44
        (5, 9_000.0, "high"),  # 0.56
    ]
    for events, km, tier in table:
        assert risk_tier(events, km) == tier, (events, km)
    rng = random.Random(7)
    grid = [(events, km) for events, km, _ in table]
    grid += [(rng.randrange(0, 30), rng.uniform(0, 40_000)) for _ in range(2000)]
    frame = pl.DataFrame(grid, schema={"events": pl.Int64, "km": pl.Float64}, orient="row")
    tiers = frame.select(tier_expr(pl.col("events"), pl.col("km"))).to_series().to_list()
    assert tiers == [risk_tier(e, k) for e, k in grid]


def test_pair_distances_are_the_scorecards_haversine() -> None:
    rng = random.Random(3)
    points = [(rng.uniform(-89, 89), rng.uniform(-179, 179)) for _ in range(5000)]
    rows = [(a, b, a + rng.uniform(-0.01, 0.01), b + rng.uniform(-0.01, 0.01)) for a, b in points]
    frame = pl.DataFrame(rows, schema=["a", "b", "c", "d"], orient="row")
    got = frame.select(_haversine_km(*(pl.col(c) for c in "abcd"))).to_series().to_list()
    # Equal but for the last bit now and then: Polars' arcsin is not the C library's.
    assert got == pytest.approx([haversine_km(*r) for r in rows], rel=4e-16, abs=0)


def test_a_broken_lake_file_fails_naming_it_and_keeps_the_history(
    fleet: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lake, history = fleet
    before = (history / "drivers.parquet").read_bytes()
    broken = lake / f"date={HANDOVER.date()}" / "part-9.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")
    assert run(lake, history) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "history_refresh_failed" in err
    assert str(broken) in err
    assert (history / "drivers.parquet").read_bytes() == before
    assert [p.name for p in history.iterdir() if p.name.startswith(".")] == []


def test_a_truncated_alerts_file_fails_naming_it(
    fleet: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lake, history = fleet
    (victim,) = (lake / "alerts" / f"date={START.date()}").glob("*.parquet")
    victim.write_bytes(victim.read_bytes()[:40])
    before = (history / "drivers.parquet").read_bytes()
    assert run(lake, history) == cli.EXIT_FAILED
    assert str(victim) in capsys.readouterr().err
    assert (history / "drivers.parquet").read_bytes() == before


def test_no_readings_in_the_window_is_nothing_to_do(
    fleet: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lake, history = fleet
    before = (history / "drivers.parquet").read_bytes()
    code = cli.main(
        ["refresh", "--as-of", "2026-06-01", "--lake", str(lake), "--history", str(history)],
        settings_from_env=lambda: Settings.from_env({}),
    )
    assert code == cli.EXIT_FAILED
    assert "nothing to refresh" in capsys.readouterr().err
    assert (history / "drivers.parquet").read_bytes() == before


def test_a_broken_history_is_refused(
    fleet: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lake, history = fleet
    (history / "assignments.parquet").write_bytes(b"garbage")
    before = (history / "drivers.parquet").read_bytes()
    assert run(lake, history) == cli.EXIT_FAILED
    assert "assignments.parquet" in capsys.readouterr().err
    assert (history / "drivers.parquet").read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["refresh", "--as-of", "2026-12-01"], {"FLEET_HISTORY_DIR": "{history}"}),  # no lake
        (["refresh", "--lake", "{lake}"], {}),  # FLEET_HISTORY_DIR: the bundled sample
        (["refresh", "--lake", "{lake}", "--history", "{lake}/nowhere"], {}),
        (["refresh", "--lake", "{lake}/nowhere", "--history", "{history}"], {}),
        (["refresh", "--lake", "{lake}"], {"FLEET_TIMEZONE": "Mars/Olympus"}),
    ],
)
def test_bad_arguments_exit_2(
    fleet: tuple[Path, Path], argv: list[str], env: dict[str, str]
) -> None:
    lake, history = fleet
    before = (history / "drivers.parquet").read_bytes()
    sample = (SAMPLE_HISTORY_DIR / "drivers.parquet").read_bytes()

    def filled(text: str) -> str:
        return text.format(lake=lake, history=history)

    code = cli.main(
        [filled(a) for a in argv],
        settings_from_env=lambda: Settings.from_env({k: filled(v) for k, v in env.items()}),
    )
    assert code == cli.EXIT_USAGE
    assert (history / "drivers.parquet").read_bytes() == before
    assert (SAMPLE_HISTORY_DIR / "drivers.parquet").read_bytes() == sample


def test_an_as_of_that_is_no_day_exits_2(fleet: tuple[Path, Path]) -> None:
    lake, history = fleet
    with pytest.raises(SystemExit) as exit_:
        run(lake, history, "--as-of", "2026-13-01")
    assert exit_.value.code == cli.EXIT_USAGE


def test_the_file_is_replaced_atomically(fleet: tuple[Path, Path]) -> None:
    lake, history = fleet
    path = history / "drivers.parquet"
    inode = path.stat().st_ino
    assert run(lake, history) == cli.EXIT_OK
    assert path.stat().st_ino != inode  # a new file renamed into place, not a rewrite
    assert sorted(p.name for p in history.iterdir()) == ["assignments.parquet", "drivers.parquet"]
    again = path.read_bytes()
    assert run(lake, history) == cli.EXIT_OK
    assert path.read_bytes() == again  # the same day again: the same figures


def test_a_file_replaced_meanwhile_is_not_overwritten(fleet: tuple[Path, Path]) -> None:
    _, history = fleet
    path = history / "drivers.parquet"
    read_as = file_signature(path)
    frame = pl.read_parquet(path)
    operators = frame.with_columns(pl.col("name").str.to_uppercase())
    temporary = history / "new.parquet"
    operators.write_parquet(temporary)
    os.replace(temporary, path)  # an operator's new drivers.parquet
    with pytest.raises(RefreshError, match="replaced while the refresh ran"):
        write_drivers_file(history, frame, read_as)
    assert pl.read_parquet(path)["name"].to_list() == ["ADA", "BO", "CY", "DI"]
    assert sorted(p.name for p in history.iterdir()) == ["assignments.parquet", "drivers.parquet"]


def test_the_flows_store_uses_the_new_file_at_its_next_reload(fleet: tuple[Path, Path]) -> None:
    lake, history = fleet
    store = HistoryStore.for_directory(history, refresh_s=10)
    assert store.refresh()  # what a running flow holds: the old figures
    assert store.current().drivers["D1"].overspeed_events_90d == 9
    assert not store.refresh()  # nothing changed: nothing reloaded
    assert run(lake, history) == cli.EXIT_OK
    assert store.refresh()  # the next tick of its reload thread (every FLEET_HISTORY_REFRESH_S)
    d1 = store.current().drivers["D1"]
    assert (d1.overspeed_events_90d, d1.avg_speed_kmh_90d, d1.risk_tier) == (2, 55.0, "high")


def as_row(r: Reading) -> dict[str, Any]:
    at = EPOCH + r.ts_ms * MS
    return reading(r.truck_id, at, r.speed_kmh, lat=r.lat, lon=r.lon, event_id=r.event_id)


def random_fleet(
    rng: random.Random, window: Window
) -> tuple[list[Reading], list[AssignmentRow], list[dict[str, Any]]]:
    """Readings in bursts at the window's edges and inside it (gaps around 60 s, some
    without a position, ties, resends), overlapping assignments, alerts of three kinds."""
    trucks = ["T00001", "T00002", "T00003"]
    drivers = ["D1", "D2", "D3", "D4", "D9"]
    readings: list[Reading] = []
    for truck in trucks:
        for centre in (
            window.start_ms,
            window.end_ms,
            rng.randrange(window.start_ms, window.end_ms),
        ):
            ts = centre - rng.randrange(0, 600_000)
            lat, lon = rng.uniform(59, 61), rng.uniform(20, 25)
            for _ in range(rng.randrange(20, 60)):
                ts += rng.choice([0, 1, 5_000, 30_000, 59_999, 60_000, 60_001, 300_000])
                lat, lon = lat + rng.uniform(-0.003, 0.003), lon + rng.uniform(-0.003, 0.003)
                positioned = rng.random() > 0.1
                readings.append(
                    Reading(
                        f"{truck}-{len(readings)}",
                        truck,
                        ts,
                        rng.choice([0.0, 3.0, 5.0, 5.5, rng.uniform(0, 130)]),
                        lat if positioned else None,
                        lon if positioned else None,
                    )
                )
        # Exactly at the edges: a pair's first reading 60 s before the window, the first
        # instant, the last, and the end, each with a position.
        for ts in (window.start_ms - 60_000, window.start_ms, window.end_ms - 1, window.end_ms):
            readings.append(Reading(f"{truck}-edge-{ts}", truck, ts, 50.0, 60.0 + ts % 7, 22.0))
    readings += rng.sample(readings, len(readings) // 10)  # resent: the same reading again
    assignments: list[AssignmentRow] = []
    for truck in trucks:
        for _ in range(6):
            start = rng.randrange(window.start_ms - 3 * 86_400_000, window.end_ms)
            length = rng.choice([None, 3_600_000, 86_400_000, 40 * 86_400_000])
            assignments.append(
                (truck, rng.choice(drivers), start, None if length is None else start + length)
            )
    alerts = []
    for n in range(40):
        end = rng.choice([window.start_ms, window.end_ms, window.end_ms - 1])
        end = rng.choice([end, rng.randrange(window.start_ms - 86_400_000, window.end_ms)])
        rule, details = rng.choice(
            [
                ("sustained_speeding", "{}"),
                ("harsh_braking", '{"kind": "deceleration"}'),
                ("yard_slow_zone", '{"kind": "zone_over"}'),
            ]
        )
        alerts.append(
            alert(f"a{n % 35}", rule, rng.choice([*drivers, None]), EPOCH + end * MS, details)
        )
    return readings, assignments, alerts


@pytest.mark.parametrize("seed", range(6))
def test_the_history_is_ninety_days_of_the_reference_scorecards(tmp_path: Path, seed: int) -> None:
    """The 90 days' figures are the sums of the 90 local days' scorecards of the plain
    reference (tests/reference_scorecards.py, which shares no code with the product): the
    readings, the distance, the speeding alerts; and the moving mean from the same readings."""
    zone = "Europe/Helsinki" if seed % 2 else "UTC"
    window = Window.as_of_day(AS_OF, ZoneInfo(zone))
    readings, assignments, alerts = random_fleet(random.Random(seed), window)
    lake, history = tmp_path / "lake", tmp_path / "history"
    write_lake(lake, [as_row(r) for r in readings])
    # The same alert id twice (a redelivery) must be the same alert.
    firsts: dict[str, dict[str, Any]] = {}
    alerts = [firsts.setdefault(a["alert_id"], a) for a in alerts]
    write_alerts(lake, alerts)
    write_history(history)
    pl.DataFrame(
        assignments,
        schema={
            "truck_id": pl.String,
            "driver_id": pl.String,
            "valid_from": pl.Int64,
            "valid_to": pl.Int64,
        },
        orient="row",
    ).with_columns(pl.col("valid_from", "valid_to").cast(pl.Datetime("ms", "UTC"))).write_parquet(
        history / "assignments.parquet"
    )

    index = load_history_dir(history)
    stats = driver_stats(lake, index, window)
    got = {row["driver_id"]: row for row in stats.by_driver.iter_rows(named=True)}
    # Split into buckets of trucks (as a large lake is): the same figures.
    split = driver_stats(lake, index, window, bucket_rows=100)
    assert split.by_driver.drop("km_driven_90d", "avg_speed_kmh_90d").equals(
        stats.by_driver.drop("km_driven_90d", "avg_speed_kmh_90d")
    )
    for column in ("km_driven_90d", "avg_speed_kmh_90d"):
        for a, b in zip(split.by_driver[column], stats.by_driver[column], strict=True):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-12), column

    documents = [
        {
            **a,
            "window_end": (EPOCH + a["window_end"] * MS).isoformat(),
            "severity": "warning",
        }
        for a in alerts
    ]
    cards = reference_scorecards(readings, assignments, documents, timezone=zone)
    days = {(window.first_day + timedelta(days=d)).isoformat() for d in range(90)}
    expected: dict[str, dict[str, Any]] = {}
    for (driver, day), card in cards.items():
        if driver is None or day not in days:
            continue
        sums = expected.setdefault(driver, {"readings": 0, "km": [], "events": 0})
        sums["readings"] += card["readings"]
        sums["km"].append(card["distance_km"])
        sums["events"] += sum(n for rule, n in card["alerts"].items() if rule != "harsh_braking")
    expected = {d: e for d, e in expected.items() if e["readings"] or e["events"]}
    assert set(got) == set(expected)
    unique = {(r.truck_id, r.event_id): r for r in reversed(readings)}.values()
    for driver, want in expected.items():
        row = got[driver]
        assert row["readings"] == want["readings"], driver
        assert row["overspeed_events_90d"] == want["events"], driver
        assert math.isclose(row["km_driven_90d"], math.fsum(want["km"]), rel_tol=1e-9, abs_tol=1e-9)
        moving = [
            r.speed_kmh
            for r in unique
            if window.start_ms <= r.ts_ms < window.end_ms
            and r.speed_kmh > 5
            and reference_driver(assignments, r.truck_id, r.ts_ms) == driver
        ]
        if moving:
            assert row["avg_speed_kmh_90d"] == pytest.approx(statistics.fmean(moving), rel=1e-12)
        else:
            assert row["avg_speed_kmh_90d"] is None


def test_the_performance_page_shows_the_committed_refresh_figures() -> None:
    from benchmarks.history_refresh import markdown

    results_dir = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    results = json.loads((results_dir / "history_refresh.json").read_text())
    assert results["lake_rows"] >= 50_000_000  # the size, not a quick run
    shown = (results_dir / "history_refresh.md").read_text()
    assert markdown(results) == shown
    page = (results_dir.parents[1] / "docs" / "performance.md").read_text()
    assert shown.strip() in page
