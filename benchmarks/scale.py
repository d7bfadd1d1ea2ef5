"""Scale: memory per truck, the alerts flow's RSS by fleet size, and what recovery
snapshots cost.

``python -m benchmarks.scale [--quick]``.

* State per truck, in this process: the per-truck logic of dataflows.alerts after 20 s of
  readings at 1 Hz (with the default 10 s lateness, about 10 readings pending and 10 ids
  remembered: a busy truck), measured with tracemalloc, and its snapshot as pickled for
  recovery.
* RSS: dataflows.alerts (1 process) draining 20 readings per truck for 1k, 10k and 100k
  trucks; the process's peak resident set (VmHWM).
* Snapshots: the same drain of 10k trucks without recovery and with ``-s`` 1, 5 and 30
  (SQLite on local disk); the wall-time ratio to no recovery, and the partitions' size.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax.recovery import init_db_dir

from benchmarks.alerts import PARTITIONS, prefill
from dataflows.speeding import SpeedingRulesStep
from devtools.launcher import FlowProcess
from devtools.localbrokers import local_brokers
from domain.readings import Reading
from domain.rules import RuleConfig

ROOT = Path(__file__).resolve().parents[1]
READINGS_PER_TRUCK = 20
START_MS = 1_795_514_400_000


def state_per_truck(trucks: int) -> dict[str, float]:
    """Bytes of live per-truck logic and of its snapshot, for a busy truck."""
    step = SpeedingRulesStep(RuleConfig(), lambda: datetime(2026, 11, 25, tzinfo=UTC))
    batches = [
        [
            Reading(f"T{t:06d}-{s}", f"T{t:06d}", START_MS + s * 1000, 70.0 + (s % 3) * 10)
            for s in range(READINGS_PER_TRUCK)
        ]
        for t in range(trucks)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    logics = []
    for readings in batches:
        logic = step.build(None)
        logic.state.ingest(readings, step.config)
        logics.append(logic)
    live = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    snapshot = sum(len(pickle.dumps(logic.snapshot())) for logic in logics[:1000])
    entries = sum(logic.state.entries() for logic in logics) / trucks
    return {
        "bytes_per_truck": round(live / trucks),
        "snapshot_bytes_per_truck": round(snapshot / min(trucks, 1000)),
        "entries_per_truck": round(entries, 1),
    }


def drain(
    env: dict[str, str], log: Path, args: list[str]
) -> tuple[float, int]:  # (seconds, peak RSS bytes)
    started = time.monotonic()
    process = FlowProcess("dataflows.alerts", env, log, args).start().process
    assert process is not None
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.1)
    if process.returncode != 0:
        raise RuntimeError(f"alerts flow failed; see {log}")
    return time.monotonic() - started, peak


def run(quick: bool) -> dict[str, Any]:
    fleets = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    results: dict[str, Any] = {"state": {}, "rss": {}, "snapshots": {}}
    for trucks in fleets:
        results["state"][str(trucks)] = state_per_truck(trucks)
        print(f"state, {trucks:6d} trucks: {results['state'][str(trucks)]}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="fleetwatch-scale-") as tmp,
        local_brokers(Path(tmp)) as brokers,
    ):
        base = {
            "FLEET_KAFKA_BROKERS": brokers.kafka_brokers,
            "FLEET_KAFKA_TAIL": "false",
            "FLEET_TOPIC_PARTITIONS": str(PARTITIONS),
        }
        for trucks in fleets:
            topic = f"scale.{trucks}"
            prefill(brokers.kafka_brokers, topic, trucks * READINGS_PER_TRUCK, trucks)
            env = {**base, "FLEET_TOPIC_TELEMETRY": topic, "FLEET_TOPIC_ALERTS": topic + ".a"}
            seconds, peak = drain(env, Path(tmp) / f"rss-{trucks}.log", [])
            results["rss"][str(trucks)] = {"peak_rss_mb": round(peak / 2**20), "seconds": seconds}
            print(f"RSS, {trucks:6d} trucks: peak {peak / 2**20:6.0f} MiB", flush=True)
        trucks = 10_000
        topic = f"scale.{trucks}"
        settings: list[tuple[str, list[str] | None]] = [("none", None)] + [
            (f"-s {s}", ["-s", str(s), "-b", "0"]) for s in (1, 5, 30)
        ]
        for label, flags in settings:
            args: list[str] = []
            directory = Path(tmp) / f"recovery-{label.replace(' ', '')}"
            if flags is not None:
                directory.mkdir()
                init_db_dir(directory, 1)  # type: ignore[no-untyped-call]
                args = ["-r", str(directory), *flags]
            alerts_topic = f"{topic}.alerts-{label.replace('-s ', 's')}"
            env = {**base, "FLEET_TOPIC_TELEMETRY": topic, "FLEET_TOPIC_ALERTS": alerts_topic}
            seconds, _ = drain(env, Path(tmp) / "snapshots.log", args)
            size = sum(f.stat().st_size for f in directory.glob("*")) if flags else 0
            results["snapshots"][label] = {
                "seconds": round(seconds, 2),
                "recovery_mb": size / 2**20,
            }
        plain = results["snapshots"]["none"]["seconds"]
        for label, row in results["snapshots"].items():
            row["ratio_to_none"] = round(row["seconds"] / plain, 3)
            row["recovery_mb"] = round(row["recovery_mb"], 1)
            print(f"snapshots {label:5s}: {row}", flush=True)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "scale.json")
    args = parser.parse_args(argv)
    results = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
