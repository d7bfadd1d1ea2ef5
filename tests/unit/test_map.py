"""``python -m fleetwatch.map``: a PNG of the roads, the lake's tracks and the alerts, drawn
from real files (a small lake in central Helsinki, an alerts JSONL, the default extract)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from connectors.catalogue import load_catalogue
from connectors.parquet import READING_SCHEMA
from fleetwatch.map import ROAD_COLOUR, TRACK_COLOUR, main, rule_colours

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 24, 8, tzinfo=UTC)
TRUCKS = ("T001", "T002")
RULES = ("harsh_speeding", "sustained_speeding")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SAMPLE = (ROOT / "catalogue" / "rules", ROOT / "catalogue" / "zones.geojson")


@pytest.fixture(autouse=True)
def roads_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.getbasetemp() / "map-roads-cache"
    monkeypatch.setenv("FLEET_ROADS_CACHE", str(cache))
    monkeypatch.delenv("FLEET_ROADS", raising=False)
    return cache


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """Two trucks, a reading every 20 s for an hour, driving across central Helsinki (inside
    the default extract: 60.164-60.179 N, 24.935-24.953 E)."""
    rows: dict[str, list[Any]] = {c: [] for c in READING_SCHEMA.names()}
    for k, truck in enumerate(TRUCKS):
        for n in range(180):
            rows["event_id"].append(f"{truck}-{n:04d}")
            rows["truck_id"].append(truck)
            rows["ts"].append(START + timedelta(seconds=20 * n))
            rows["speed_kmh"].append(50.0)
            rows["lat"].append(60.165 + k * 0.004 + n * 4e-5)
            rows["lon"].append(24.937 + n * 8e-5)
    path = tmp_path / "lake" / "date=2026-11-24" / "part.parquet"
    path.parent.mkdir(parents=True)
    pl.DataFrame(rows, schema=READING_SCHEMA).write_parquet(path)
    return tmp_path / "lake"


@pytest.fixture
def alerts(tmp_path: Path) -> Path:
    """Alerts of two rules on T001's track, one without a position."""
    lines = []
    for n, rule in ((30, RULES[0]), (90, RULES[1]), (150, RULES[1]), (160, RULES[0])):
        end = START + timedelta(seconds=20 * n)
        position = None if n == 160 else {"lat": 60.165 + n * 4e-5, "lon": 24.937 + n * 8e-5}
        lines.append(
            json.dumps(
                {
                    "alert_id": f"a{n}",
                    "rule": rule,
                    "truck_id": "T001",
                    "window_end": end.isoformat().replace("+00:00", "Z"),
                    "position": position,
                }
            )
        )
    path = tmp_path / "alerts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def pixels_of(image: npt.NDArray[Any], colour: str) -> int:
    """Pixels within 2/255 of ``colour`` per channel."""
    rgb = image[:, :, :3].astype(np.float64)
    return int((np.abs(rgb - np.array(to_rgb(colour))) <= 2 / 255).all(axis=2).sum())


def read_png(path: Path) -> npt.NDArray[Any]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    return np.asarray(imread(path))


def test_the_map_shows_roads_tracks_and_alerts(
    lake: Path, alerts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "map.png"
    code = main(
        ["--lake", str(lake), "--alerts", str(alerts), "--out", str(out), "--size", "900x700"]
    )
    assert code == 0, capsys.readouterr().err
    assert "map: wrote" in capsys.readouterr().err
    image = read_png(out)
    assert image.shape[:2] == (700, 900)
    assert len(np.unique(image[:, :, :3].reshape(-1, 3), axis=0)) > 10
    colours = rule_colours(RULES)
    assert pixels_of(image, ROAD_COLOUR) > 500  # the roads of central Helsinki
    assert pixels_of(image, colours[RULES[0]]) > 20
    assert pixels_of(image, colours[RULES[1]]) > 40


def test_a_truck_and_a_window_keep_only_their_alerts(
    lake: Path, alerts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "map.png"
    # T001 from 08:40: only the sustained_speeding alert at n = 150 is in the window.
    args = ["--lake", str(lake), "--alerts", str(alerts), "--truck", "T001"]
    args += ["--from", "2026-11-24T08:40:00Z", "--to", "2026-11-25", "--out", str(out)]
    assert main(args) == 0
    image = read_png(out)
    assert image.shape[:2] == (1000, 1200)
    shown = rule_colours([RULES[1]])[RULES[1]]  # the only rule on this map
    assert pixels_of(image, shown) > 20
    assert pixels_of(image, rule_colours(RULES)[RULES[1]]) == 0


def test_the_command_as_a_process(lake: Path, alerts: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.png"
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    args = ["--lake", str(lake), "--alerts", str(alerts), "--out", str(out), "--size", "600x500"]
    done = subprocess.run(
        [sys.executable, "-m", "fleetwatch.map", *args],
        env={**base, "FLEET_ROADS_CACHE": str(tmp_path / "cache")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert read_png(out).shape[:2] == (500, 600)


def test_an_unknown_truck_is_nothing_to_draw(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "map.png"
    assert main(["--lake", str(lake), "--truck", "T999", "--out", str(out)]) == 1
    assert "no positioned readings of truck 'T999'" in capsys.readouterr().err
    assert not out.exists()


def test_an_empty_window_is_nothing_to_draw(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--lake", str(lake), "--from", "2026-11-25", "--out", str(tmp_path / "m.png")]
    assert main(args) == 1
    assert "nothing to draw" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lake", "{tmp}/no-such-lake"], "--lake: "),
        (["--alerts", "{tmp}/no-such.jsonl"], "--alerts: cannot read"),
        (["--roads", "{tmp}/no-such.osm.pbf"], "--roads: FLEET_ROADS: "),
        (["--from", "yesterday"], "--from: "),
        (["--from", "2026-11-25", "--to", "2026-11-24"], "--to must be after --from"),
    ],
)
def test_bad_input_exits_2(
    lake: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = ["--lake", str(lake), "--out", str(tmp_path / "m.png")]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_an_alerts_line_that_is_not_an_alert_exits_2(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"rule": "x", "position": null}\n{"no": "rule"}\n')
    assert main(["--lake", str(lake), "--alerts", str(bad), "--out", str(tmp_path / "m.png")]) == 2
    assert f"{bad}:2: not an alert" in capsys.readouterr().err


def test_rule_colours_are_stable_and_distinct_from_roads_and_tracks() -> None:
    colours = rule_colours(["b", "a", "c", "a"])
    assert list(colours) == ["a", "b", "c"]
    assert len(set(colours.values())) == 3
    assert not {ROAD_COLOUR, TRACK_COLOUR} & set(colours.values())
    # Every rule of the sample catalogue has a colour of its own.
    sample = {rule.id for v in load_catalogue(*SAMPLE).versions for rule in v.rules}
    assert len(set(rule_colours(sorted(sample)).values())) == len(sample)
