"""``make demo`` ends with a map of its run (devtools.demo.write_map): drawn here from a small
lake of the demo's road fleet and the alerts the sample catalogue gives for it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from connectors.catalogue import load_catalogue
from connectors.parquet import write_readings
from devtools.demo import RULES, ZONES, demo_fleet, write_map
from domain.alerts import build_alert, encode_alert
from domain.catalogue import RuleBook
from domain.rules import RuleState, judge
from domain.timestamps import to_epoch_ms
from fleetwatch.map import ROAD_COLOUR, TRACK_COLOUR, rule_colours

END_MS = to_epoch_ms(datetime(2026, 12, 1, 10, tzinfo=UTC))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def roads_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_ROADS_CACHE", str(tmp_path_factory.getbasetemp() / "roads-cache"))
    monkeypatch.delenv("FLEET_ROADS", raising=False)


def pixels_of(image: npt.NDArray[Any], colour: str) -> int:
    rgb = image[:, :, :3]
    return int((np.abs(rgb - np.array(to_rgb(colour))) <= 2 / 255).all(axis=2).sum())


def test_the_demo_map_shows_roads_tracks_and_alerts_by_rule(tmp_path: Path) -> None:
    # The demo's fleet, 20 trucks for 5 minutes of driving.
    fleet = demo_fleet(20, 20.0, 300.0, END_MS)
    readings = [m.reading for m in fleet.messages(6_000) if m.reading is not None]
    lake = tmp_path / "lake"
    write_readings(readings, lake / "date=2026-12-01" / "part.parquet")
    book = RuleBook(load_catalogue(RULES, ZONES))
    states: dict[str, dict[str, RuleState]] = {}
    lines = []
    for reading in sorted({r.event_id: r for r in readings}.values(), key=lambda r: r.ts_ms):
        for found in judge(states.setdefault(reading.truck_id, {}), [reading], book):
            lines.append(encode_alert(build_alert(found, detected_at_ms=0)).decode())
    assert lines
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("\n".join(lines) + "\n")

    out = tmp_path / "demo-run" / "map.png"
    summary = write_map(lake, alerts, out)

    assert str(out) in summary
    assert out.read_bytes().startswith(PNG_MAGIC)
    image = np.asarray(imread(out))
    assert image.shape[:2] == (1000, 1200)
    not_white = (image[:, :, :3] < 0.98).any(axis=2).mean()
    assert not_white > 0.02  # not an empty canvas
    assert pixels_of(image, ROAD_COLOUR) > 500  # lines are antialiased: few exact pixels
    assert pixels_of(image, TRACK_COLOUR) > 2_000
    rules = {line.split('"rule":"')[1].split('"')[0] for line in lines}
    for rule, colour in rule_colours(sorted(rules)).items():
        assert pixels_of(image, colour) > 20, f"no alert of {rule} on the map"
