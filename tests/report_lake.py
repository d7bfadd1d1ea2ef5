"""A lake for ``fleetwatch.report`` from a demo-sized run: the demo's road fleet (20 trucks at
1 Hz, resends and disorder included) drives ten minutes at 11:00 and ten minutes across
local midnight (23:55-00:05 in Helsinki) on each of ``DAYS`` days; the real backfill (as
``python -m bytewax.run dataflows.backfill`` runs it, with FLEET_SCORECARDS_OUT to a .jsonl)
gives the alerts and scorecards, archived with the alert and scorecard lakes' writers, as
dataflows.archive_alerts does. Used by tests/unit/test_report.py and the browser test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
from bytewax.testing import run_main

from connectors.alert_lake import alert_lake, alert_row, alerts_frame
from connectors.history import load_history_dir
from connectors.parquet import write_readings
from connectors.scorecard_lake import scorecard_lake, scorecard_row, scorecards_frame
from dataflows.backfill import flow_from_settings
from devtools.history_generator import HistoryShape
from devtools.history_generator import write as write_history
from devtools.road_fleet import RoadFleetOptions, RoadFleetSimulator
from devtools.simulator import FleetConfig
from domain.alerts import Alert
from domain.scorecards import Scorecard, decode_scorecard
from domain.timestamps import to_epoch_ms
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RULES, ZONES = ROOT / "catalogue" / "rules", ROOT / "catalogue" / "zones.geojson"
ZONE = "Europe/Helsinki"  # UTC+2 in December: 21:55 UTC is 23:55 local
FIRST_DAY = date(2026, 12, 1)  # the sample catalogue's version 3 is in force
DAYS, TRUCKS, DRIVE_S = 6, 20, 600
# (UTC hour, minute) of each day's drives: 11:00 local, and 23:55 local into the next day.
DRIVES = ((9, 0), (21, 55))
DEPOTS = ((60.16567, 24.95239), (60.17822, 24.95096), (60.16628, 24.93775))


@dataclass(frozen=True)
class ReportLake:
    lake: Path
    history: Path
    alerts: list[Alert]
    cards: list[Scorecard]


def build(tmp: Path, roads_cache: Path) -> ReportLake:
    history = tmp / "history"
    write_history(
        HistoryShape(trucks=TRUCKS, start=FIRST_DAY - timedelta(days=2), days=DAYS + 3), history
    )
    classes = dict(load_history_dir(history).vehicle_classes)
    lake = tmp / "lake"
    for n in range(DAYS):
        day = FIRST_DAY + timedelta(days=n)
        for k, (hour, minute) in enumerate(DRIVES):
            start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
            config = FleetConfig(
                trucks=TRUCKS,
                seed=100 + 2 * n + k,
                start_ms=to_epoch_ms(start),
                interval_s=1.0,
                resend_share=0.01,
                disorder_s=2.0,
                spike_chance=0.0005,
            )
            fleet = RoadFleetSimulator(
                config, RoadFleetOptions(depots=DEPOTS, vehicle_classes=classes)
            )
            # Each drive numbers its readings from 0: its own event ids, or the backfill
            # would drop the next drive's readings as resends of this one's.
            readings = [
                msgspec.structs.replace(m.reading, event_id=f"{n}{k}-{m.reading.event_id}")
                for m in fleet.messages(TRUCKS * DRIVE_S)
                if m.reading is not None
            ]
            # Arrival order, resends included, in the UTC date of the drive's start: as
            # dataflows.archive writes fleet.telemetry (its date is each reading's own; a
            # drive across UTC midnight would split, none of these does).
            write_readings(readings, lake / f"date={day.isoformat()}" / f"drive{k}.parquet")

    alerts_out, cards_out = tmp / "alerts.jsonl", tmp / "scorecards.jsonl"
    environ = {
        "FLEET_BACKFILL_INPUT": str(lake),
        "FLEET_ALERTS_OUT": str(alerts_out),
        "FLEET_SCORECARDS_OUT": str(cards_out),
        "FLEET_HISTORY_DIR": str(history),
        "FLEET_RULES": str(RULES),
        "FLEET_ZONES": str(ZONES),
        "FLEET_TIMEZONE": ZONE,
        "FLEET_ROADS_CACHE": str(roads_cache),
    }
    run_main(flow_from_settings(Settings.from_env(environ)))
    alerts = [
        msgspec.json.decode(line, type=Alert) for line in alerts_out.read_bytes().splitlines()
    ]
    cards = [decode_scorecard(line) for line in cards_out.read_bytes().splitlines()]
    assert all(isinstance(c, Scorecard) for c in cards)
    scorecards = [c for c in cards if isinstance(c, Scorecard)]
    # Archived as dataflows.archive_alerts does: one roll each into alerts/ and scorecards/.
    alert_lake(lake).write_rows(0, 0, len(alerts) - 1, alerts_frame([alert_row(a) for a in alerts]))
    rows = scorecards_frame([scorecard_row(c) for c in scorecards])
    scorecard_lake(lake).write_rows(0, 0, len(scorecards) - 1, rows)
    return ReportLake(lake, history, alerts, scorecards)
