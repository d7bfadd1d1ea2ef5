"""fleetwatch.whatif on a generated lake (real Parquet files, real backfill runs, no mocks):
what a candidate adds, removes and changes, counts that equal the two runs' outputs, the
window, an invalid candidate, the chart, and the command as an operator runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.image
import polars as pl
import pytest
from bytewax.testing import run_main

from connectors.history import load_history_dir
from connectors.jsonl_sink import JsonlSink
from connectors.parquet import READING_SCHEMA
from connectors.parquet_input import ParquetReadingsSource, resolve_inputs
from connectors.road_limits import PostedLimits
from connectors.roads import default_extract
from dataflows.backfill import build_flow, dead_letter_path
from domain.catalogue import RuleBook
from domain.rules import RuleConfig
from fleetwatch.rules import check
from fleetwatch.whatif import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    NO_DRIVER,
    Report,
    changes_table,
    compare,
    main,
    parse_args,
    read_jsonl,
    render_markdown,
    run,
)
from runtime.progress import Progress
from runtime.settings import SAMPLE_HISTORY_DIR, Settings

ROOT = Path(__file__).resolve().parents[2]
DAYS = ("2026-11-24", "2026-11-25")  # inside the sample history's assignments
FAST = ("T00000", "T00001")  # 100 km/h and bursts of 135: over 90 and over 80 alike
MEDIUM = ("T00002", "T00003")  # 85 km/h: over 80, not over 90
SLOW = ("T00004",)  # 50 km/h: nothing
UNKNOWN = "ZZ999"  # in no assignment: its alerts have no driver

VERSION = """\
version: {version}
effective_from: 2026-01-01T00:00:00Z
rules:
  - id: instant_overspeed
    kind: instant_over
    speed_over_kmh: 130
    severity: critical
  - id: sustained_speeding
    kind: count_over
    speed_over_kmh: {threshold}
    count: 5
    within_s: 600
"""


def speed(truck: str, n: int) -> float:
    if truck in FAST or truck == UNKNOWN:
        return 135.0 if n % 40 == 7 else 100.0
    if truck in MEDIUM:
        return 85.0 if n % 3 else 60.0
    return 50.0


def write_lake(lake: Path, days: tuple[str, ...] = DAYS) -> None:
    """date=YYYY-MM-DD/part.parquet with the lake's columns (CONTRACT.md section 8): each
    truck drives 08:00-10:00 UTC, a reading every 20 s."""
    for day in days:
        start = datetime.fromisoformat(f"{day}T08:00:00+00:00")
        rows: dict[str, list[Any]] = {c: [] for c in READING_SCHEMA.names()}
        for truck in (*FAST, *MEDIUM, *SLOW, UNKNOWN):
            for n in range(360):
                rows["event_id"].append(f"{truck}-{day}-{n:04d}")
                rows["truck_id"].append(truck)
                rows["ts"].append(start + timedelta(seconds=20 * n))
                rows["speed_kmh"].append(speed(truck, n))
                rows["lat"].append(60.17 + n * 1e-4)
                rows["lon"].append(24.94)
        path = lake / f"date={day}" / "part.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=READING_SCHEMA).write_parquet(path)


def write_rules(directory: Path, threshold: float = 90, version: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "v1.yaml").write_text(VERSION.format(version=version, threshold=threshold))
    return directory


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lake")
    write_lake(path)
    return path


def lake_rules(lake: Path, rules: Path) -> list[str]:
    return ["--lake", str(lake), "--rules", str(rules)]


def settings(**environ: str) -> Settings:
    return Settings.from_env({"FLEET_HISTORY_DIR": str(SAMPLE_HISTORY_DIR), **environ})


def whatif(args: list[str], **environ: str) -> tuple[int, str]:
    printed: list[str] = []
    code = main(args, settings_from_env=lambda: settings(**environ), out=printed.append)
    return code, "".join(printed)


def report_of(args: list[str], **environ: str) -> Report:
    return run(parse_args(args), settings(**environ))


def total(markdown: str, label: str) -> int:
    found = re.search(rf"^\| {re.escape(label)}[^|]* \| (\d+) \|$", markdown, re.M)
    assert found, f"no {label!r} row in:\n{markdown}"
    return int(found.group(1))


def ids(alerts: list[dict[str, Any]]) -> set[str]:
    return {str(a["alert_id"]) for a in alerts}


def by_id(alert: dict[str, Any]) -> str:
    return str(alert["alert_id"])


def per_rule_day(alerts: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((str(a["window_end"])[:10], str(a["rule"])) for a in alerts)


# -- what a candidate changes ------------------------------------------------------------


def test_a_lower_count_over_threshold_adds_alerts_and_removes_none(
    lake: Path, tmp_path: Path
) -> None:
    baseline = write_rules(tmp_path / "baseline", threshold=90, version=1)
    candidate = write_rules(tmp_path / "candidate", threshold=80, version=2)
    out = tmp_path / "out"
    code, markdown = whatif(
        [*lake_rules(lake, candidate), "--baseline", str(baseline), "--out-dir", str(out)]
    )
    assert code == EXIT_OK

    before = read_jsonl(out / "baseline" / "alerts.jsonl")
    after = read_jsonl(out / "candidate" / "alerts.jsonl")
    added, removed = ids(after) - ids(before), ids(before) - ids(after)
    assert added
    assert not removed
    # Only the 85 km/h trucks gain alerts, all sustained_speeding; the others keep theirs,
    # changed only in what the version says (its number and the threshold it used).
    assert {a["truck_id"] for a in after if a["alert_id"] in added} == set(MEDIUM)
    assert {a["rule"] for a in after if a["alert_id"] in added} == {"sustained_speeding"}

    # The Markdown's counts are those of the two runs' outputs.
    assert total(markdown, "baseline alerts") == len(before) > 0
    assert total(markdown, "candidate alerts") == len(after)
    assert total(markdown, "added") == len(added)
    assert total(markdown, "removed") == 0
    changed = [a for a in after if a["alert_id"] in ids(before) and a not in before]
    assert total(markdown, "changed") == len(changed) > 0
    assert total(markdown, "unchanged") == len(after) - len(added) - len(changed)
    for (day, rule), n in (per_rule_day(before) + per_rule_day(after)).items():
        b, c = per_rule_day(before)[(day, rule)], per_rule_day(after)[(day, rule)]
        assert f"| {day} | {rule} | {b} | {c} | " in markdown, (day, rule, n)
    for truck in MEDIUM:
        gained = sum(1 for a in after if a["alert_id"] in added and a["truck_id"] == truck)
        assert f"| {truck} | {gained} | 0 | 0 |" in markdown

    # diff.jsonl: one line per differing alert.
    lines = [json.loads(line) for line in (out / "diff.jsonl").read_text().splitlines()]
    assert Counter(line["change"] for line in lines) == {
        "added": len(added),
        "changed": len(changed),
    }
    assert {line["alert"]["alert_id"] for line in lines if line["change"] == "added"} == added
    for line in lines:
        if line["change"] == "changed":
            assert line["baseline"] in before
            assert line["alert"] in after
            assert line["baseline"]["rule_version"] == 1
            assert line["alert"]["rule_version"] == 2
    assert (out / "report.md").read_text() == markdown


def test_the_report_object_holds_the_runs_counts(lake: Path, tmp_path: Path) -> None:
    report = report_of(
        [
            *lake_rules(lake, write_rules(tmp_path / "c", threshold=80)),
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    before, after = report.baseline.alerts, report.candidate.alerts
    assert before == read_jsonl(tmp_path / "out" / "baseline" / "alerts.jsonl")
    assert after == read_jsonl(tmp_path / "out" / "candidate" / "alerts.jsonl")
    c = report.comparison
    assert (c.baseline_total, c.candidate_total) == (len(before), len(after))
    assert c.total("added") == len(ids(after) - ids(before)) > 0
    assert c.total("removed") == len(ids(before) - ids(after)) == 0
    assert c.per_rule_day == {
        key: [per_rule_day(before)[key], per_rule_day(after)[key]]
        for key in per_rule_day(before) | per_rule_day(after)
    }
    # By driver: the sample history's drivers, and "no driver" for the unassigned truck.
    drivers = {str(a["driver_id"]) for a in after if a["alert_id"] in ids(after) - ids(before)}
    assert drivers
    assert drivers <= set(c.by_driver)
    assert all(d.startswith("D") for d in drivers)
    # Built-in rules against the same rules in YAML: the same alerts, each "changed" in
    # rule_version (0 -> 1) and details ({} -> the kind's); the unknown truck has no driver.
    assert c.changed_fields.keys() >= {"rule_version", "details", "threshold_kmh"}
    assert c.by_driver[NO_DRIVER].changed > 0
    assert render_markdown(report).count("| no driver |") == 1


def test_an_identical_candidate_changes_nothing(lake: Path, tmp_path: Path) -> None:
    baseline = write_rules(tmp_path / "baseline")
    candidate = tmp_path / "candidate"
    shutil.copytree(baseline, candidate)
    report = report_of(
        [
            *lake_rules(lake, candidate),
            "--baseline",
            str(baseline),
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    assert report.baseline.alerts == report.candidate.alerts
    assert report.comparison.differences == []
    assert report.comparison.unchanged == len(report.baseline.alerts) > 0
    assert (tmp_path / "out" / "diff.jsonl").read_bytes() == b""
    markdown = render_markdown(report)
    assert total(markdown, "added") == total(markdown, "removed") == 0
    assert markdown.count("No differing alerts.") == 2


def test_the_default_baseline_is_fleet_rules_when_set(lake: Path, tmp_path: Path) -> None:
    live = write_rules(tmp_path / "live", threshold=80)
    report = report_of(
        ["--lake", str(lake), "--rules", str(live), "--out-dir", str(tmp_path / "out")],
        FLEET_RULES=str(live),
    )
    assert report.baseline.rules.source == f"FLEET_RULES={live}"
    assert report.comparison.differences == []


POSTED = """\
version: 1
effective_from: 2026-01-01T00:00:00Z
rules:
  - id: over_the_posted_limit
    kind: posted_limit_over
    over_kmh: 10
"""


def test_a_posted_limit_candidate_judges_each_reading_by_its_road(
    lake: Path, tmp_path: Path
) -> None:
    # The lake's trucks drive north through central Helsinki: the readings matched to a road
    # get its posted limit (FLEET_ROADS: the default extract), as the flows give them.
    candidate = tmp_path / "posted"
    candidate.mkdir()
    (candidate / "v1.yaml").write_text(POSTED)
    cache = str(tmp_path / "roads-cache")
    report = report_of(
        ["--lake", str(lake), "--rules", str(candidate), "--out-dir", str(tmp_path / "out")],
        FLEET_ROADS_CACHE=cache,
    )
    posted = [a for a in report.candidate.alerts if a["rule"] == "over_the_posted_limit"]
    assert posted
    assert all(a["details"]["posted_limit_kmh"] == a["threshold_kmh"] for a in posted)
    # The very alerts of the backfill with the flows' road network.
    catalogue = check(candidate)
    history = load_history_dir(SAMPLE_HISTORY_DIR)
    out = tmp_path / "backfill.jsonl"
    flow = build_flow(
        ParquetReadingsSource(resolve_inputs(str(lake)), catalogue.prefilter),
        JsonlSink(out),
        JsonlSink(dead_letter_path(out)),
        RuleConfig(),
        history,
        Progress(),
        RuleBook(catalogue, history.vehicle_classes),
        PostedLimits.load(default_extract(), Path(cache), 20.0),
    )
    run_main(flow)
    assert sorted(report.candidate.alerts, key=by_id) == sorted(read_jsonl(out), key=by_id)


def test_the_window_cuts_the_readings_before_the_rules(lake: Path, tmp_path: Path) -> None:
    candidate = write_rules(tmp_path / "c", threshold=80)
    report = report_of(
        [
            *lake_rules(lake, candidate),
            *("--baseline", str(candidate), "--out-dir", str(tmp_path / "out")),
            *("--from", "2026-11-25", "--to", "2026-11-25T09:00:00Z"),
        ]
    )
    alerts = report.candidate.alerts
    assert alerts
    assert all("2026-11-25T08:00" <= a["window_start"] < "2026-11-25T09:00" for a in alerts)
    assert report.span.rows == 6 * 180  # six trucks, a reading every 20 s for an hour
    assert not (tmp_path / "out" / "readings-in-window.parquet").exists()
    # The same as a plain backfill over that hour's readings, field for field.
    hour = pl.read_parquet(lake / "date=2026-11-25" / "part.parquet").filter(
        pl.col("ts") < datetime(2026, 11, 25, 9, tzinfo=UTC)
    )
    hour.write_parquet(tmp_path / "hour.parquet")
    direct = backfill(tmp_path / "hour.parquet", candidate, tmp_path / "direct.jsonl")
    assert sorted(direct, key=by_id) == sorted(alerts, key=by_id)
    assert "## Alerts per rule per day" in render_markdown(report)
    assert "| 2026-11-24 |" not in render_markdown(report)
    assert "empty rule state" in render_markdown(report)


def test_a_window_without_readings_reports_nothing_and_says_so(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = report_of(
        [
            *lake_rules(lake, write_rules(tmp_path / "c")),
            "--from",
            "2027-01-01",
            "--out-dir",
            str(out),
        ]
    )
    assert report.span.rows == 0
    assert report.comparison.differences == []
    assert "no readings were replayed" in render_markdown(report)
    for side in ("baseline", "candidate"):
        assert (out / side / "alerts.jsonl").read_bytes() == b""
        assert (out / side / "alerts.dlq.jsonl").read_bytes() == b""


def backfill(lake: Path, rules: Path, out: Path) -> list[dict[str, Any]]:
    """dataflows.backfill's flow over ``lake`` under ``rules``, on its own."""
    catalogue = check(rules)
    history = load_history_dir(SAMPLE_HISTORY_DIR)
    flow = build_flow(
        ParquetReadingsSource(resolve_inputs(str(lake)), catalogue.lowest_relevant_kmh),
        JsonlSink(out),
        JsonlSink(dead_letter_path(out)),
        RuleConfig(),
        history,
        Progress(interval_s=3600),
        RuleBook(catalogue, history.vehicle_classes),
    )
    run_main(flow)
    return read_jsonl(out)


# -- refusals ----------------------------------------------------------------------------


def test_an_invalid_candidate_exits_2_naming_file_rule_and_field(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = write_rules(tmp_path / "c")
    (candidate / "v2.yaml").write_text(
        VERSION.format(version=2, threshold=80)
        .replace("2026-01-01", "2026-11-25")
        .replace("count: 5", "count: 0")
        .replace("severity: critical", "severity: loud")
    )
    out = tmp_path / "out"
    code, printed = whatif(["--lake", str(lake), "--rules", str(candidate), "--out-dir", str(out)])
    assert code == EXIT_USAGE
    assert printed == ""
    errors = capsys.readouterr().err
    assert "v2.yaml: rule 'sustained_speeding': field 'count':" in errors
    assert "v2.yaml: rule 'instant_overspeed': field 'severity':" in errors
    assert not out.exists(), "nothing replayed, nothing written"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--from", "yesterday"], "--from:", id="bad --from"),
        pytest.param(["--from", "2026-11-25", "--to", "2026-11-24"], "--to must be", id="empty"),
        pytest.param(["--from", "2026-11-25T00:00:00"], "--from:", id="no offset"),
    ],
)
def test_bad_windows_exit_2(
    lake: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    rules = write_rules(tmp_path / "c")
    code, _ = whatif(["--lake", str(lake), "--rules", str(rules), *args])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(
            lambda path: path.write_text("not parquet"), "cannot read the lake", id="not parquet"
        ),
        pytest.param(
            lambda path: pl.DataFrame({"event_id": ["e"], "ts": ["2026-11-24"]}).write_parquet(
                path
            ),
            "no column 'truck_id', 'speed_kmh', 'lat', 'lon'",
            id="columns missing",
        ),
        pytest.param(
            lambda path: pl.DataFrame(
                {c: ["x"] for c in ("event_id", "truck_id", "ts")}
                | {c: [1.0] for c in ("speed_kmh", "lat", "lon")}
            ).write_parquet(path),
            "column 'ts' is String, expected a timestamp",
            id="ts not a timestamp",
        ),
    ],
)
def test_an_unreadable_lake_exits_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    write: Callable[[Path], object],
    message: str,
) -> None:
    (tmp_path / "lake").mkdir()
    write(tmp_path / "lake" / "part.parquet")
    rules = write_rules(tmp_path / "c")
    code, printed = whatif(
        [*lake_rules(tmp_path / "lake", rules), "--out-dir", str(tmp_path / "o")]
    )
    assert code == EXIT_FAILED
    assert printed == ""
    assert message in capsys.readouterr().err


def test_a_used_out_dir_is_refused(lake: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "diff.jsonl").write_text("earlier\n")
    rules = write_rules(tmp_path / "c")
    code, _ = whatif(
        ["--lake", str(lake), "--rules", str(rules), "--out-dir", str(tmp_path / "out")]
    )
    assert code == EXIT_USAGE
    assert (tmp_path / "out" / "diff.jsonl").read_text() == "earlier\n"


# -- the chart ---------------------------------------------------------------------------


def test_the_chart_is_a_png_of_the_stated_size(lake: Path, tmp_path: Path) -> None:
    report = report_of(
        [
            *lake_rules(lake, write_rules(tmp_path / "c", threshold=80)),
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    png = report.chart_path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert matplotlib.image.imread(report.chart_path).shape == (500, 1000, 4)
    assert list(report.comparison.daily()) == list(DAYS)


def test_no_alerts_at_all_still_draws_a_chart(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_lake(lake, days=("2026-11-24",))
    calm = write_rules(tmp_path / "c", threshold=390)
    calm_text = (calm / "v1.yaml").read_text().replace("130", "399")
    (calm / "v1.yaml").write_text(calm_text)
    report = report_of(
        [*lake_rules(lake, calm), "--baseline", str(calm), "--out-dir", str(tmp_path / "o")]
    )
    assert report.comparison.baseline_total == report.comparison.candidate_total == 0
    assert matplotlib.image.imread(report.chart_path).shape == (500, 1000, 4)
    markdown = render_markdown(report)
    assert "No alerts under either catalogue." in markdown


# -- the comparison on its own -----------------------------------------------------------


def alert(alert_id: str, truck: str = "T1", **fields: Any) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "rule": "sustained_speeding",
        "truck_id": truck,
        "driver_id": None,
        "window_end": "2026-11-24T10:00:00.000Z",
        "rule_version": 1,
        **fields,
    }


def test_a_driver_id_cannot_break_a_table() -> None:
    report_table = compare([], [alert("a", driver_id="D|1")]).by_driver
    assert list(report_table) == ["D|1"]
    assert "| D\\|1 | 1 | 0 | 0 |" in changes_table("by driver", "driver_id", report_table, 50)


def test_compare_matches_by_alert_id() -> None:
    result = compare(
        [alert("a"), alert("b"), alert("c", rule_version=1)],
        [alert("b"), alert("c", rule_version=2), alert("d", "T2", driver_id="D7")],
    )
    assert [(d.change, d.alert["alert_id"]) for d in result.differences] == [
        ("removed", "a"),  # ordered by window_end, truck, rule, alert_id
        ("changed", "c"),
        ("added", "d"),
    ]
    assert result.changed_fields == {"rule_version": 1}
    assert result.only_rule_version == 1
    assert result.unchanged == 1
    assert result.by_truck["T1"].removed == result.by_truck["T1"].changed == 1
    assert result.by_driver["D7"].added == 1
    assert result.by_driver[NO_DRIVER].removed == 1
    assert result.per_rule_day == {("2026-11-24", "sustained_speeding"): [3, 3]}


# -- the commands as operators run them --------------------------------------------------


def run_module(module: str, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**base, **environ},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def test_the_command_agrees_with_a_backfill_run_as_a_process(lake: Path, tmp_path: Path) -> None:
    candidate = write_rules(tmp_path / "c", threshold=80)
    out = tmp_path / "out"
    done = run_module(
        "fleetwatch.whatif",
        *("--lake", str(lake), "--rules", str(candidate), "--out-dir", str(out)),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# What-if")
    assert total(done.stdout, "added") > 0
    assert "whatif: replaying under the candidate catalogue" in done.stderr
    # The stream's backfill, started as operators start it, gives the candidate's alerts.
    backfilled = tmp_path / "backfill.jsonl"
    flow = run_module(
        "bytewax.run",
        "dataflows.backfill",
        FLEET_BACKFILL_INPUT=str(lake),
        FLEET_ALERTS_OUT=str(backfilled),
        FLEET_RULES=str(candidate),
    )
    assert flow.returncode == 0, flow.stderr
    assert sorted(backfilled.read_text().splitlines()) == sorted(
        (out / "candidate" / "alerts.jsonl").read_text().splitlines()
    )
    # And with no FLEET_RULES, the built-in catalogue gives the baseline's.
    builtin = tmp_path / "builtin.jsonl"
    flow = run_module(
        "bytewax.run",
        "dataflows.backfill",
        FLEET_BACKFILL_INPUT=str(lake),
        FLEET_ALERTS_OUT=str(builtin),
    )
    assert flow.returncode == 0, flow.stderr
    assert sorted(builtin.read_text().splitlines()) == sorted(
        (out / "baseline" / "alerts.jsonl").read_text().splitlines()
    )


def test_the_command_refuses_an_invalid_candidate(lake: Path, tmp_path: Path) -> None:
    candidate = write_rules(tmp_path / "c")
    text = (candidate / "v1.yaml").read_text().replace("within_s: 600", "within_s: -5")
    (candidate / "v1.yaml").write_text(text)
    done = run_module("fleetwatch.whatif", "--lake", str(lake), "--rules", str(candidate))
    assert done.returncode == 2
    assert done.stdout == ""
    assert "v1.yaml: rule 'sustained_speeding': field 'within_s':" in done.stderr
