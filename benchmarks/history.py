"""Driver history: lookup cost per alert, load time, and the pause a reload causes.

``python -m benchmarks.history [--trucks N --days D]``. Writes a generated history of N
trucks over D days (3 shifts a day), then measures:
  * ``driver_context`` per alert (the as-of join plus the derived fields), vs a dict lookup
    as the floor;
  * a full load (Polars scan + index build);
  * the hot path's worst pause: a thread doing lookups back to back records the longest
    gap between two of them, first alone, then while the store reloads in the background.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

from connectors.history import HistoryStore, files_signature, load_history_dir
from devtools.history_generator import HistoryShape, write
from domain.history import driver_context
from domain.timestamps import to_epoch_ms

ROOT = Path(__file__).resolve().parents[1]


def lookup_rate(
    store: HistoryStore, trucks: int, start_ms: int, span_ms: int, n: int = 200_000
) -> float:
    rng = random.Random(1)
    queries = [
        (f"T{rng.randrange(trucks):05d}", start_ms + rng.randrange(span_ms)) for _ in range(n)
    ]
    index = store.current()
    began = time.perf_counter()
    for truck, ts in queries:
        driver_context(index, truck, ts, 120.0)
    return n / (time.perf_counter() - began)


def worst_gap(store: HistoryStore, seconds: float, reload: bool) -> float:
    """Longest time between two consecutive lookups on a busy thread, in ms."""
    stop = threading.Event()
    gaps: list[float] = []

    def busy() -> None:
        last = time.perf_counter()
        worst = 0.0
        while not stop.is_set():
            driver_context(store.current(), "T00001", 1_795_514_400_000, 120.0)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now
        gaps.append(worst * 1000)

    thread = threading.Thread(target=busy)
    thread.start()
    time.sleep(0.2)
    if reload:
        store._seen = object()  # force the next refresh to load again
        loader = threading.Thread(target=store.refresh)
        loader.start()
        loader.join()
    else:
        time.sleep(seconds)
    stop.set()
    thread.join()
    return gaps[0]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__)
    parser.add_argument("--trucks", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "history.json")
    args = parser.parse_args(argv)
    shape = HistoryShape(trucks=args.trucks, start=date(2026, 11, 1), days=args.days)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write(shape, directory)
        began = time.perf_counter()
        index = load_history_dir(directory)
        load_s = time.perf_counter() - began
        store = HistoryStore(
            lambda: load_history_dir(directory), lambda: files_signature(directory), 60, "bench"
        )
        store.refresh()
        start_ms = to_epoch_ms(datetime(2026, 11, 1, tzinfo=UTC))
        rates = [
            lookup_rate(store, args.trucks, start_ms, args.days * 86_400_000) for _ in range(3)
        ]
        idle = worst_gap(store, seconds=load_s, reload=False)
        during = worst_gap(store, seconds=load_s, reload=True)
    results = {
        "assignments": index.assignments,
        "drivers": len(index.drivers),
        "load_seconds": round(load_s, 3),
        "lookups_per_second": round(statistics.median(rates)),
        "ns_per_lookup": round(1e9 / statistics.median(rates)),
        "worst_gap_ms_without_reload": round(idle, 2),
        "worst_gap_ms_during_reload": round(during, 2),
    }
    for name, value in results.items():
        print(f"{name:32s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
