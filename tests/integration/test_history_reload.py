"""A running alerts flow uses replaced driver-history files, and keeps going on the last
good data when a file is broken or breaks a rule of the contract (issue 14: a null the
loader did not check used to pass the load and crash the flow at the first alert). The
optional trucks.parquet (vehicle classes) is reloaded with them, and refused like them."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from connectors.history import ASSIGNMENTS_FILE, DRIVERS_FILE, TRUCKS_FILE
from connectors.parquet import write_atomically
from domain.readings import Reading, encode_canonical
from domain.timestamps import to_epoch_ms
from runtime.settings import SAMPLE_HISTORY_DIR
from tests.integration.flows import FlowProcess, Namespace, Record, consume_until, produce

T0 = to_epoch_ms(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
TRUCK = "T00009"  # no assignment in the shipped sample


def spike_then_cruise(namespace: Namespace, at_ms: int, tag: str) -> None:
    """An instant over-speed at ``at_ms``, and a reading 20 s later that releases it."""
    readings = [
        Reading(f"{tag}-spike", TRUCK, at_ms, 145.0),
        Reading(f"{tag}-cruise", TRUCK, at_ms + 20_000, 70.0),
    ]
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [(TRUCK.encode(), encode_canonical(r)) for r in readings],
    )


def alerts_so_far(namespace: Namespace, count: int) -> list[Record]:
    return consume_until(
        namespace.brokers.kafka_brokers,
        namespace.topic("alerts"),
        lambda r: len(r) >= count,
        timeout_s=30,
    )


def wait_for_events(flow: FlowProcess, event: str, count: int) -> None:
    flow.wait_for_event(event, count=count, timeout_s=30)


def test_replaced_and_broken_history_files_while_running(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    history = tmp_path / "history"
    shutil.copytree(SAMPLE_HISTORY_DIR, history)
    env = namespace.env(FLEET_HISTORY_DIR=str(history), FLEET_HISTORY_REFRESH_S="0.3")
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    try:
        wait_for_events(flow, "history_loaded", 1)
        spike_then_cruise(namespace, T0, "first")
        first = alerts_so_far(namespace, 1)
        assert first[-1].json()["driver_id"] is None

        # Replace the assignments (write elsewhere, rename into place): T00009 now has a driver.
        assignments = pl.read_parquet(history / ASSIGNMENTS_FILE)
        new_row = pl.DataFrame(
            {
                "truck_id": [TRUCK],
                "driver_id": ["D00001"],
                "valid_from": [datetime(2026, 1, 1, tzinfo=UTC)],
                "valid_to": [None],
            },
            schema=assignments.schema,
        )
        write_atomically(pl.concat([assignments, new_row]), history / ASSIGNMENTS_FILE)
        wait_for_events(flow, "history_loaded", 2)
        spike_then_cruise(namespace, T0 + 700_000, "second")  # after the 600 s cooldown
        second = alerts_so_far(namespace, 2)
        assert second[-1].json()["driver_id"] == "D00001"
        assert second[-1].json()["driver"]["driver_id"] == "D00001"

        # Break the drivers file in place: the flow keeps going on the last good data.
        (history / DRIVERS_FILE).write_bytes(b"PAR1 not really")
        wait_for_events(flow, "history_reload_failed", 1)
        spike_then_cruise(namespace, T0 + 1_400_000, "third")
        third = alerts_so_far(namespace, 3)
        assert third[-1].json()["driver_id"] == "D00001"
        assert flow.process is not None
        assert flow.process.poll() is None, "the flow is still running"
        time.sleep(1)  # several refresh intervals with the broken file
        failures = [e for e in flow.log_events() if e.get("event") == "history_reload_failed"]
        assert len(failures) == 1, "one error per change of the file, not per refresh"

        # A readable file with a null in the driver's average speed: refused, and the alert
        # still carries the last good row, with a number over the baseline.
        drivers = pl.read_parquet(SAMPLE_HISTORY_DIR / DRIVERS_FILE).with_columns(
            pl.when(pl.col("driver_id") == "D00001")
            .then(None)
            .otherwise(pl.col("avg_speed_kmh_90d"))
            .alias("avg_speed_kmh_90d")
        )
        write_atomically(drivers, history / DRIVERS_FILE)
        wait_for_events(flow, "history_reload_failed", 2)
        spike_then_cruise(namespace, T0 + 2_100_000, "fourth")
        fourth = alerts_so_far(namespace, 4)[-1].json()
        assert fourth["driver_id"] == "D00001"
        assert isinstance(fourth["driver"]["speed_over_baseline_kmh"], float)
        refused = [e for e in flow.log_events() if e.get("event") == "history_reload_failed"]
        assert "column 'avg_speed_kmh_90d' must not be null" in str(refused[-1]["error"])
        assert flow.process.poll() is None, "the flow is still running"

        # Good drivers again, and trucks.parquet replaced: reloaded with the new classes.
        [first_load] = [e for e in flow.log_events() if e.get("event") == "history_loaded"][:1]
        assert first_load["trucks"] == pl.read_parquet(SAMPLE_HISTORY_DIR / TRUCKS_FILE).height
        write_atomically(pl.read_parquet(SAMPLE_HISTORY_DIR / DRIVERS_FILE), history / DRIVERS_FILE)
        classes = pl.DataFrame(
            {
                "truck_id": [TRUCK, "T00000"],
                "vehicle_class": ["light", "heavy"],
                "depot": [None, "Kiel"],
            }
        )
        write_atomically(classes, history / TRUCKS_FILE)
        wait_for_events(flow, "history_loaded", 3)
        loaded = [e for e in flow.log_events() if e.get("event") == "history_loaded"]
        assert loaded[-1]["trucks"] == 2

        # A trucks.parquet that breaks a rule refuses the whole history: the last good stays.
        write_atomically(classes.with_columns(vehicle_class=pl.lit("huge")), history / TRUCKS_FILE)
        wait_for_events(flow, "history_reload_failed", 3)
        refused = [e for e in flow.log_events() if e.get("event") == "history_reload_failed"]
        error = str(refused[-1]["error"])
        assert error.startswith(f"{history / TRUCKS_FILE}: column 'vehicle_class' must be one of")
        spike_then_cruise(namespace, T0 + 2_800_000, "fifth")
        assert alerts_so_far(namespace, 5)[-1].json()["driver_id"] == "D00001"
        assert flow.process.poll() is None, "the flow is still running"
    finally:
        flow.stop()
