"""``python -m fleetwatch.explain``: why an archived alert fired, replayed through the same rules.

    python -m fleetwatch.explain ALERT_ID [--lake DIR] [--rules DIR] [--zones FILE]
        [--history DIR] [--out PNG]

Finds the alert by ``alert_id`` among the archived alerts of the lake (``--lake``, default
FLEET_LAKE_DIR; ``connectors.alert_lake.scan_alerts``: ``<lake>/alerts/``, deduplicated),
replays its truck's readings from the lake through the backfill (``dataflows.backfill``, the
stream's rules code, 1 worker, in this process) and shows why it fired.

What is replayed. Every reading of the alert's truck in the lake from the first one on, up to
the alert's ``window_end`` (plus ``AFTER_MS``, for the picture; later readings cannot change
an alert that fired at ``window_end``). From the first one on, because a rule's state can
depend on any earlier reading: a cooldown from an earlier alert, a run or a count window, a
rule whose definition has been unchanged since some older version. A window cut short would
start empty and could fire where the stream did not, or miss where it did; the whole history
of one truck is exact, and cheap (the other trucks' rows are filtered out by Polars before
any Python sees them). Every copy of an event id with a copy in that span is kept, so the
backfill's deduplication keeps the copy it keeps over the whole lake.

The rules: ``--rules DIR`` (checked strictly, with the zones of ``--zones``, default
FLEET_ZONES), else the catalogue of FLEET_RULES, else the built-in rules of the FLEET_* knobs:
what runs today. With a catalogue directory the readings get their posted limits from the
road network (FLEET_ROADS, as the flows: ``dataflows._rules.posted_limits``). The driver
history: ``--history DIR``, else FLEET_HISTORY_DSN / FLEET_HISTORY_DIR; it gives the
trucks' vehicle classes (rule scopes) and the driver assignment shown.

Reproduced: the replay gives an alert with the same ``alert_id``, ``rule``, ``rule_version``
and ``event_ids`` as the archived one. Other fields may differ without failing it (the
driver history may have changed since: ``driver_id``, ``severity``); they are listed.

Output. Markdown on stdout: whether the replay reproduced the alert (and if not, what
differs and the likely cause: the rules changed since, readings missing from the lake, ...),
the rule (id, kind, version, parameters, cooldown, scope, severity), the alert, the covered
readings (event_id, ts, speed, position, posted limit and road when the reading has one),
and the driver assignment as of ``window_end``. ``--out PNG`` (default
``explain-<alert_id>.png``, 1200 x 600 px): the truck's speed from ``window_start`` -
``BEFORE_MS`` to ``window_end`` + ``AFTER_MS``, the rule's threshold (for
``posted_limit_over`` each reading's posted limit and the speed above which it is over, as
steps; for ``deceleration`` the drop), the alert's window shaded and its covered readings
marked. Also drawn when the replay does not reproduce the alert.

Exit codes: 0 reproduced; 1 no archived alert has that id, or the replay failed (the lake
cannot be read, the flow failed); 2 bad arguments, no lake, bad settings, catalogue, zones
or history; 3 the replay does not reproduce the alert (what differs is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

from connectors.alert_lake import alert_files, alerts_root, scan_alerts
from connectors.parquet_input import (
    BackfillInputError,
    ParquetReadingsSource,
    TruckReadings,
    resolve_inputs,
)
from domain.alerts import ALERT_ID
from domain.catalogue import (
    BEGINNING_MS,
    Catalogue,
    CatalogueRule,
    CatalogueVersion,
    Prefilter,
    RuleBook,
)
from domain.history import Assignment, HistoryIndex
from domain.readings import Reading
from domain.rule_kinds import Deceleration, PostedLimitOver
from domain.timestamps import format_rfc3339_ms, to_epoch_ms
from fleetwatch._cli import (
    ReplayError,
    UsageError,
    err,
    lake_dir,
    load_history,
    replay_backfill,
    road_limits,
)
from fleetwatch.whatif import (
    Alert,
    Rules,
    baseline_rules,
    check_input,
    differing_fields,
    lake_epoch_ms,
    read_jsonl,
    scan_lake,
)
from runtime.logs import configure_logging
from runtime.progress import Progress
from runtime.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_REPRODUCED = 3

# What makes the replay's alert the archived one (section 5: the same alert always has the
# same id; the version and the covered readings say the same rule judged the same readings).
REPRODUCED_FIELDS = ("alert_id", "rule", "rule_version", "event_ids")
BEFORE_MS = 5 * 60_000  # the picture starts this long before window_start
AFTER_MS = 60_000  # and ends this long after window_end
CHART_SIZE_IN = (12.0, 6.0)
CHART_DPI = 100  # 1200 x 600 pixels
TRACE_COLOUR = "#4a6fa5"
COVERED_COLOUR = "#d62728"
LIMIT_COLOUR = "#2ca02c"
THRESHOLD_COLOUR = "#ff7f0e"
WINDOW_COLOUR = "#ffd54f"
CUT_FILE = "truck-readings.parquet"


class NotFound(RuntimeError):
    """No archived alert has the id, or the replay cannot run (exit 1)."""


# -- the archived alert ------------------------------------------------------------------


def archived_alert(row: dict[str, Any]) -> Alert:
    """A row of the archived alerts (``connectors.alert_lake.ALERT_SCHEMA``) in the wire form
    of ``fleet.alerts`` (CONTRACT.md section 5), as the backfill writes it: comparable."""
    alert = {k: v for k, v in row.items() if k not in ("date", "lat", "lon")}
    for name in ("window_start", "window_end", "detected_at"):
        value = row[name]
        alert[name] = None if value is None else format_rfc3339_ms(to_epoch_ms(value))
    lat, lon = row.get("lat"), row.get("lon")
    alert["position"] = None if lat is None or lon is None else {"lat": lat, "lon": lon}
    details = row.get("details")
    alert["details"] = json.loads(details) if details else {}
    alert["event_ids"] = list(row.get("event_ids") or [])
    return alert


def find_alert(lake: Path, alert_id: str) -> Alert:
    """The archived alert with this id (the first copy, as ``scan_alerts`` keeps it)."""
    try:
        found = scan_alerts(lake).filter(pl.col("alert_id") == alert_id).collect()
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise NotFound(
            f"cannot read the archived alerts in {alerts_root(lake)}: {error}"
        ) from error
    if found.is_empty():
        files = len(alert_files(lake))
        where = f"{alerts_root(lake)} ({files} files)" if files else f"{alerts_root(lake)} (none)"
        raise NotFound(f"no archived alert has the id {alert_id} in {where}")
    return archived_alert(found.row(0, named=True))


# -- the truck's readings ----------------------------------------------------------------


def cut_truck(files: Sequence[Path], truck_id: str, end_ms: int, target: Path) -> int:
    """The truck's rows with ts <= ``end_ms`` (and every copy of their event ids, wherever
    its ts) as one Parquet file; how many rows."""
    early = lake_epoch_ms() <= end_ms
    keep = early | pl.col("event_id").is_in(pl.col("event_id").filter(early).implode())
    try:
        rows = scan_lake(files).filter(pl.col("truck_id") == truck_id).filter(keep).collect()
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise ReplayError(f"cannot read the lake: {error}") from error
    rows.write_parquet(target)
    return rows.height


def readings_in(files: list[Path]) -> list[Reading]:
    """The valid readings of ``files`` as the backfill's source reads them (bad rows set
    apart, duplicates dropped, in event-time order), every one of them kept."""
    quiet = Progress(out=io.StringIO())
    source = ParquetReadingsSource(files, Prefilter(-math.inf), buckets=1, progress=quiet)
    partition = source.build_part("explain", "0", None)
    readings: list[Reading] = []
    while True:
        try:
            batch = partition.next_batch()
        except StopIteration:
            return readings
        for item in batch:
            if isinstance(item, TruckReadings):
                readings.extend(item.readings)


# -- the rule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleFound:
    """The rule as a catalogue version defines it."""

    rule: CatalogueRule
    version: CatalogueVersion


def find_rule(catalogue: Catalogue, rule_id: str, version: int, at_ms: int) -> RuleFound | None:
    """The rule of the version the alert names, else of the version in force at ``at_ms``."""
    in_force = catalogue.at(at_ms)
    candidates = [v for v in catalogue.versions if v.version == version]
    if in_force is not None:
        candidates.append(in_force.version)
    for v in candidates:
        for rule in v.rules:
            if rule.id == rule_id:
                return RuleFound(rule, v)
    return None


def parameters(rule: CatalogueRule) -> list[tuple[str, str]]:
    """The kind's parameters as a catalogue file names them (times in seconds)."""
    kind = rule.definition.kind
    shown: list[tuple[str, str]] = []
    for f in dataclasses.fields(kind):  # type: ignore[arg-type]
        if not f.repr:
            continue  # a zone's geometry: the rule names its zone
        value = getattr(kind, f.name)
        name = f.name
        if name.endswith("_ms"):
            name, value = name[:-3] + "_s", value / 1000
        elif name == "zone_name":
            name = "zone"
        shown.append((name, f"{value:g}" if isinstance(value, float | int) else str(value)))
    return shown


def scope_text(rule: CatalogueRule) -> str:
    scope = rule.definition.scope
    if scope.everyone:
        return "every truck"
    parts = []
    if scope.trucks is not None:
        parts.append("trucks " + ", ".join(sorted(scope.trucks)))
    if scope.vehicle_classes is not None:
        parts.append("vehicle classes " + ", ".join(sorted(scope.vehicle_classes)))
    return " and ".join(parts)


# -- the explanation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """Everything the Markdown and the picture say; built by ``run``."""

    archived: Alert
    rules: Rules
    rule: RuleFound | None
    replayed: Alert | None  # the replay's alert with the same id
    replay_alerts: list[Alert]  # every alert of the replay (this truck)
    truck_rows: int  # rows of the truck's readings replayed
    trace: list[Reading]  # the truck's readings in the picture, limits attached
    covered: list[Reading]  # the archived alert's covered readings found in the lake
    missing: list[str]  # its event_ids the lake does not hold (valid)
    assignment: Assignment | None
    history: HistoryIndex
    png: Path
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def differing(self) -> list[str]:
        """Which of ``REPRODUCED_FIELDS`` differ (all of them when nothing was replayed)."""
        if self.replayed is None:
            return list(REPRODUCED_FIELDS)
        return [f for f in REPRODUCED_FIELDS if self.archived.get(f) != self.replayed.get(f)]

    @property
    def reproduced(self) -> bool:
        return not self.differing

    @property
    def other_differences(self) -> list[str]:
        """Fields outside ``REPRODUCED_FIELDS`` in which the replay's alert differs."""
        if self.replayed is None:
            return []
        fields = differing_fields(self.archived, self.replayed)
        # detected_at: the stream's processing time; the backfill's is window_end.
        return [f for f in fields if f not in REPRODUCED_FIELDS and f != "detected_at"]


def _ms(text: Any) -> int:
    return to_epoch_ms(datetime.fromisoformat(str(text)))


def explain_differences(x: Explanation) -> list[str]:
    """Why the replay did not give the archived alert: what differs, and likely causes."""
    a, r = x.archived, x.replayed
    lines: list[str] = []
    if r is None:
        lines += [f"The replay gave no alert with the id `{a['alert_id']}`.", ""]
        same_rule = [o for o in x.replay_alerts if o["rule"] == a["rule"]]
        near = sorted(same_rule, key=lambda o: abs(_ms(o["window_end"]) - _ms(a["window_end"])))
        for other in near[:3]:
            lines.append(
                f"- nearest of the replay's `{a['rule']}` alerts: `{other['alert_id']}`, "
                f"{other['window_start']} to {other['window_end']}, "
                f"{other['count']} readings, version {other['rule_version']}"
            )
    else:
        for name in x.differing:
            if name == "event_ids":
                only_a = [e for e in a["event_ids"] if e not in r["event_ids"]]
                only_r = [e for e in r["event_ids"] if e not in a["event_ids"]]
                lines.append(
                    f"- `event_ids`: archived {len(a['event_ids'])}, replayed "
                    f"{len(r['event_ids'])}; only archived: {_ids(only_a)}; only replayed: "
                    f"{_ids(only_r)}"
                )
            else:
                lines.append(f"- `{name}`: archived {a.get(name)!r}, replayed {r.get(name)!r}")
    lines += [f"- {note}" for note in causes(x)]
    return lines


def _ids(ids: Sequence[str]) -> str:
    if not ids:
        return "none"
    shown = ", ".join(f"`{e}`" for e in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def causes(x: Explanation) -> list[str]:
    """What can make a replay differ from the stream, where this alert shows it."""
    a = x.archived
    found: list[str] = []
    end_ms = _ms(a["window_end"])
    in_force = x.rules.catalogue.at(end_ms)
    if in_force is None:
        found.append(
            f"no version of {x.rules.source} is in force at {a['window_end']}: no rule judges "
            "the readings there"
        )
    else:
        version = in_force.version
        if version.version != a["rule_version"]:
            found.append(
                f"the rules changed since: at {a['window_end']} {x.rules.source} has version "
                f"{version.version} ({version.source}) in force, the alert says version "
                f"{a['rule_version']}"
            )
        if all(r.id != a["rule"] for r in version.rules):
            found.append(f"the version in force at {a['window_end']} has no rule `{a['rule']}`")
    if x.missing:
        found.append(
            f"the lake holds no valid reading for {len(x.missing)} of the covered event ids "
            f"({_ids(x.missing)}): not archived, or archived elsewhere"
        )
    if x.truck_rows == 0:
        found.append(f"the lake holds no reading of truck `{a['truck_id']}` up to window_end")
    return found


# -- the Markdown ------------------------------------------------------------------------


def render_markdown(x: Explanation) -> str:
    a = x.archived
    sections = [_header(x), _rule(x), _alert(a), _covered(x), _driver(x), _picture(x)]
    return "\n\n".join(sections) + "\n"


def _header(x: Explanation) -> str:
    a = x.archived
    lines = [f"# Why alert `{a['alert_id']}` fired", ""]
    replayed = (
        f"Replayed truck `{a['truck_id']}`'s {x.truck_rows:,} readings in the lake up to "
        f"{a['window_end']} (from its first reading on, so every rule's state is as the "
        f"stream had it) under {x.rules.source}, in {x.seconds:.1f} s."
    )
    if x.reproduced:
        lines.append(
            "**Reproduced**: the replay gives this alert again, with the same alert_id, rule, "
            f"rule_version and covered readings. {replayed}"
        )
        if x.other_differences:
            fields = ", ".join(f"`{f}`" for f in x.other_differences)
            lines += [
                "",
                f"It differs only in {fields}: the history or the catalogue's severities "
                "changed since (the replay uses today's).",
            ]
    else:
        lines += [
            f"**Not reproduced**: {replayed} What differs:",
            "",
            *explain_differences(x),
        ]
    lines += [f"\n> Note: {note}" for note in x.notes]
    return "\n".join(lines)


def _rule(x: Explanation) -> str:
    a = x.archived
    lines = ["## The rule", ""]
    found = x.rule
    if found is None:
        return "\n".join(
            [
                *lines,
                f"`{a['rule']}`, version {a['rule_version']}: no version of {x.rules.source} "
                "defines it.",
            ]
        )
    rule, version = found.rule, found.version
    start = version.effective_from_ms
    since = "the beginning" if start <= BEGINNING_MS else format_rfc3339_ms(start)
    params = ", ".join(f"{name} {value}" for name, value in parameters(rule))
    cooldown = rule.definition.cooldown_ms / 1000
    lines += [
        "| | |",
        "|---|---|",
        f"| rule | `{rule.id}` |",
        f"| kind | `{rule.definition.kind.name}` |",
        f"| version | {version.version} (in force from {since}; `{version.source}`) |",
        f"| parameters | {params} |",
        f"| cooldown_s | {cooldown:g} |",
        f"| scope | {scope_text(rule)} |",
        f"| severity | {'critical' if rule.critical else 'warning'} (a driver with risk tier "
        "high makes any alert critical) |",
    ]
    return "\n".join(lines)


def _alert(a: Alert) -> str:
    position = a.get("position")
    where = "none" if not position else f"{position['lat']:.6f}, {position['lon']:.6f}"
    details = json.dumps(a.get("details") or {}, sort_keys=True)
    return "\n".join(
        [
            "## The alert (as archived)",
            "",
            f"- truck `{a['truck_id']}`, severity {a['severity']}, version {a['rule_version']}",
            f"- window {a['window_start']} to {a['window_end']}: {a['count']} readings, "
            f"max {a['max_speed_kmh']:g} km/h, mean {a['mean_speed_kmh']:g} km/h, "
            f"threshold {a['threshold_kmh']:g} km/h",
            f"- position {where}; detected at {a['detected_at']}",
            f"- details `{details}`",
        ]
    )


def _covered(x: Explanation) -> str:
    lines = ["## The covered readings", ""]
    lines += [
        "| # | event_id | ts (UTC) | speed_kmh | lat | lon | posted limit | road |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for n, r in enumerate(x.covered, 1):
        limit = r.posted_limit
        lat = "" if r.lat is None else f"{r.lat:.6f}"
        lon = "" if r.lon is None else f"{r.lon:.6f}"
        posted = "" if limit is None else f"{limit.kmh:g} ({limit.source})"
        road = "" if limit is None else f"{limit.road_name or '(unnamed)'} (way {limit.osm_way_id})"
        lines.append(
            f"| {n} | `{r.event_id}` | {format_rfc3339_ms(r.ts_ms)} | {r.speed_kmh:g} | "
            f"{lat} | {lon} | {posted} | {_cell(road)} |"
        )
    if x.missing:
        lines += ["", f"Not in the lake: {_ids(x.missing)}."]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _driver(x: Explanation) -> str:
    a = x.archived
    lines = ["## The driver", ""]
    assignment = x.assignment
    if assignment is None:
        lines.append(
            f"The history assigns no driver to truck `{a['truck_id']}` at {a['window_end']}."
        )
    else:
        until = (
            "open-ended"
            if assignment.valid_to_ms is None
            else f"until {format_rfc3339_ms(assignment.valid_to_ms)}"
        )
        row = x.history.drivers.get(assignment.driver_id)
        who = "" if row is None else f" ({row.name}, risk tier {row.risk_tier})"
        lines.append(
            f"`{assignment.driver_id}`{who}: the driver of truck `{a['truck_id']}` at "
            f"window_end {a['window_end']}, assigned from "
            f"{format_rfc3339_ms(assignment.valid_from_ms)} {until} (valid_from <= window_end "
            "< valid_to; overlapping assignments resolved as the flows do, section 6)."
        )
    history_id = None if assignment is None else assignment.driver_id
    lines.append("")
    if a.get("driver_id") == history_id:
        lines.append(f"The archived alert names the same driver (`{a.get('driver_id')}`).")
    else:
        lines.append(
            f"The archived alert names `{a.get('driver_id')}`: the history has changed since."
        )
    return "\n".join(lines)


def _picture(x: Explanation) -> str:
    return "\n".join(
        [
            "## The speed trace",
            "",
            f"![speed trace]({x.png})",
            "",
            f"`{x.png}`: the truck's speed from {BEFORE_MS // 60_000} min before the window to "
            f"{AFTER_MS // 1000} s after ({len(x.trace):,} readings), the threshold, the window "
            "shaded and the covered readings marked.",
        ]
    )


# -- the picture -------------------------------------------------------------------------


def _when(ts_ms: Sequence[int]) -> npt.NDArray[np.datetime64]:
    """Epoch ms as the x values of the picture (UTC; matplotlib draws datetime64 as dates)."""
    return np.array(ts_ms, dtype="datetime64[ms]")


def draw(x: Explanation) -> None:
    a = x.archived
    figure = Figure(figsize=CHART_SIZE_IN, dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    start, end = _ms(a["window_start"]), _ms(a["window_end"])
    span = _when([start, end])
    axes.axvspan(span[0], span[1], color=WINDOW_COLOUR, alpha=0.35, label="alert window")
    times = _when([r.ts_ms for r in x.trace])
    speeds = [r.speed_kmh for r in x.trace]
    axes.plot(times, speeds, color=TRACE_COLOUR, linewidth=1.2, label="speed")
    kind = None if x.rule is None else x.rule.rule.definition.kind
    if isinstance(kind, PostedLimitOver):
        limits = [math.nan if r.posted_limit is None else r.posted_limit.kmh for r in x.trace]
        over = [
            lim + max(kind.over_kmh, lim * kind.over_pct / 100) if not math.isnan(lim) else lim
            for lim in limits
        ]
        axes.step(times, limits, where="post", color=LIMIT_COLOUR, label="posted limit")
        if over != limits:
            axes.step(
                times,
                over,
                where="post",
                color=THRESHOLD_COLOUR,
                linestyle="--",
                label="over above this (limit + allowance)",
            )
    elif isinstance(kind, Deceleration):
        if len(x.covered) >= 2:
            first, last = x.covered[0], x.covered[-1]
            axes.annotate(
                f"-{first.speed_kmh - last.speed_kmh:g} km/h in "
                f"{(last.ts_ms - first.ts_ms) / 1000:g} s (rule: a drop of "
                f"{kind.drop_kmh:g} km/h within {kind.within_ms / 1000:g} s)",
                xy=(_when([last.ts_ms])[0], last.speed_kmh),
                xytext=(_when([first.ts_ms])[0], first.speed_kmh + 10),
                arrowprops={"arrowstyle": "->", "color": THRESHOLD_COLOUR},
                color=THRESHOLD_COLOUR,
            )
    else:
        threshold = float(a["threshold_kmh"])
        axes.axhline(
            threshold,
            color=THRESHOLD_COLOUR,
            linestyle="--",
            label=f"threshold: over {threshold:g} km/h",
        )
    axes.scatter(
        _when([r.ts_ms for r in x.covered]),
        [r.speed_kmh for r in x.covered],
        s=40,
        color=COVERED_COLOUR,
        zorder=3,
        label=f"covered readings ({len(x.covered)})",
    )
    shown = _when([start - BEFORE_MS, end + AFTER_MS])
    axes.set_xlim(shown[0], shown[1])
    axes.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    axes.set_xlabel(f"time (UTC) on {a['window_end'][:10]}")
    axes.set_ylabel("speed (km/h)")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", fontsize=8, framealpha=0.9)
    version = a["rule_version"]
    verdict = "" if x.reproduced else " (NOT REPRODUCED)"
    axes.set_title(
        f"{a['rule']} (version {version}) on truck {a['truck_id']}: alert {a['alert_id']}{verdict}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(x.png, format="png", dpi=CHART_DPI)


# -- the command -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.explain",
        description=(
            "Find an archived alert, replay its truck's readings from the lake through the "
            "same rules and show why it fired: Markdown on stdout, a speed trace as PNG. "
            "Exit 3 when the replay does not reproduce it."
        ),
    )
    parser.add_argument("alert_id", metavar="ALERT_ID", help="the alert's alert_id")
    parser.add_argument(
        "--lake",
        type=Path,
        metavar="DIR",
        help="the lake directory, with the archived alerts in alerts/ (default FLEET_LAKE_DIR)",
    )
    parser.add_argument(
        "--rules",
        type=Path,
        metavar="DIR",
        help="the catalogue to replay under (default: FLEET_RULES, else the built-in rules)",
    )
    parser.add_argument(
        "--zones", type=Path, metavar="FILE", help="GeoJSON zones (default: FLEET_ZONES)"
    )
    parser.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="driver history directory (default: FLEET_HISTORY_DSN / FLEET_HISTORY_DIR)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="PNG", help="the speed trace (default explain-ALERT_ID.png)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, settings: Settings) -> Explanation:
    """Everything but printing: find, replay, compare, draw."""
    started = time.monotonic()
    if not ALERT_ID.fullmatch(args.alert_id):
        raise UsageError(f"explain: {args.alert_id!r} is no alert_id (1-128 of [A-Za-z0-9_.:-])")
    lake = lake_dir(args.lake, settings, "explain")
    zones = args.zones if args.zones is not None else settings.rules.zones
    rules = baseline_rules(args.rules, zones, settings, name="rules", command="explain")
    history = load_history(args.history, settings, "explain")
    archived = find_alert(lake, args.alert_id)
    try:
        files = resolve_inputs(str(lake))
    except BackfillInputError as error:
        raise NotFound(f"cannot replay: {error}") from None
    check_input(files)
    catalogue_dir = args.rules if args.rules is not None else settings.rules.catalogue_dir
    limits = road_limits(catalogue_dir, settings, "explain")
    book = RuleBook(rules.catalogue, history.vehicle_classes)
    truck, start, end = (
        archived["truck_id"],
        _ms(archived["window_start"]),
        _ms(archived["window_end"]),
    )
    with tempfile.TemporaryDirectory(prefix="explain-") as tmp:
        cut = Path(tmp) / CUT_FILE
        rows = cut_truck(files, truck, end + AFTER_MS, cut)
        replay_alerts: list[Alert] = []
        if rows:
            alerts_path = Path(tmp) / "alerts.jsonl"
            # One truck: seconds at most, so no progress lines, only the summary.
            progress = Progress(out=io.StringIO())
            replay_backfill(
                [cut],
                book,
                settings.rules.config(),
                history,
                alerts_path,
                limits=limits,
                progress=progress,
            )
            err(f"explain: replayed truck {truck}: {progress.summary()}")
            replay_alerts = read_jsonl(alerts_path)
        readings = readings_in([cut]) if rows else []
    trace = [r for r in readings if start - BEFORE_MS <= r.ts_ms <= end + AFTER_MS]
    if limits is not None:
        limits.attach([trace], book.vehicle_classes)
    by_id = {r.event_id: r for r in trace}
    covered = [by_id[e] for e in archived["event_ids"] if e in by_id]
    missing = [e for e in archived["event_ids"] if e not in by_id]
    replayed = next((a for a in replay_alerts if a["alert_id"] == archived["alert_id"]), None)
    explanation = Explanation(
        archived=archived,
        rules=rules,
        rule=find_rule(rules.catalogue, archived["rule"], archived["rule_version"], end),
        replayed=replayed,
        replay_alerts=replay_alerts,
        truck_rows=sum(1 for r in readings if r.ts_ms <= end),
        trace=trace,
        covered=covered,
        missing=missing,
        assignment=history.assignment_at(truck, end),
        history=history,
        png=args.out if args.out is not None else Path(f"explain-{archived['alert_id']}.png"),
        seconds=time.monotonic() - started,
    )
    explanation.png.parent.mkdir(parents=True, exist_ok=True)
    draw(explanation)
    return explanation


def main(
    argv: Sequence[str] | None = None,
    *,
    settings_from_env: Callable[[], Settings] = Settings.from_env,
    out: Callable[[str], None] = lambda text: print(text, end=""),
) -> int:
    configure_logging()
    args = parse_args(argv)
    try:
        settings = settings_from_env()
        explanation = run(args, settings)
    except SettingsError as error:
        err(f"explain: {error}")
        return EXIT_USAGE
    except UsageError as error:
        for line in error.lines:
            err(line)
        return EXIT_USAGE
    except (NotFound, ReplayError) as error:
        err(f"explain: {error}")
        return EXIT_FAILED
    except OSError as error:
        err(f"explain: cannot write {args.out}: {error}")
        return EXIT_FAILED
    out(render_markdown(explanation))
    if not explanation.reproduced:
        err(f"explain: the replay does not reproduce alert {args.alert_id}")
        return EXIT_NOT_REPRODUCED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
