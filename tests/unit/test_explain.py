"""``python -m fleetwatch.explain`` on the real output of a demo-sized run: the demo's road
fleet (30 trucks, 20 minutes at 1 Hz, resends and disorder included) and one truck cruising
too fast, archived as the lake; the real backfill's alerts under the sample catalogue (posted
limits and zones included), archived with the alert lake's writer. Each kind of rule that
fired is explained and reproduced; a tampered alert, another catalogue, an unknown id and bad
arguments are refused with their exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pytest
from bytewax.testing import run_main
from matplotlib.image import imread

from connectors.alert_lake import alert_files, alert_lake, alert_row, alerts_frame
from connectors.catalogue import load_catalogue
from connectors.history import load_history_dir
from connectors.jsonl_sink import JsonlSink
from connectors.parquet import write_readings
from connectors.parquet_input import ParquetReadingsSource, resolve_inputs
from connectors.road_limits import PostedLimits
from connectors.roads import default_extract
from dataflows.backfill import build_flow, dead_letter_path
from devtools.history_generator import HistoryShape
from devtools.history_generator import write as write_history
from devtools.road_fleet import RoadFleetOptions, RoadFleetSimulator
from devtools.simulator import FleetConfig
from domain.alerts import Alert
from domain.catalogue import Catalogue, RuleBook
from domain.history import Assignment, HistoryIndex
from domain.readings import Reading
from domain.rules import RuleConfig
from domain.timestamps import to_epoch_ms
from fleetwatch.explain import (
    CHART_DPI,
    CHART_SIZE_IN,
    EXIT_FAILED,
    EXIT_NOT_REPRODUCED,
    EXIT_OK,
    EXIT_USAGE,
    main,
)
from runtime.progress import Progress
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
RULES, ZONES = ROOT / "catalogue" / "rules", ROOT / "catalogue" / "zones.geojson"
# The demo's depots (devtools/demo.py): one lies in the sample yard zone.
DEPOTS = ((60.16567, 24.95239), (60.17822, 24.95096), (60.16628, 24.93775))
START_MS = to_epoch_ms(datetime(2026, 12, 1, 12, tzinfo=UTC))  # version 3 in force
TRUCKS, DRIVE_S = 30, 1_200
CRUISER = "T09999"  # in no history: no driver, no class; no position
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cruiser() -> list[Reading]:
    """105 km/h for two minutes from 12:05, and for two and a half from 12:15: each burst
    fires a count_over and a duration_over; the second ones only once the first ones'
    cooldowns (600 s) are over, so they cover readings from after those."""
    bursts = [(5, [105.0] * 121 + [60.0] * 30), (15, [105.0] * 150 + [60.0] * 10)]
    return [
        Reading(
            f"{CRUISER}-{minute:02d}-{n:04d}", CRUISER, START_MS + minute * 60_000 + n * 1_000, v
        )
        for minute, speeds in bursts
        for n, v in enumerate(speeds)
    ]


@dataclass(frozen=True)
class Run:
    """The demo-sized run: its lake (with the archived alerts), history and alerts."""

    lake: Path
    history: Path
    alerts: list[Alert]
    catalogue: Catalogue
    index: HistoryIndex

    def kind_of(self, alert: Alert) -> str:
        (version,) = [v for v in self.catalogue.versions if v.version == alert.rule_version]
        (rule,) = [r for r in version.rules if r.id == alert.rule]
        return rule.definition.kind.name


@pytest.fixture(scope="module")
def roads_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "explain-roads-cache"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, roads_cache: Path) -> Run:
    tmp = tmp_path_factory.mktemp("explain")
    history_dir = tmp / "history"
    write_history(HistoryShape(trucks=TRUCKS, start=date(2026, 11, 30), days=3), history_dir)
    index = load_history_dir(history_dir)
    config = FleetConfig(
        trucks=TRUCKS,
        seed=42,
        start_ms=START_MS,
        interval_s=1.0,
        resend_share=0.01,
        disorder_s=2.0,
        spike_chance=0.0005,
    )
    options = RoadFleetOptions(depots=DEPOTS, vehicle_classes=dict(index.vehicle_classes))
    fleet = RoadFleetSimulator(config, options)
    readings = [m.reading for m in fleet.messages(TRUCKS * DRIVE_S) if m.reading is not None]
    lake = tmp / "lake"
    # Arrival order, resends included: as dataflows.archive writes fleet.telemetry.
    write_readings(readings + cruiser(), lake / "date=2026-12-01" / "part.parquet")

    # The real backfill over the lake, as `python -m bytewax.run dataflows.backfill` runs it.
    catalogue = load_catalogue(RULES, ZONES)
    limits = PostedLimits.load(default_extract(), roads_cache, 20.0)
    out = tmp / "backfill-alerts.jsonl"
    flow = build_flow(
        ParquetReadingsSource(resolve_inputs(str(lake)), catalogue.prefilter),
        JsonlSink(out),
        JsonlSink(dead_letter_path(out)),
        RuleConfig(),
        index,
        Progress(),
        RuleBook(catalogue, index.vehicle_classes),
        limits,
    )
    run_main(flow)
    alerts = [msgspec.json.decode(line, type=Alert) for line in out.read_bytes().splitlines()]
    # Archived as dataflows.archive_alerts does: one roll into <lake>/alerts/date=.../.
    rows = alerts_frame([alert_row(a) for a in alerts])
    alert_lake(lake).write_rows(0, 0, len(alerts) - 1, rows)
    return Run(lake, history_dir, alerts, catalogue, index)


def environ(run: Run, roads_cache: Path, **extra: str) -> dict[str, str]:
    return {
        "FLEET_LAKE_DIR": str(run.lake),
        "FLEET_HISTORY_DIR": str(run.history),
        "FLEET_RULES": str(RULES),
        "FLEET_ZONES": str(ZONES),
        "FLEET_ROADS_CACHE": str(roads_cache),
        **extra,
    }


@pytest.fixture
def explain(demo: Run, roads_cache: Path) -> Any:
    def call(args: list[str], **extra: str) -> tuple[int, str]:
        printed: list[str] = []
        env = environ(demo, roads_cache, **extra)
        code = main(args, settings_from_env=lambda: Settings.from_env(env), out=printed.append)
        return code, "".join(printed)

    return call


def one_of_each_kind(run: Run) -> dict[str, Alert]:
    chosen: dict[str, Alert] = {}
    for alert in sorted(run.alerts, key=lambda a: (a.window_end, a.alert_id)):
        chosen.setdefault(run.kind_of(alert), alert)
    return chosen


# -- reproduced ----------------------------------------------------------------------------


def test_the_demo_run_fires_most_kinds(demo: Run) -> None:
    kinds = set(one_of_each_kind(demo))
    # What the explanations below cover: every kind but the rare ones must have fired.
    assert {"instant_over", "count_over", "duration_over", "deceleration"} <= kinds
    assert {"zone_over", "posted_limit_over"} <= kinds


def test_explain_reproduces_an_alert_of_each_kind(demo: Run, explain: Any, tmp_path: Path) -> None:
    for kind, alert in one_of_each_kind(demo).items():
        png = tmp_path / f"{kind}.png"
        code, text = explain([alert.alert_id, "--out", str(png)])
        assert code == EXIT_OK, f"{kind}: {text}"
        assert "**Reproduced**" in text
        assert f"| rule | `{alert.rule}` |" in text
        assert f"| kind | `{kind}` |" in text
        assert f"| version | {alert.rule_version} (in force from" in text
        for event_id in alert.event_ids:
            assert f"| `{event_id}` |" in text, (kind, event_id)
        rows = re.findall(r"^\| \d+ \| `", text, re.M)
        assert len(rows) == len(alert.event_ids)  # one row per covered reading
        assignment = demo.index.assignment_at(alert.truck_id, to_epoch_ms(_at(alert.window_end)))
        if alert.driver_id is None:
            assert assignment is None
            assert "assigns no driver" in text
        else:
            assert assignment is not None
            assert assignment.driver_id == alert.driver_id
            assert f"`{alert.driver_id}` (" in text
            assert "The archived alert names the same driver" in text
        if kind == "posted_limit_over":
            limit = alert.details["posted_limit_kmh"]
            assert f"| {limit:g} (" in text  # the covered readings' posted limits
        assert png.read_bytes().startswith(PNG_MAGIC)
        image = imread(png)
        width, height = (round(n * CHART_DPI) for n in CHART_SIZE_IN)
        assert image.shape[:2] == (height, width)
        assert (np.asarray(image)[:, :, :3] < 0.98).any(axis=2).mean() > 0.02  # drawn on


def test_the_default_png_is_named_after_the_alert(
    demo: Run, explain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    alert = demo.alerts[0]
    code, _ = explain([alert.alert_id])
    assert code == EXIT_OK
    assert (tmp_path / f"explain-{alert.alert_id}.png").stat().st_size > 10_000


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_an_alert_after_a_cooldown_is_reproduced(demo: Run, explain: Any, tmp_path: Path) -> None:
    # Replayed from the truck's first reading, the cooldowns of the first burst's alerts hold
    # the second burst's first readings back, as in the stream. A replay that started empty
    # near the window would count them and fire earlier, under another alert_id.
    cooldown_ends = {
        "sustained_speeding": "2026-12-01T12:15:04.000Z",  # 12:05:04 + 600 s
        "speeding_for_a_minute": "2026-12-01T12:16:00.000Z",  # 12:06:00 + 600 s
    }
    cooled = {
        a.rule: a
        for a in demo.alerts
        if a.truck_id == CRUISER
        and a.rule in cooldown_ends
        and a.window_start >= "2026-12-01T12:15"
    }
    assert {rule: a.window_start for rule, a in cooled.items()} == cooldown_ends
    for alert in cooled.values():
        code, text = explain([alert.alert_id, "--out", str(tmp_path / "x.png")])
        assert code == EXIT_OK, text
        assert "assigns no driver" in text


# -- not reproduced ------------------------------------------------------------------------


def tampered_lake(run: Run, target: Path, change: dict[str, Any], alert: Alert) -> Path:
    """A copy of the lake whose archived ``alert`` has ``change`` applied."""
    shutil.copytree(run.lake, target)
    (file,) = alert_files(target)
    frame = pl.read_parquet(file)
    for name, value in change.items():
        column = frame[name].to_list()
        column[frame["alert_id"].to_list().index(alert.alert_id)] = value
        frame = frame.with_columns(pl.Series(name, column, dtype=frame.schema[name]))
    frame.write_parquet(file)
    return target


def test_a_tampered_alert_is_not_reproduced(demo: Run, explain: Any, tmp_path: Path) -> None:
    alert = next(a for a in demo.alerts if a.count >= 2)
    lake = tampered_lake(demo, tmp_path / "lake", {"event_ids": alert.event_ids[:-1]}, alert)
    png = tmp_path / "trace.png"
    code, text = explain([alert.alert_id, "--lake", str(lake), "--out", str(png)])
    assert code == EXIT_NOT_REPRODUCED
    assert "**Not reproduced**" in text
    assert f"only replayed: `{alert.event_ids[-1]}`" in text
    assert png.exists()  # drawn all the same


def test_another_catalogue_does_not_reproduce_and_says_the_rules_changed(
    demo: Run, explain: Any, tmp_path: Path
) -> None:
    alert = next(a for a in demo.alerts if a.rule == "instant_overspeed")
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "0001-builtin.yaml", rules)
    code, text = explain([alert.alert_id, "--rules", str(rules), "--out", str(tmp_path / "x.png")])
    assert code == EXIT_NOT_REPRODUCED
    assert "- `rule_version`: archived 3, replayed 1" in text
    assert "the rules changed since" in text
    assert "has version 1 (0001-builtin.yaml)" in text


def test_a_version_the_archive_never_had_is_not_reproduced(
    demo: Run, explain: Any, tmp_path: Path
) -> None:
    alert = next(a for a in demo.alerts if a.rule == "harsh_braking")
    lake = tampered_lake(demo, tmp_path / "lake", {"rule_version": 2}, alert)
    code, text = explain([alert.alert_id, "--lake", str(lake), "--out", str(tmp_path / "x.png")])
    assert code == EXIT_NOT_REPRODUCED
    assert "- `rule_version`: archived 2, replayed 3" in text


# -- refused -------------------------------------------------------------------------------


def test_an_unknown_id_exits_1(explain: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = explain(["0" * 32])
    assert code == EXIT_FAILED
    assert text == ""
    assert "no archived alert has the id " + "0" * 32 in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["not an id!"], {}, "is no alert_id"),
        (["a" * 32, "--lake", "/nonexistent/lake"], {}, "not a directory"),
        (["a" * 32], {"FLEET_LAKE_DIR": ""}, "no lake"),
        (["a" * 32, "--history", "/nonexistent/history"], {}, "history cannot be loaded"),
        (["a" * 32, "--rules", "/nonexistent/rules"], {}, "rules catalogue"),
        (["a" * 32], {"FLEET_THRESHOLD_KMH": "fast"}, "FLEET_THRESHOLD_KMH"),
    ],
)
def test_bad_arguments_exit_2(
    explain: Any,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    extra: dict[str, str],
    message: str,
) -> None:
    code, text = explain(args, **extra)
    assert code == EXIT_USAGE
    assert text == ""
    assert message in capsys.readouterr().err


def test_no_alert_id_is_a_usage_error(explain: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        explain([])
    assert exited.value.code == EXIT_USAGE


def test_the_command_as_an_operator_runs_it(demo: Run, roads_cache: Path, tmp_path: Path) -> None:
    alert = next(a for a in demo.alerts if a.rule == "instant_overspeed")
    png = tmp_path / "trace.png"
    done = subprocess.run(
        [sys.executable, "-m", "fleetwatch.explain", alert.alert_id, "--out", str(png)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **environ(demo, roads_cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.startswith(f"# Why alert `{alert.alert_id}` fired")
    assert png.exists()


# -- the driver assignment -----------------------------------------------------------------


def test_the_assignment_is_the_span_the_flows_resolve() -> None:
    hour = 3_600_000
    index = HistoryIndex.build(
        [],
        [
            Assignment("T1", "D1", 0, 10 * hour),
            Assignment("T1", "D2", 4 * hour, 6 * hour),  # a later row overlaps D1's
            Assignment("T1", "D3", 12 * hour, None),
        ],
    )
    cases = [
        (-1, None),
        (0, Assignment("T1", "D1", 0, 4 * hour)),
        (5 * hour, Assignment("T1", "D2", 4 * hour, 6 * hour)),
        (6 * hour, Assignment("T1", "D1", 6 * hour, 10 * hour)),  # valid_to is exclusive
        (11 * hour, None),
        (99 * hour, Assignment("T1", "D3", 12 * hour, None)),
    ]
    for ts, expected in cases:
        assert index.assignment_at("T1", ts) == expected, ts
        assert index.driver_id_at("T1", ts) == (expected.driver_id if expected else None)
    assert index.assignment_at("T9", 0) is None
