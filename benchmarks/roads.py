"""The road index of issue 18 (connectors/roads.py) on the Helsinki extract: map matching in
batches against the naive loop, the cold build against the cached start-up, and the index's
memory, each side by side with its baseline in one invocation.

``python -m benchmarks.roads [--readings N] [--rounds N] [--quick] [--flow-rate R] [--out DIR]``

* Readings (fixed seed): 88 % on the extract's drivable ways (each segment as likely as its
  length) moved by GPS noise (a Gaussian of 3 m per axis, on the ellipsoid), 10 % at least
  100 m from any drivable way (uniform over the ways' bounding box widened by ~1 km, the
  nearer ones dropped), 2 % without a position (NaN); shuffled.
* Matching (``max_m`` 20 m, the default): ``RoadIndex.match`` over the readings in batches
  of 100, 1,000, 10,000 and all of them, against the naive way: a Python loop of one
  nearest-neighbour query per reading (pyproj's transform of the one point, then
  ``STRtree.query_nearest`` of one shapely ``Point`` within ``max_m``, ties to the smaller
  way id), on its own tree of the same segments, and ``match`` called once per reading.
  Every contender must give the naive loop's ways and distances, exactly. The contenders
  run alternately ``--rounds`` times and each one's best run counts.
* Start-up: ``load_road_index(extract, None)`` (read with pyosmium, project, build the
  STRtree) against ``load_road_index(extract, warm cache)`` (hash the extract, read the
  .npz, rebuild the tree), alternately, best of ``--rounds`` * 3 each.
* Memory: a fresh process imports ``connectors.roads`` with numpy, shapely, pyproj and
  osmium, then loads the index from the warm cache twice (two indexes held at once); its
  RSS (VmRSS) after each load, after ``gc.collect()``, against the RSS before. The second
  load's growth is what each further index costs; the first's also holds pyproj's one-off
  set-up (its database). Then ``tracemalloc``'s count of what a third load keeps
  (Python objects and NumPy arrays, not GEOS's own memory) and the arrays' ``nbytes``.
* What matching would cost the alerts flow: at the flow's rate R (``--flow-rate``, default
  the committed benchmarks/results/results.json "alerts flow, 1 process") and matching at
  M readings/s, each reading takes 1/R + 1/M s, so the flow keeps M / (R + M) of its rate.

``--quick``: 20,000 readings, 2 rounds. Writes ``DIR/roads.json`` and ``DIR/roads.md``
(benchmarks.report's table).
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod, Transformer

from benchmarks import report
from benchmarks.catalogue import other_load
from connectors.roads import (
    DEFAULT_MATCH_M,
    RoadIndex,
    RoadWay,
    WayLines,
    cache_path,
    default_extract,
    extract_digest,
    load_road_index,
    projection,
    read_ways,
)
from runtime.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results" / "results.json"
SEED = 18
NOISE_M = 3.0  # per axis
FAR_SHARE = 0.10
NO_POSITION_SHARE = 0.02
FAR_M = 100.0  # a far reading is at least this far from any drivable way
BATCHES = (100, 1_000, 10_000)
FLOW_BATCH = 1_000  # the batch size of the flow-cost figure: a Kafka fetch's order
NAIVE = "naive loop: one query_nearest per reading"
PER_CALL = "match, one reading per call"
GEOD = Geod(ellps="WGS84")

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Matched = tuple[Ints, Floats]


class NaiveMatcher:
    """The naive way: one nearest-neighbour query per reading, in a Python loop, over its own
    STRtree of the index's segments, with ``RoadIndex.match``'s projection, inclusive
    distance and tie rule (the smaller way id)."""

    def __init__(self, index: RoadIndex) -> None:
        arrays = index.to_arrays()
        self._segment_way: Ints = arrays["segment_way"]
        self._way_ids = np.array([w.osm_way_id for w in index.ways], dtype=np.int64)
        self._to_metres = Transformer.from_crs(
            "EPSG:4326", projection(index.centre), always_xy=True
        )
        lines = shapely.linestrings(arrays["segments"].reshape(-1, 2, 2))
        self.tree = shapely.STRtree(np.asarray(lines, dtype=object))

    def to_metres(self, lats: Floats, lons: Floats) -> tuple[Floats, Floats]:
        x, y = self._to_metres.transform(lons, lats)
        return np.asarray(x), np.asarray(y)

    def match(self, lats: Floats, lons: Floats, max_m: float) -> Matched:
        way = np.full(len(lats), -1, dtype=np.int64)
        distance = np.full(len(lats), np.nan)
        transform, nearest = self._to_metres.transform, self.tree.query_nearest
        segment_way, way_ids = self._segment_way, self._way_ids
        for i, (lat, lon) in enumerate(zip(lats.tolist(), lons.tolist(), strict=True)):
            if not (math.isfinite(lat) and math.isfinite(lon)):
                continue
            x, y = transform(lon, lat)
            found, metres = nearest(
                shapely.Point(x, y), max_distance=max_m, return_distance=True, all_matches=True
            )
            if len(found):
                candidates = segment_way[found]
                best = int(np.argmin(way_ids[candidates]))
                way[i], distance[i] = candidates[best], metres[best]
        return way, distance


def sample_readings(
    ways: list[tuple[RoadWay, WayLines]], naive: NaiveMatcher, n: int, seed: int = SEED
) -> tuple[Floats, Floats, dict[str, int]]:
    """``n`` readings as the module docstring says: (lats, lons, how many of each kind)."""
    rng = np.random.default_rng(seed)
    n_missing = round(n * NO_POSITION_SHARE)
    n_far = round(n * FAR_SHARE)
    n_road = n - n_far - n_missing
    starts, ends = [], []
    for _, lines in ways:
        for line in lines:
            for a, b in itertools.pairwise(line):
                starts.append(a)
                ends.append(b)
    start, end = np.array(starts), np.array(ends)  # (lat, lon)
    lengths = np.asarray(GEOD.inv(start[:, 1], start[:, 0], end[:, 1], end[:, 0])[2])
    chosen = rng.choice(len(start), size=n_road, p=lengths / lengths.sum())
    true = start[chosen] + rng.random(n_road)[:, None] * (end[chosen] - start[chosen])
    east, north = rng.normal(0, NOISE_M, n_road), rng.normal(0, NOISE_M, n_road)
    azimuth = np.degrees(np.arctan2(east, north))
    road_lons, road_lats, _ = GEOD.fwd(true[:, 1], true[:, 0], azimuth, np.hypot(east, north))

    lo, hi = start.min(axis=0) - 0.01, start.max(axis=0) + 0.01
    far: list[Floats] = []
    while sum(len(f) for f in far) < n_far:
        candidates = lo + rng.random((4 * n_far, 2)) * (hi - lo)
        x, y = naive.to_metres(candidates[:, 0], candidates[:, 1])
        near, _ = naive.tree.query_nearest(shapely.points(x, y), max_distance=FAR_M)
        far.append(np.delete(candidates, np.unique(near), axis=0))
    far_points = np.concatenate(far)[:n_far]

    lats = np.concatenate([np.asarray(road_lats), far_points[:, 0], np.full(n_missing, np.nan)])
    lons = np.concatenate([np.asarray(road_lons), far_points[:, 1], np.full(n_missing, np.nan)])
    order = rng.permutation(n)
    kinds = {"on_roads": n_road, "far_from_roads": n_far, "without_position": n_missing}
    return lats[order], lons[order], kinds


def in_batches(index: RoadIndex, lats: Floats, lons: Floats, size: int, max_m: float) -> Matched:
    way = np.empty(len(lats), dtype=np.int64)
    distance = np.empty(len(lats))
    for start in range(0, len(lats), size):
        end = start + size
        way[start:end], distance[start:end] = index.match(lats[start:end], lons[start:end], max_m)
    return way, distance


def one_per_call(index: RoadIndex, lats: Floats, lons: Floats, max_m: float) -> Matched:
    way = np.empty(len(lats), dtype=np.int64)
    distance = np.empty(len(lats))
    for i in range(len(lats)):
        way[i : i + 1], distance[i : i + 1] = index.match(lats[i : i + 1], lons[i : i + 1], max_m)
    return way, distance


def label(size: int, n: int) -> str:
    return f"match, batches of {size:,}" if size < n else f"match, one batch of {n:,}"


def matching(
    index: RoadIndex, naive: NaiveMatcher, lats: Floats, lons: Floats, rounds: int
) -> dict[str, Any]:
    """Every contender over the readings, alternately, ``rounds`` times; the best run each."""
    n, max_m = len(lats), DEFAULT_MATCH_M
    contenders: dict[str, Callable[[], Matched]] = {
        NAIVE: lambda: naive.match(lats, lons, max_m),
        PER_CALL: lambda: one_per_call(index, lats, lons, max_m),
    }
    for size in (*BATCHES, n):
        if size <= n:
            contenders[label(size, n)] = functools.partial(
                in_batches, index, lats, lons, size, max_m
            )
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    expected: Matched | None = None
    for _ in range(rounds):
        for name, contender in contenders.items():
            gc.collect()
            started = time.perf_counter()
            way, distance = contender()
            seconds[name].append(time.perf_counter() - started)
            if expected is None:
                expected = (way, distance)
            elif not (
                np.array_equal(way, expected[0])
                # GEOS (the naive loop) and numpy (match) measure the same distance to
                # within ~1e-13 m, not to the last bit.
                and np.allclose(distance, expected[1], rtol=0, atol=1e-9, equal_nan=True)
            ):
                raise RuntimeError(f"{name} does not give the naive loop's ways and distances")
        print(
            "  ".join(f"{name}: {n / seconds[name][-1]:,.0f}/s" for name in contenders),
            flush=True,
        )
    assert expected is not None
    naive_rate = n / min(seconds[NAIVE])
    rows = {
        name: {
            "per_s": round(n / min(runs)),
            "runs_s": [round(s, 4) for s in runs],
            "ratio_to_naive": round(n / min(runs) / naive_rate, 2),
        }
        for name, runs in seconds.items()
    }
    way, distance = expected
    return {
        "max_m": max_m,
        "matched": int((way >= 0).sum()),
        "mean_distance_m": round(float(np.nanmean(distance)), 2),
        "contenders": rows,
    }


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def start_up(extract: Path, cache: Path, repeats: int) -> dict[str, Any]:
    """Build without a cache against the cached load, alternately; best and median of each."""
    load_road_index(extract, cache)  # warm the cache (and the imports, for both sides)
    runs: dict[str, list[float]] = {"build": [], "reading": [], "cached": [], "hashing": []}
    for _ in range(repeats):
        runs["build"].append(_timed(lambda: load_road_index(extract, None)))
        runs["reading"].append(_timed(lambda: read_ways(extract)))
        runs["cached"].append(_timed(lambda: load_road_index(extract, cache)))
        runs["hashing"].append(_timed(lambda: extract_digest(extract)))
    best = {name: min(found) for name, found in runs.items()}
    return {
        "repeats": repeats,
        **{f"{name}_s": round(s, 4) for name, s in best.items()},
        **{f"{name}_median_s": round(statistics.median(runs[name]), 4) for name in runs},
        "ratio_build_over_cached": round(best["build"] / best["cached"], 1),
    }


# Run in a fresh process: RSS before and after loading indexes from the warm cache.
_PROBE = """
import gc, json, logging, sys, tracemalloc
from pathlib import Path
import numpy, osmium, pyproj, shapely
from connectors.roads import load_road_index
from runtime.logs import configure_logging

configure_logging(logging.WARNING)

def rss_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

extract, cache = Path(sys.argv[1]), Path(sys.argv[2])
gc.collect()
before = rss_kib()
first = load_road_index(extract, cache)
gc.collect()
one = rss_kib()
second = load_road_index(extract, cache)
gc.collect()
two = rss_kib()
tracemalloc.start()
third = load_road_index(extract, cache)
gc.collect()
traced = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
nbytes = sum(a.nbytes for a in third.to_arrays().values())
print(json.dumps({"before_kib": before, "first_kib": one, "second_kib": two,
                  "traced_bytes": traced, "array_bytes": nbytes}))
"""


def memory(extract: Path, cache: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(extract), str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    before, first, second = probe["before_kib"], probe["first_kib"], probe["second_kib"]
    cache_bytes = cache_path(extract, cache).stat().st_size
    extract_bytes = extract.stat().st_size
    return {
        "method": "VmRSS of a fresh process after gc.collect(); tracemalloc of a third load",
        "process_before_mib": round(before / 1024, 1),
        "first_index_mib": round((first - before) / 1024, 2),
        "further_index_mib": round((second - first) / 1024, 2),
        "ratio_further_index_over_process": round((second - first) / before, 4),
        "traced_mib": round(probe["traced_bytes"] / 2**20, 2),
        "array_mib": round(probe["array_bytes"] / 2**20, 2),
        "cache_kib": round(cache_bytes / 1024),
        "extract_kib": round(extract_bytes / 1024),
        "ratio_cache_over_extract": round(cache_bytes / extract_bytes, 2),
    }


def committed_flow_rate() -> int | None:
    """The alerts flow's rate (1 process) in the committed full run, if there is one."""
    try:
        results = json.loads(COMMITTED.read_text())
        return int(results["alerts"]["alerts flow, 1 process"]["readings_per_s"])
    except (OSError, KeyError, ValueError):
        return None


def flow_cost(flow_rate: float | None, match_rate: float) -> dict[str, Any] | None:
    """What matching each reading would cost a flow that runs at ``flow_rate`` without it."""
    if not flow_rate:
        return None
    return {
        "flow_per_s": round(flow_rate),
        "batch": FLOW_BATCH,
        "match_per_s": round(match_rate),
        "added_time_share": round(flow_rate / match_rate, 3),  # per reading, against the flow's
        "kept_share": round(match_rate / (flow_rate + match_rate), 3),
        "flow_with_matching_per_s": round(flow_rate * match_rate / (flow_rate + match_rate)),
    }


def run(readings: int, rounds: int, flow_rate: float | None) -> dict[str, Any]:
    extract = default_extract()
    results: dict[str, Any] = {
        "extract": extract.name,
        "readings": readings,
        "rounds": rounds,
        "seed": SEED,
        "load_before": other_load(),
    }
    with tempfile.TemporaryDirectory(prefix="fleetwatch-roads-") as name:
        cache = Path(name)
        results["start_up"] = start_up(extract, cache, repeats=3 * rounds)
        up = results["start_up"]
        print(
            f"build {up['build_s'] * 1000:.0f} ms (reading {up['reading_s'] * 1000:.0f} ms), "
            f"cached {up['cached_s'] * 1000:.1f} ms (hashing {up['hashing_s'] * 1000:.1f} ms): "
            f"{up['ratio_build_over_cached']}x",
            flush=True,
        )
        results["memory"] = memory(extract, cache)
        mem = results["memory"]
        print(
            f"memory: first index {mem['first_index_mib']} MiB, each further "
            f"{mem['further_index_mib']} MiB RSS (traced {mem['traced_mib']} MiB), "
            f"cache {mem['cache_kib']} KiB",
            flush=True,
        )
        index = load_road_index(extract, cache)
    results["index"] = {"ways": len(index.ways), "segments": len(index)}
    naive = NaiveMatcher(index)
    lats, lons, kinds = sample_readings(read_ways(extract), naive, readings)
    results["kinds"] = kinds
    results["matching"] = matching(index, naive, lats, lons, rounds)
    rows = results["matching"]["contenders"]
    results["flow_cost"] = flow_cost(flow_rate, rows[label(FLOW_BATCH, readings)]["per_s"])
    results["load_after"] = other_load()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roads", description=__doc__)
    parser.add_argument("--readings", type=int, help="readings to match (default 100,000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="20,000 readings, 2 rounds")
    parser.add_argument(
        "--flow-rate",
        type=float,
        help="the alerts flow's readings/s (default: the committed full run's, 1 process)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    readings = args.readings or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 3)
    if readings < FLOW_BATCH or rounds < 1:
        parser.error(f"--readings must be at least {FLOW_BATCH:,} and --rounds at least 1")
    flow_rate = args.flow_rate if args.flow_rate is not None else committed_flow_rate()
    from benchmarks.__main__ import standalone  # not at the top: benchmarks.__main__ imports this

    configure_logging(logging.WARNING)  # not a line per cached load
    return standalone(
        "roads",
        args.quick,
        args.out,
        lambda: run(readings, rounds, flow_rate),
        report.roads_markdown,
    )


if __name__ == "__main__":
    main()
