"""``python -m fleetwatch.report``: the fleet's day as one self-contained HTML page.

    python -m fleetwatch.report --day YYYY-MM-DD|yesterday|today [--lake DIR]
        [--out FILE.html] [--days 30] [--history DIR] [--top N] [--min-km KM]

Reads the lake (``--lake``, default FLEET_LAKE_DIR): the archived scorecards
(``connectors.scorecard_lake.scan_scorecards``, one per driver and local day) of the
``--days`` days up to ``--day``, the archived alerts (``connectors.alert_lake.scan_alerts``,
deduplicated) whose ``window_end`` falls on ``--day`` in FLEET_TIMEZONE (the scorecards'
calendar: their ``day`` is already that local day), and the telemetry of that day for the
number of trucks. Drivers' names come from the driver history (``--history``, else
FLEET_HISTORY_DSN / FLEET_HISTORY_DIR), else from the alerts' ``driver``, else the id.

``yesterday`` and ``today`` are days in FLEET_TIMEZONE, for a schedule (k8s/base/report.yaml).
The page (``--out``, ``{day}`` standing for the day; default ``report-{day}.html``; written
atomically), in this order:

- the day's summary: drivers, trucks, readings, km, driving hours, alerts by severity;
- the top drivers by safety score, ``--top`` best and ``--top`` worst (no one in both), of
  the drivers who drove at least ``--min-km`` that day (default ``DEFAULT_MIN_KM``: one
  event in a short day gives a score as bad as a reckless long day's), with km and events;
- the top drivers by events (all the day's alerts counted in their scorecards), by rule;
- each listed driver's trend: the safety score of each day of the window, one small chart
  per driver (a gap where the driver has no scorecard);
- the day's alerts by rule and local hour, stacked.

Each chart is a PNG drawn with matplotlib's Agg backend at a fixed size, with nothing in it
that changes from run to run, embedded as a ``data:`` URI beside a table of its figures. No
script, no external resource (a Content-Security-Policy in the page forbids them), so the
file can be mailed, stored or opened anywhere. The footer says what the data covers.

Exit codes: 0 written; 1 no scorecard and no alert on that day, or the lake cannot be read;
2 bad arguments or settings, no lake, a history that cannot be loaded.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from connectors.alert_lake import alerts_root, scan_alerts
from connectors.scorecard_lake import scan_scorecards, scorecards_root
from fleetwatch._cli import UsageError, err, lake_dir, load_history
from runtime.clock import utc_now
from runtime.logs import configure_logging
from runtime.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_DAYS = 30
DEFAULT_TOP = 5
DEFAULT_MIN_KM = 25.0
DEFAULT_OUT = "report-{day}.html"
DPI = 100
CHART_WIDTH_PX = 800
BEST_COLOUR = "#2ca02c"
WORST_COLOUR = "#d62728"
TREND_COLOUR = "#4a6fa5"
DAY_COLOUR = "#ffd54f"
SEVERITIES = ("critical", "warning")
MAX_LISTED_GAPS = 7  # days without scorecards named in the footer; more: the first and last
_ALERTS_TOTAL = pl.col("alerts").list.eval(pl.element().struct.field("count")).list.sum()


class NoData(RuntimeError):
    """Nothing to report for the day, or the lake cannot be read (exit 1)."""


# -- what is read -------------------------------------------------------------------------


@dataclass(frozen=True)
class DayData:
    """The inputs of one day's report: ``cards`` are the window's scorecards (with
    ``events``, the sum of ``alerts``), ``alerts`` the day's (with ``hour``, local)."""

    day: date
    first_day: date
    zone: ZoneInfo
    lake: Path
    cards: pl.DataFrame
    alerts: pl.DataFrame
    trucks: int | None  # from the telemetry; None when the lake has none of that day
    names: Mapping[str, str]

    @property
    def today(self) -> pl.DataFrame:
        return self.cards.filter(pl.col("day") == self.day)

    def name(self, driver_id: str | None) -> str:
        if driver_id is None:
            return "no driver"
        name = self.names.get(driver_id)
        return f"{name} ({driver_id})" if name else driver_id


def read_cards(lake: Path, first_day: date, day: date) -> pl.DataFrame:
    try:
        frame = scan_scorecards(lake, first_day=first_day, last_day=day).collect()
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise NoData(f"cannot read the scorecards in {scorecards_root(lake)}: {error}") from error
    return frame.with_columns(_ALERTS_TOTAL.fill_null(0).alias("events"))


def read_alerts(lake: Path, day: date, zone: ZoneInfo) -> pl.DataFrame:
    """The day's alerts (local day of window_end), with ``hour``, the local hour. The
    partitions are UTC dates: the local day lies within the UTC dates either side."""
    local = pl.col("window_end").dt.convert_time_zone(zone.key)
    try:
        frame = scan_alerts(
            lake, first_day=day - timedelta(days=1), last_day=day + timedelta(days=1)
        )
        return (
            frame.filter(local.dt.date() == day)
            .with_columns(local.dt.hour().cast(pl.Int64).alias("hour"))
            .collect()
        )
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise NoData(f"cannot read the alerts in {alerts_root(lake)}: {error}") from error


def count_trucks(lake: Path, day: date, zone: ZoneInfo) -> int | None:
    """Distinct trucks with a reading on the local day, from the telemetry's partitions
    (``date=`` UTC dates); None when the lake keeps none of those dates."""
    dates = [day + timedelta(days=n) for n in (-1, 0, 1)]
    files = sorted(
        path
        for d in dates
        for path in (lake / f"date={d.isoformat()}").glob("*.parquet")
        if not path.name.startswith(".")
    )
    if not files:
        return None
    local_day = pl.col("ts").dt.convert_time_zone(zone.key).dt.date()
    try:
        trucks = (
            pl.scan_parquet(files, hive_partitioning=False)
            .select("truck_id", "ts")
            .filter(local_day == day)
            .select(pl.col("truck_id").n_unique())
            .collect(engine="streaming")  # a day of telemetry: not all in memory at once
            .item()
        )
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise NoData(f"cannot read the telemetry of {day} in {lake}: {error}") from error
    return int(trucks)


def driver_names(data_alerts: pl.DataFrame, history_names: Mapping[str, str]) -> dict[str, str]:
    """The history's names, else the newest name an alert of the day carries."""
    names: dict[str, str] = {}
    rows = data_alerts.select(
        "driver_id", pl.col("driver").struct.field("name").alias("name")
    ).drop_nulls()
    for driver_id, name in rows.iter_rows():
        names[driver_id] = name
    names.update(history_names)
    return names


# -- what is computed ----------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    drivers: int
    trucks: int | None
    readings: int
    unassigned_readings: int
    distance_km: float
    driving_h: float
    alerts: int
    by_severity: dict[str, int]
    without_driver: int


def summary(data: DayData) -> Summary:
    today = data.today
    drivers = today.filter(pl.col("driver_id").is_not_null())
    unassigned = today.filter(pl.col("driver_id").is_null())["readings"].sum()
    severities = dict(data.alerts.group_by("severity").len().iter_rows())
    by_severity = {s: int(severities.pop(s, 0)) for s in SEVERITIES}
    by_severity.update({str(s): int(n) for s, n in sorted(severities.items(), key=str)})
    return Summary(
        drivers=drivers.height,
        trucks=data.trucks,
        readings=int(today["readings"].sum()),
        unassigned_readings=int(unassigned),
        distance_km=float(today["distance_km"].sum()),
        driving_h=float(today["driving_s"].sum()) / 3600,
        alerts=data.alerts.height,
        by_severity=by_severity,
        without_driver=data.alerts.filter(pl.col("driver_id").is_null()).height,
    )


def ranked_by_score(data: DayData, min_km: float, top: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(best, worst) of the day's drivers with at least ``min_km``: best by score (then fewer
    events per 1,000 km, more km, id), worst the other end of that order, worst first; no
    driver in both, so with fewer than 2 x ``top`` eligible the worst list is shorter."""
    eligible = data.today.filter(
        pl.col("driver_id").is_not_null() & (pl.col("distance_km") >= min_km)
    ).sort(
        ["safety_score", "events_per_1000km", "distance_km", "driver_id"],
        descending=[True, False, True, False],
        nulls_last=True,
    )
    best = eligible.head(top)
    worst = eligible.tail(min(top, max(0, eligible.height - top))).reverse()
    return best, worst


def ranked_by_events(data: DayData, top: int) -> pl.DataFrame:
    """The day's drivers with at least one event, most first (then more per 1,000 km, id)."""
    return (
        data.today.filter(pl.col("driver_id").is_not_null() & (pl.col("events") > 0))
        .sort(
            ["events", "events_per_1000km", "driver_id"],
            descending=[True, True, False],
            nulls_last=True,
        )
        .head(top)
    )


def listed_drivers(*frames: pl.DataFrame) -> list[str]:
    """The drivers of the ranked lists, each once, in the order first listed."""
    seen: dict[str, None] = {}
    for frame in frames:
        for driver_id in frame["driver_id"]:
            seen.setdefault(driver_id, None)
    return list(seen)


def trends(data: DayData, drivers: Sequence[str]) -> pl.DataFrame:
    """Per listed driver over the window: days with a scorecard, km, mean / lowest score,
    the day's score (null when none); in the order given."""
    window = data.cards.filter(pl.col("driver_id").is_in(list(drivers)))
    stats = window.group_by("driver_id").agg(
        pl.len().alias("days"),
        pl.col("distance_km").sum().alias("distance_km"),
        pl.col("safety_score").mean().alias("mean_score"),
        pl.col("safety_score").min().alias("lowest"),
        pl.col("safety_score").filter(pl.col("day") == data.day).first().alias("today"),
    )
    order = pl.DataFrame({"driver_id": list(drivers)}, schema={"driver_id": pl.String})
    return order.join(stats, on="driver_id", how="left", maintain_order="left")


def rule_hours(alerts: pl.DataFrame) -> pl.DataFrame:
    """rule, hour, count of the day's alerts, by rule then hour."""
    return alerts.group_by("rule", "hour").len("count").sort("rule", "hour")


# -- the pictures --------------------------------------------------------------------------


def rule_colours(rules: Sequence[str]) -> dict[str, str]:
    """A colour per rule, by sorted rule name (tab20: twenty before one repeats)."""
    palette = colormaps["tab20"]
    ordered = sorted(set(rules))
    return {
        r: "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in palette(i % 20)[:3]))
        for i, r in enumerate(ordered)
    }


def _figure(height_px: int, width_px: int = CHART_WIDTH_PX) -> Figure:
    # Constrained layout: the legends outside the axes on the right, and no label cut off.
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (no time in its metadata: the same data, the same bytes)."""
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def scores_chart(data: DayData, best: pl.DataFrame, worst: pl.DataFrame) -> bytes:
    rows = [(r, BEST_COLOUR) for r in best.iter_rows(named=True)]
    rows += [(r, WORST_COLOUR) for r in worst.iter_rows(named=True)]
    figure = _figure(90 + 30 * len(rows))
    axes = figure.subplots()
    y = np.arange(len(rows))[::-1]
    scores = [r["safety_score"] for r, _ in rows]
    axes.barh(y, scores, color=[c for _, c in rows], height=0.7)
    axes.set_yticks(y, [data.name(r["driver_id"]) for r, _ in rows], fontsize=8)
    for yi, (r, _) in zip(y, rows, strict=True):
        label = f" {r['safety_score']:.0f}  ({r['distance_km']:.0f} km, {r['events']} events)"
        axes.text(r["safety_score"], yi, label, va="center", fontsize=8)
    axes.set_xlim(0, 130)
    axes.set_xticks(range(0, 101, 20))
    axes.set_xlabel("safety score (0-100)")
    axes.set_title(f"Best (green) and worst (red) safety scores, {data.day}", fontsize=10)
    return png(figure)


def events_chart(data: DayData, ranked: pl.DataFrame) -> bytes:
    rows = list(ranked.iter_rows(named=True))
    colours = rule_colours([a["rule"] for r in rows for a in r["alerts"]])
    figure = _figure(100 + 30 * len(rows))
    axes = figure.subplots()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for rule, colour in colours.items():
        counts = np.array(
            [sum(a["count"] for a in r["alerts"] if a["rule"] == rule) for r in rows], dtype=float
        )
        axes.barh(y, counts, left=left, color=colour, height=0.7, label=rule)
        left += counts
    axes.set_yticks(y, [data.name(r["driver_id"]) for r in rows], fontsize=8)
    axes.set_xlim(0, max(1.0, float(left.max())) * 1.05)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("events (alerts) on the day")
    figure.legend(loc="outside right upper", fontsize=7, frameon=False)
    axes.set_title(f"Most events, {data.day}, by rule", fontsize=10)
    return png(figure)


TREND_COLUMNS = 4


def trends_chart(data: DayData, drivers: Sequence[str]) -> bytes:
    """Small multiples: one chart per driver, score by day over the window."""
    days = [data.first_day + timedelta(days=n) for n in range((data.day - data.first_day).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    rows = math.ceil(len(drivers) / TREND_COLUMNS)
    figure = _figure(40 + 150 * rows)
    grid = figure.subplots(rows, TREND_COLUMNS, squeeze=False, sharex=True, sharey=True)
    for n, axes in enumerate(grid.flat):
        if n >= len(drivers):
            axes.set_visible(False)
            continue
        driver = drivers[n]
        mine = data.cards.filter(pl.col("driver_id") == driver)
        scores = np.full(len(days), np.nan)
        for d, s in mine.select("day", "safety_score").iter_rows():
            if s is not None:
                scores[index[d]] = s
        x = np.arange(len(days))
        axes.axvspan(len(days) - 1.5, len(days) - 0.5, color=DAY_COLOUR, alpha=0.6, lw=0)
        axes.plot(x, scores, color=TREND_COLOUR, lw=1.2, marker="o", markersize=3)
        axes.set_ylim(-5, 105)
        axes.set_xlim(-0.5, len(days) - 0.5)
        axes.set_yticks([0, 50, 100])
        ticks = [0, len(days) - 1]
        axes.set_xticks(ticks, [f"{days[t]:%d %b}" for t in ticks], fontsize=7)
        axes.tick_params(axis="y", labelsize=7)
        axes.set_title(data.name(driver), fontsize=8)
    figure.suptitle(
        f"Safety score by day, {days[0]} to {data.day} (the report's day shaded)", fontsize=10
    )
    return png(figure)


def hours_chart(data: DayData, counts: pl.DataFrame) -> bytes:
    colours = rule_colours(counts["rule"].to_list())
    figure = _figure(380)
    axes = figure.subplots()
    hours = np.arange(24)
    bottom = np.zeros(24)
    for rule, colour in colours.items():
        heights = np.zeros(24)
        for hour, n in counts.filter(pl.col("rule") == rule).select("hour", "count").iter_rows():
            heights[hour] = n
        axes.bar(hours, heights, bottom=bottom, color=colour, width=0.8, label=rule)
        bottom += heights
    axes.set_xticks(hours, [f"{h:02d}" for h in hours], fontsize=8)
    axes.set_xlim(-0.6, 23.6)
    axes.set_ylim(0, max(1.0, float(bottom.max())) * 1.1)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    zone = data.zone.key
    axes.set_xlabel(f"hour of day ({zone})")
    axes.set_ylabel("alerts")
    figure.legend(loc="outside right upper", fontsize=7, frameon=False)
    axes.set_title(f"Alerts by rule and hour, {data.day}", fontsize=10)
    return png(figure)


# -- the page ------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px;
  padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em;
  border-bottom: 1px solid #ccc; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.pair img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; }
th { background: #f3f3f3; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
footer { margin-top: 2.5em; color: #555; font-size: 0.85em; border-top: 1px solid #ccc; }
"""
# Nothing from outside the page, no script: only its own styles and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

Cell = str | int | float | None


def _cell(value: Cell, digits: int = 1) -> str:
    if value is None:
        return '<td class="n">&ndash;</td>'
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"<td>{html.escape(str(value))}</td>"
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"
    return f'<td class="n">{text}</td>'


def table(
    table_id: str, caption: str, header: Sequence[str], rows: Sequence[Sequence[Cell]]
) -> str:
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return (
        f'<table id="{table_id}"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def image(image_id: str, data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img id="{image_id}" src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _rules_text(alerts: Sequence[Mapping[str, object]]) -> str:
    return ", ".join(f"{a['rule']} {a['count']}" for a in alerts) or "none"


@dataclass(frozen=True)
class Page:
    html: str
    summary: Summary
    images: int


def _section(section_id: str, heading: str, *body: str) -> str:
    return f'<section id="{section_id}"><h2>{html.escape(heading)}</h2>{"".join(body)}</section>'


def _pair(picture: str, figures: str) -> str:
    """A chart and the table of its figures, side by side where the page is wide enough."""
    return f'<div class="pair">{picture}{figures}</div>'


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _summary_section(s: Summary) -> str:
    severities: list[list[Cell]] = [[f"alerts: {k}", n] for k, n in s.by_severity.items()]
    rows: list[list[Cell]] = [
        ["drivers with a scorecard", s.drivers],
        ["trucks with a reading", s.trucks],
        ["readings", s.readings],
        ["readings without a driver", s.unassigned_readings],
        ["distance (km)", round(s.distance_km, 1)],
        ["driving (h)", round(s.driving_h, 1)],
        ["alerts", s.alerts],
        *severities,
        ["alerts without a driver", s.without_driver],
    ]
    return _section(
        "summary", "The day", table("summary-table", "The day in figures", ["what", "value"], rows)
    )


def _scores_section(
    data: DayData, best: pl.DataFrame, worst: pl.DataFrame, top: int, min_km: float
) -> tuple[str, int]:
    note = (
        f'<p class="note">Ranked among the drivers who drove at least {min_km:g} km on the day: '
        "a few km without an event score 100 and say little. The best "
        f"{top} and the worst {top}, no one in both. The score is 100 less 1,000 times the "
        "day's weighted alerts per km, a day under 100 km counted as 100 km (README, "
        '"Driver scorecards").</p>'
    )
    if best.is_empty():
        return _section(
            "scores",
            "Top drivers by safety score",
            note,
            f"<p>No driver drove {min_km:g} km or more on {data.day}.</p>",
        ), 0
    header = ["rank", "driver", "score", "km", "events", "events / 1,000 km", "by rule"]
    rows: list[list[Cell]] = [
        [
            f"{label} {n}",
            data.name(r["driver_id"]),
            round(r["safety_score"], 1),
            round(r["distance_km"], 1),
            r["events"],
            _rate(r["events_per_1000km"]),
            _rules_text(r["alerts"]),
        ]
        for label, frame in (("best", best), ("worst", worst))
        for n, r in enumerate(frame.iter_rows(named=True), 1)
    ]
    alt = (
        f"Bar chart of the safety scores of the {best.height} best and {worst.height} worst "
        "drivers, with their km and events"
    )
    picture = image("scores-chart", scores_chart(data, best, worst), alt)
    figures = table("scores-table", "By safety score", header, rows)
    return _section("scores", "Top drivers by safety score", note, _pair(picture, figures)), 1


def _events_section(data: DayData, ranked: pl.DataFrame) -> tuple[str, int]:
    heading = "Top drivers by events"
    if ranked.is_empty():
        return _section("events", heading, f"<p>No driver had an event on {data.day}.</p>"), 0
    header = ["driver", "events", "by rule", "km", "events / 1,000 km", "score"]
    rows: list[list[Cell]] = [
        [
            data.name(r["driver_id"]),
            r["events"],
            _rules_text(r["alerts"]),
            round(r["distance_km"], 1),
            _rate(r["events_per_1000km"]),
            round(r["safety_score"], 1),
        ]
        for r in ranked.iter_rows(named=True)
    ]
    alt = f"Stacked bar chart of the events by rule of the {ranked.height} drivers with most"
    picture = image("events-chart", events_chart(data, ranked), alt)
    figures = table("events-table", "By events", header, rows)
    return _section("events", heading, _pair(picture, figures)), 1


def _trends_section(data: DayData, listed: Sequence[str]) -> tuple[str, int]:
    days = (data.day - data.first_day).days + 1
    heading = f"Their last {days} days"
    if not listed:
        return _section("trends", heading, "<p>No driver listed above.</p>"), 0
    header = ["driver", "days with data", "km", "mean score", "lowest", f"{data.day}"]
    rows: list[list[Cell]] = [
        [
            data.name(r["driver_id"]),
            r["days"],
            round(r["distance_km"], 1),
            round(r["mean_score"], 1),
            round(r["lowest"], 1),
            _rate(r["today"]),
        ]
        for r in trends(data, listed).iter_rows(named=True)
    ]
    alt = f"Small line charts of the daily safety score of {len(listed)} drivers over {days} days"
    picture = image("trends-chart", trends_chart(data, listed), alt)
    figures = table("trends-table", f"{data.first_day} to {data.day}", header, rows)
    return _section("trends", heading, _pair(picture, figures)), 1


def _hours_section(data: DayData) -> tuple[str, int]:
    heading = "Alerts by rule and hour"
    counts = rule_hours(data.alerts)
    if counts.is_empty():
        return _section("hours", heading, f"<p>No alert on {data.day}.</p>"), 0
    hours = sorted(set(counts["hour"].to_list()))
    rules = sorted(set(counts["rule"].to_list()))
    grid = {(r, h): n for r, h, n in counts.iter_rows()}
    header = ["rule", *(f"{h:02d}h" for h in hours), "total"]
    rows: list[list[Cell]] = []
    for rule in rules:
        cells = [grid.get((rule, h), 0) for h in hours]
        rows.append([rule, *cells, sum(cells)])
    totals = [sum(grid.get((r, h), 0) for r in rules) for h in hours]
    rows.append(["all rules", *totals, sum(totals)])
    alt = f"Stacked bar chart of the day's {data.alerts.height} alerts by rule and local hour"
    picture = image("hours-chart", hours_chart(data, counts), alt)
    caption = f"Alerts by local hour ({data.zone.key})"
    figures = table("hours-table", caption, header, rows)
    return _section("hours", heading, _pair(picture, figures)), 1


def _footer(data: DayData, generated_at: datetime) -> str:
    days = (data.day - data.first_day).days + 1
    with_data = set(data.cards["day"].to_list())
    without = [data.first_day + timedelta(days=n) for n in range(days)]
    without = [d for d in without if d not in with_data]
    if not with_data:
        gaps = ""
    elif len(without) <= MAX_LISTED_GAPS:
        gaps = f" (none on {', '.join(d.isoformat() for d in without)})" if without else ""
    else:
        first, last = min(with_data), max(with_data)
        gaps = f" (the first {first}, the last {last})"
    return (
        "<footer><p>"
        f"Scorecards on {len(with_data)} of the {days} days {data.first_day} to {data.day}"
        f"{gaps}; the alerts and trucks of {data.day}; days and hours in "
        f"{html.escape(data.zone.key)}. Lake: {html.escape(str(data.lake))}. "
        f"Generated at {generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by "
        "<code>python -m fleetwatch.report</code>.</p></footer>"
    )


def render(
    data: DayData,
    *,
    top: int = DEFAULT_TOP,
    min_km: float = DEFAULT_MIN_KM,
    generated_at: datetime,
) -> Page:
    """The page for ``data``; ``generated_at`` is said in the footer only."""
    s = summary(data)
    best, worst = ranked_by_score(data, min_km, top)
    by_events = ranked_by_events(data, top)
    sections = [
        _scores_section(data, best, worst, top, min_km),
        _events_section(data, by_events),
        _trends_section(data, listed_drivers(best, worst, by_events)),
        _hours_section(data),
    ]
    title = f"Fleet day {data.day.isoformat()}"
    body = [
        f"<header><h1>{html.escape(title)} ({html.escape(data.zone.key)})</h1></header>",
        "<main>",
        _summary_section(s),
        *(text for text, _ in sections),
        "</main>",
        _footer(data, generated_at),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)} - fleetwatch</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    return Page(page, s, sum(n for _, n in sections))


# -- the command ---------------------------------------------------------------------------


RELATIVE_DAYS = {"today": 0, "yesterday": 1}


def parse_day(text: str) -> date | str:
    """YYYY-MM-DD, or ``today`` / ``yesterday`` (resolved in FLEET_TIMEZONE when run)."""
    if text in RELATIVE_DAYS:
        return text
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a day as YYYY-MM-DD, today or yesterday"
        ) from None


def the_day(value: date | str, zone: ZoneInfo, now: datetime) -> date:
    if isinstance(value, date):
        return value
    return now.astimezone(zone).date() - timedelta(days=RELATIVE_DAYS[value])


def _positive_int(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number 1-{limit}")
        return value

    return parse


def _km(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: give km, 0-100000")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.report",
        description="The fleet's day as one self-contained HTML page with charts.",
    )
    parser.add_argument(
        "--day",
        type=parse_day,
        required=True,
        help="YYYY-MM-DD, today or yesterday: a local day (FLEET_TIMEZONE)",
    )
    parser.add_argument(
        "--lake", type=Path, metavar="DIR", help="the lake directory (default FLEET_LAKE_DIR)"
    )
    parser.add_argument(
        "--out",
        metavar="FILE.html",
        help="the page, {day} standing for the day (default report-{day}.html)",
    )
    parser.add_argument(
        "--days",
        type=_positive_int(366),
        default=DEFAULT_DAYS,
        help=f"the trends' window, ending on --day (default {DEFAULT_DAYS})",
    )
    parser.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="driver history, for names (default: FLEET_HISTORY_DSN / FLEET_HISTORY_DIR)",
    )
    parser.add_argument(
        "--top",
        type=_positive_int(50),
        default=DEFAULT_TOP,
        help=f"drivers in each ranked list (default {DEFAULT_TOP})",
    )
    parser.add_argument(
        "--min-km",
        type=_km,
        default=DEFAULT_MIN_KM,
        metavar="KM",
        help=f"ranked by score only with this many km on the day (default {DEFAULT_MIN_KM:g})",
    )
    return parser.parse_args(argv)


def read_day(args: argparse.Namespace, settings: Settings, now: datetime) -> DayData:
    lake = lake_dir(args.lake, settings, "report")
    zone = ZoneInfo(settings.scorecards.timezone)
    history = load_history(args.history, settings, "report")
    day = the_day(args.day, zone, now)
    first_day = day - timedelta(days=args.days - 1)
    cards = read_cards(lake, first_day, day)
    alerts = read_alerts(lake, day, zone)
    if cards.filter(pl.col("day") == day).is_empty() and alerts.is_empty():
        with_data = sorted(set(cards["day"].to_list()))
        seen = f"; the last with data: {with_data[-1]}" if with_data else ""
        raise NoData(
            f"no scorecard and no alert of {day} ({zone.key}) in {lake} "
            f"(scorecards of {len(with_data)} of the {args.days} days to {day}{seen})"
        )
    names = driver_names(alerts, {d: v.name for d, v in history.drivers.items()})
    return DayData(day, first_day, zone, lake, cards, alerts, count_trucks(lake, day, zone), names)


def run(
    args: argparse.Namespace, settings: Settings, now: Callable[[], datetime]
) -> tuple[Path, Page]:
    started_at = now()
    data = read_day(args, settings, started_at)
    page = render(data, top=args.top, min_km=args.min_km, generated_at=started_at)
    out = Path((args.out or DEFAULT_OUT).replace("{day}", data.day.isoformat()))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(page.html, encoding="utf-8")
    temporary.replace(out)  # a reader (a web server, the e-mail) never sees half a page
    return out, page


def main(
    argv: Sequence[str] | None = None,
    *,
    settings_from_env: Callable[[], Settings] = Settings.from_env,
    now: Callable[[], datetime] = utc_now,
) -> int:
    configure_logging()
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        settings = settings_from_env()
        out, page = run(args, settings, now)
    except SettingsError as error:
        err(f"report: {error}")
        return EXIT_USAGE
    except UsageError as error:
        for line in error.lines:
            err(line)
        return EXIT_USAGE
    except NoData as error:
        err(f"report: {error}")
        return EXIT_FAILED
    except OSError as error:
        err(f"report: cannot write the page: {error}")
        return EXIT_FAILED
    s = page.summary
    err(
        f"report: wrote {out} ({s.drivers} drivers, {s.distance_km:,.1f} km, {s.alerts} alerts, "
        f"{page.images} charts, {time.perf_counter() - started:.2f} s)"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
