"""``python -m fleetwatch.whatif``: preview a rule catalogue change on the lake before it goes live.

    python -m fleetwatch.whatif --lake DIR --rules CANDIDATE_DIR [--baseline DIR]
        [--from T] [--to T] [--zones FILE] [--history DIR] [--out-dir DIR] [--top N]

Replays the readings of ``--lake`` (the Parquet lake, or anything FLEET_BACKFILL_INPUT takes: a
file, a directory searched recursively, a glob) twice through the backfill, the very flow and
rules code the stream runs (``dataflows.backfill.build_flow``, 1 worker, in this process):
once under the baseline catalogue, once under the candidate, and reports what would change.

- Baseline: ``--baseline DIR``; default the catalogue of FLEET_RULES when it is set, else the
  built-in catalogue from the FLEET_* knobs (CONTRACT.md sections 4 and 9): what runs today.
- Both catalogues are loaded strictly, with the zones of ``--zones`` (default FLEET_ZONES) and
  every problem reported (``fleetwatch.rules.check``): an invalid one stops the command
  before any replay, with each problem (file: rule: field: message) on stderr, exit 2.
- Posted limits: the readings of both replays get them from the road network as the flows
  give them (FLEET_ROADS, FLEET_ROAD_MATCH_M, FLEET_ROADS_CACHE), so posted_limit_over rules
  judge them; FLEET_ROADS=none: no limits (such rules fire nowhere).
- ``--history DIR`` (default FLEET_HISTORY_DSN / FLEET_HISTORY_DIR, as the flows): the drivers
  of the alerts ("by driver") and the trucks' vehicle classes (rule scopes), loaded once for
  both runs. A history that cannot be loaded is an error (exit 2): the backfill would run on
  with no history, but a preview by driver without drivers would mislead.
- ``--from`` / ``--to`` (RFC 3339 with offset, or YYYY-MM-DD for midnight UTC): only the
  readings with ``from <= ts < to`` are replayed (a filtered copy of the lake, written to the
  out dir and removed after the runs, is what both replays read: rows without a ts go with
  it). The rules see nothing before ``from``: a window cut there starts with empty rule state
  (no running count, cooldown or previous reading), so its first alerts can differ from the
  alerts of the whole lake near ``from``; start the window a little earlier to avoid that.
- Alerts are matched by ``alert_id`` (CONTRACT.md section 5: rule, truck and the oldest
  covered reading): *added* = only under the candidate, *removed* = only under the baseline,
  *changed* = in both with different content (another ``rule_version``, ``threshold_kmh``,
  ``details``, covered readings, severity, ...); the report counts which fields differed,
  and how many changed in ``rule_version`` alone (an unchanged rule in a renumbered version).
- Day = the UTC date of an alert's ``window_end`` (FLEET_TIMEZONE, a later issue, will make it
  the local day).

Output. Markdown on stdout (``render_markdown`` of a ``Report``, also saved as ``report.md``):
both catalogues' versions, the lake and window, totals, alerts per rule per day under each,
added/removed/changed by truck and by driver (the ``--top`` rows with the most changes, 50 by
default, 0 for all), the files written. In ``--out-dir`` (default ``./whatif-<UTC time>``; it
must be new or empty):

- ``diff.jsonl``: one line per differing alert, ordered by window_end, truck and rule:
  ``{"change": "added"|"removed", "alert": {...}}``, and for a changed alert
  ``{"change": "changed", "alert": <candidate's>, "baseline": <baseline's>}``;
- ``daily.png``: alerts per day, baseline and candidate side by side (1000 x 500 px);
- ``baseline/alerts.jsonl``, ``candidate/alerts.jsonl`` and their ``alerts.dlq.jsonl``: each
  run's alerts and dead letters, as the backfill writes them;
- ``report.md``: the Markdown printed.

Progress of each replay and the runs' summaries go to stderr. Exit codes: 0 done (also when
nothing changes); 1 a replay failed (the lake cannot be read, the flow failed); 2 bad
arguments, settings, catalogue, zones or history.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from connectors.parquet_input import (
    COLUMNS,
    BackfillInputError,
    resolve_inputs,
)
from connectors.road_limits import PostedLimits
from dataflows.backfill import dead_letter_path
from domain.catalogue import Catalogue, CatalogueError, RuleBook
from domain.history import HistoryIndex
from domain.rules import RuleConfig, builtin_book
from domain.timestamps import BadTimestamp, format_rfc3339_ms, parse_rfc3339_ms, to_epoch_ms
from fleetwatch import _cli
from fleetwatch._cli import ReplayError, err, replay_backfill, road_limits
from fleetwatch._cli import UsageError as UsageError  # noqa: PLC0414 (re-exported: devtools.demo)
from fleetwatch.rules import check
from runtime.clock import utc_now
from runtime.logs import configure_logging
from runtime.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

SIDES = ("baseline", "candidate")
NO_DRIVER = "no driver"
DIFF_FILE = "diff.jsonl"
CHART_FILE = "daily.png"
REPORT_FILE = "report.md"
WINDOW_FILE = "readings-in-window.parquet"  # removed after the runs
CHART_SIZE_IN = (10.0, 5.0)
CHART_DPI = 100  # 1000 x 500 pixels
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- the window --------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Readings with ``start_ms <= ts < end_ms``; None: open on that side."""

    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def whole(self) -> bool:
        return self.start_ms is None and self.end_ms is None

    def describe(self) -> str:
        if self.whole:
            return "the whole lake"
        start = "the beginning" if self.start_ms is None else format_rfc3339_ms(self.start_ms)
        end = "the end" if self.end_ms is None else format_rfc3339_ms(self.end_ms)
        return f"[{start}, {end})"

    def days(self) -> list[str] | None:
        """The UTC days the window touches, when it is closed on both sides."""
        if self.start_ms is None or self.end_ms is None or self.end_ms <= self.start_ms:
            return None
        return day_range(_utc_day(self.start_ms), _utc_day(self.end_ms - 1))


def parse_instant(text: str, option: str) -> int:
    """RFC 3339 with offset, or YYYY-MM-DD (midnight UTC), as epoch ms."""
    value = text.strip()
    try:
        if _DAY.match(value):
            return to_epoch_ms(
                datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            )
        return parse_rfc3339_ms(value)
    except (ValueError, BadTimestamp) as error:  # BadTimestamp is a ValueError too
        raise UsageError(f"{option}: {error} (give RFC 3339 with offset or YYYY-MM-DD)") from None


def window_from(start: str | None, end: str | None) -> Window:
    window = Window(
        None if start is None else parse_instant(start, "--from"),
        None if end is None else parse_instant(end, "--to"),
    )
    start_ms, end_ms = window.start_ms, window.end_ms
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise UsageError("--to must be after --from (the window is [from, to))")
    return window


def _utc_day(epoch_ms: int) -> str:
    return format_rfc3339_ms(epoch_ms)[:10]


def day_range(first: str, last: str) -> list[str]:
    """Every day from ``first`` to ``last`` (YYYY-MM-DD), both included."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


# -- the input ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """What the replays read: rows (bad and duplicate ones included) and their ts range."""

    rows: int
    first_ms: int | None
    last_ms: int | None

    def describe(self) -> str:
        if self.first_ms is None or self.last_ms is None:
            return f"{self.rows:,} rows"
        return (
            f"{self.rows:,} rows, ts from {format_rfc3339_ms(self.first_ms)} "
            f"to {format_rfc3339_ms(self.last_ms)}"
        )


def scan_lake(files: Sequence[Path]) -> pl.LazyFrame:
    """The lake's files as the backfill reads them (its columns, every row)."""
    # The backfill's own options (connectors/parquet_input.py), so the two read alike.
    return pl.scan_parquet(list(files), hive_partitioning=False, missing_columns="insert")


def lake_epoch_ms() -> pl.Expr:
    # A naive ts counts as UTC, as the backfill reads it; an aware one is an instant.
    return pl.col("ts").dt.epoch("ms")


def check_input(files: Sequence[Path]) -> None:
    """The lake's columns, as the backfill wants them (it would fail the same way, later)."""
    try:
        schema = scan_lake(files).collect_schema()
    except Exception as error:
        raise ReplayError(f"cannot read the lake: {error}") from error
    missing = [c for c in COLUMNS if c not in schema]
    if missing:
        raise ReplayError(f"the lake has no column {', '.join(map(repr, missing))}")
    if not isinstance(schema["ts"], pl.Datetime):
        raise ReplayError(f"the lake's column 'ts' is {schema['ts']}, expected a timestamp")


def measure(files: Sequence[Path]) -> Span:
    try:
        row = (
            scan_lake(files)
            .select(
                pl.len().alias("rows"),
                lake_epoch_ms().min().alias("first"),
                lake_epoch_ms().max().alias("last"),
            )
            .collect()
            .row(0)
        )
    except Exception as error:  # Polars raises many kinds for unreadable input
        raise ReplayError(f"cannot read the lake: {error}") from error
    rows, first, last = row
    return Span(
        int(rows), None if first is None else int(first), None if last is None else int(last)
    )


def cut_window(files: Sequence[Path], window: Window, target: Path) -> list[Path]:
    """The readings of ``window`` as one Parquet file (what both replays read)."""
    keep = pl.lit(True)
    if window.start_ms is not None:
        keep = keep & (lake_epoch_ms() >= window.start_ms)
    if window.end_ms is not None:
        keep = keep & (lake_epoch_ms() < window.end_ms)
    try:
        scan_lake(files).filter(keep).sink_parquet(target)
    except Exception as error:
        raise ReplayError(f"cannot read the lake: {error}") from error
    return [target]


# -- the catalogues and the history ------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """A catalogue to replay under, and where it came from (for the report)."""

    source: str
    catalogue: Catalogue


def load_rules(directory: Path, zones: Path | None, name: str, command: str = "whatif") -> Rules:
    """The catalogue of ``directory``, strictly, or a ``UsageError`` listing every problem."""
    try:
        return Rules(str(directory), check(directory, zones))
    except CatalogueError as error:
        raise UsageError(
            f"{command}: the {name} catalogue {directory} is invalid "
            f"({len(error.problems)} problems):",
            *(f"{name}: {p}" for p in error.problems),
        ) from None


def baseline_rules(
    directory: Path | None,
    zones: Path | None,
    settings: Settings,
    name: str = "baseline",
    command: str = "whatif",
) -> Rules:
    """``--baseline``, else FLEET_RULES, else the built-in catalogue of the FLEET_* knobs:
    the rules in force (``name`` and ``command`` for the messages)."""
    if directory is not None:
        return load_rules(directory, zones, name, command)
    if settings.rules.catalogue_dir is not None:
        rules = load_rules(settings.rules.catalogue_dir, zones, name, command)
        return Rules(f"FLEET_RULES={rules.source}", rules.catalogue)
    catalogue = builtin_book(settings.rules.config()).catalogue
    return Rules("the built-in catalogue (FLEET_* knobs)", catalogue)


def load_history(directory: Path | None, settings: Settings) -> HistoryIndex:
    """``--history DIR``, else the flows' history (FLEET_HISTORY_DSN or FLEET_HISTORY_DIR)."""
    return _cli.load_history(directory, settings, "whatif")


# -- one replay --------------------------------------------------------------------------

Alert = dict[str, Any]


@dataclass(frozen=True)
class Run:
    """One replay: its rules, its files, its alerts and how long it took."""

    name: str
    rules: Rules
    alerts_path: Path
    dead_letters_path: Path
    alerts: list[Alert]
    dead_letters: int
    seconds: float


def replay(
    name: str,
    rules: Rules,
    files: list[Path],
    history: HistoryIndex,
    config: RuleConfig,
    out_dir: Path,
    limits: PostedLimits | None = None,
) -> Run:
    """The backfill over ``files`` under ``rules``: 1 worker, in this process; ``limits``:
    the readings' posted limits (for posted_limit_over), as the flows attach them."""
    alerts_path = out_dir / name / "alerts.jsonl"
    book = RuleBook(rules.catalogue, history.vehicle_classes)
    print(f"whatif: replaying under the {name} catalogue ({rules.source})", file=sys.stderr)
    started = time.monotonic()
    progress = replay_backfill(
        files, book, config, history, alerts_path, limits=limits, what=f"the {name} replay"
    )
    seconds = time.monotonic() - started
    print(f"whatif: {name}: {progress.summary()}", file=sys.stderr)
    dead_path = dead_letter_path(alerts_path)
    return Run(
        name, rules, alerts_path, dead_path, read_jsonl(alerts_path), _lines(dead_path), seconds
    )


def read_jsonl(path: Path) -> list[Alert]:
    if not path.exists():
        return []
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    return [decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


# -- the comparison (pure) ---------------------------------------------------------------


def alert_day(alert: Alert) -> str:
    """The UTC date of its window_end (RFC 3339 UTC, ``...Z``)."""
    return str(alert["window_end"])[:10]


def driver_of(alert: Alert) -> str:
    driver = alert.get("driver_id")
    return NO_DRIVER if driver is None else str(driver)


@dataclass
class Changes:
    """Differing alerts of one truck or driver."""

    added: int = 0
    removed: int = 0
    changed: int = 0

    @property
    def total(self) -> int:
        return self.added + self.removed + self.changed

    def count(self, change: str) -> None:
        setattr(self, change, getattr(self, change) + 1)


@dataclass(frozen=True)
class Difference:
    """One differing alert: ``alert`` is the candidate's, or the baseline's when removed;
    ``baseline`` is the baseline's for a changed one."""

    change: str  # added | removed | changed
    alert: Alert
    baseline: Alert | None = None

    def line(self) -> bytes:
        document: dict[str, Any] = {"change": self.change, "alert": self.alert}
        if self.baseline is not None:
            document["baseline"] = self.baseline
        return json.dumps(document, sort_keys=True).encode()

    def order(self) -> tuple[str, str, str, str]:
        a = self.alert
        return (str(a["window_end"]), str(a["truck_id"]), str(a["rule"]), str(a["alert_id"]))


@dataclass
class Comparison:
    """The two runs' alerts compared; every count here comes from the two alert lists."""

    baseline_total: int = 0
    candidate_total: int = 0
    differences: list[Difference] = field(default_factory=list)
    # (day, rule) -> alerts under [baseline, candidate]
    per_rule_day: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    by_truck: dict[str, Changes] = field(default_factory=dict)
    by_driver: dict[str, Changes] = field(default_factory=dict)
    changed_fields: Counter[str] = field(default_factory=Counter)

    def total(self, change: str) -> int:
        return sum(1 for d in self.differences if d.change == change)

    @property
    def only_rule_version(self) -> int:
        """Changed alerts that differ in nothing but ``rule_version``: the same alert from
        an unchanged rule of a version with another number."""
        return sum(
            1
            for d in self.differences
            if d.baseline is not None and differing_fields(d.baseline, d.alert) == ["rule_version"]
        )

    @property
    def unchanged(self) -> int:
        return self.candidate_total - self.total("added") - self.total("changed")

    def daily(self) -> dict[str, list[int]]:
        """day -> alerts under [baseline, candidate], every rule."""
        days: dict[str, list[int]] = {}
        for (day, _rule), counts in self.per_rule_day.items():
            both = days.setdefault(day, [0, 0])
            both[0] += counts[0]
            both[1] += counts[1]
        return dict(sorted(days.items()))


def compare(baseline: Sequence[Alert], candidate: Sequence[Alert]) -> Comparison:
    result = Comparison(baseline_total=len(baseline), candidate_total=len(candidate))
    for side, alerts in enumerate((baseline, candidate)):
        for alert in alerts:
            key = (alert_day(alert), str(alert["rule"]))
            result.per_rule_day.setdefault(key, [0, 0])[side] += 1
    before = {str(a["alert_id"]): a for a in baseline}
    after = {str(a["alert_id"]): a for a in candidate}
    for alert_id, alert in after.items():
        old = before.get(alert_id)
        if old is None:
            result.differences.append(Difference("added", alert))
        elif old != alert:
            result.differences.append(Difference("changed", alert, old))
            result.changed_fields.update(differing_fields(old, alert))
    result.differences += [Difference("removed", a) for i, a in before.items() if i not in after]
    result.differences.sort(key=Difference.order)
    for difference in result.differences:
        truck = str(difference.alert["truck_id"])
        result.by_truck.setdefault(truck, Changes()).count(difference.change)
        result.by_driver.setdefault(driver_of(difference.alert), Changes()).count(difference.change)
    result.per_rule_day = dict(sorted(result.per_rule_day.items()))
    return result


def differing_fields(old: Alert, new: Alert) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything the Markdown says; built by ``run``, rendered by ``render_markdown``."""

    lake: str
    files: int
    span: Span
    window: Window
    baseline: Run
    candidate: Run
    comparison: Comparison
    out_dir: Path
    diff_path: Path
    chart_path: Path
    notes: list[str] = field(default_factory=list)


def render_markdown(report: Report, top: int = 50) -> str:
    sections = [
        _header(report),
        _totals(report),
        _per_rule_day(report.comparison),
        changes_table(
            "Added, removed and changed by truck",
            "truck_id",
            report.comparison.by_truck,
            top,
        ),
        changes_table(
            "Added, removed and changed by driver",
            "driver_id",
            report.comparison.by_driver,
            top,
        ),
        _files(report),
    ]
    return "\n\n".join(sections) + "\n"


def _header(report: Report) -> str:
    lines = [
        "# What-if: candidate rules against the baseline",
        "",
        f"- Lake: `{report.lake}` ({report.files} files); replayed: {report.window.describe()}, "
        f"{report.span.describe()}",
        "- Day: the UTC date of an alert's window_end",
        f"- Baseline: {report.baseline.rules.source}",
        *(f"  - {line}" for line in report.baseline.rules.catalogue.describe()),
        f"- Candidate: {report.candidate.rules.source}",
        *(f"  - {line}" for line in report.candidate.rules.catalogue.describe()),
    ]
    lines += [f"\n> Note: {note}" for note in report.notes]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a driver_id may hold a ``|``)."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


def _totals(report: Report) -> str:
    c = report.comparison
    rows = [
        ("baseline alerts", c.baseline_total),
        ("candidate alerts", c.candidate_total),
        ("added (only under the candidate)", c.total("added")),
        ("removed (only under the baseline)", c.total("removed")),
        ("changed (same alert_id, other content)", c.total("changed")),
        ("changed in rule_version alone", c.only_rule_version),
        ("unchanged", c.unchanged),
    ]
    lines = ["## Totals", "", "| | alerts |", "|---|---:|"]
    lines += [f"| {label} | {n} |" for label, n in rows]
    if c.changed_fields:
        fields = ", ".join(f"`{name}` {n}" for name, n in sorted(c.changed_fields.items()))
        lines += ["", f"Changed alerts differ in: {fields}."]
    return "\n".join(lines)


def _per_rule_day(comparison: Comparison) -> str:
    lines = ["## Alerts per rule per day", ""]
    if not comparison.per_rule_day:
        return "\n".join([*lines, "No alerts under either catalogue."])
    lines += ["| day | rule | baseline | candidate | change |", "|---|---|---:|---:|---:|"]
    for (day, rule), (before, after) in comparison.per_rule_day.items():
        lines.append(f"| {day} | {rule} | {before} | {after} | {_signed(after - before)} |")
    return "\n".join(lines)


def changes_table(title: str, key: str, changes: dict[str, Changes], top: int) -> str:
    lines = [f"## {title}", ""]
    if not changes:
        return "\n".join([*lines, "No differing alerts."])
    ranked = sorted(changes.items(), key=lambda item: (-item[1].total, item[0]))
    shown = ranked if top <= 0 else ranked[:top]
    lines += [f"| {key} | added | removed | changed |", "|---|---:|---:|---:|"]
    lines += [f"| {_cell(name)} | {c.added} | {c.removed} | {c.changed} |" for name, c in shown]
    if len(shown) < len(ranked):
        lines += ["", f"{len(ranked) - len(shown)} more (with fewer changes): see diff.jsonl."]
    return "\n".join(lines)


def _files(report: Report) -> str:
    lines = [
        "## Files",
        "",
        f"- Differing alerts: `{report.diff_path}` ({len(report.comparison.differences)} lines)",
        f"- Daily alerts chart: `{report.chart_path}`",
    ]
    for run in (report.baseline, report.candidate):
        lines.append(
            f"- {run.name.capitalize()} run: `{run.alerts_path}` ({len(run.alerts)} alerts), "
            f"`{run.dead_letters_path}` ({run.dead_letters} dead letters), "
            f"{run.seconds:.1f} s"
        )
    return "\n".join(lines)


def write_diff(differences: Iterable[Difference], path: Path) -> None:
    path.write_bytes(b"".join(d.line() + b"\n" for d in differences))


def chart_days(comparison: Comparison, window: Window) -> list[str]:
    """The days on the chart: the window's when it is closed, else from the first to the
    last day with an alert (days without any in between included)."""
    days = window.days()
    seen = list(comparison.daily())
    if days is None:
        return day_range(seen[0], seen[-1]) if seen else []
    return sorted(set(days) | set(seen))


def draw_chart(comparison: Comparison, window: Window, path: Path) -> None:
    """Alerts per day, baseline and candidate bars side by side, as a PNG (Agg)."""
    figure = Figure(figsize=CHART_SIZE_IN, dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    days = chart_days(comparison, window)
    daily = comparison.daily()
    positions = list(range(len(days)))
    for offset, side, colour in ((-0.2, 0, "tab:blue"), (0.2, 1, "tab:orange")):
        counts = [daily.get(day, [0, 0])[side] for day in days]
        axes.bar(
            [p + offset for p in positions], counts, width=0.4, label=SIDES[side], color=colour
        )
    step = max(1, len(days) // 20)  # at most about 20 labels
    axes.set_xticks(positions[::step], days[::step], rotation=45, ha="right")
    if not days:
        axes.text(0.5, 0.5, "no alerts", ha="center", va="center", transform=axes.transAxes)
    axes.set_title("Alerts per day (UTC): baseline vs candidate")
    axes.set_xlabel("day (UTC date of window_end)")
    axes.set_ylabel("alerts")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=CHART_DPI)


def notes_for(span: Span, window: Window, runs: Sequence[Run]) -> list[str]:
    """Warnings worth reading before the numbers."""
    notes: list[str] = []
    if span.rows == 0:
        notes.append("no readings were replayed: check --lake and the window")
    first = span.first_ms
    for run in runs:
        versions = run.rules.catalogue.versions
        if first is not None and versions and versions[0].effective_from_ms > first:
            notes.append(
                f"the {run.name} catalogue starts at "
                f"{format_rfc3339_ms(versions[0].effective_from_ms)}: no {run.name} rule "
                "judges the earlier readings (as live: a version applies from its "
                "effective_from)"
            )
    if window.start_ms is not None:
        notes.append(
            "the window starts with empty rule state: alerts near --from may differ from "
            "those of the whole lake"
        )
    return notes


# -- the command -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.whatif",
        description=(
            "Replay the lake through the backfill under a baseline and a candidate rule "
            "catalogue and report what would change: Markdown on stdout, the differing "
            "alerts (diff.jsonl) and a daily chart (daily.png) in --out-dir."
        ),
    )
    parser.add_argument(
        "--lake",
        required=True,
        metavar="DIR",
        help="the Parquet lake, or any FLEET_BACKFILL_INPUT (a file, a directory, a glob)",
    )
    parser.add_argument(
        "--rules", required=True, type=Path, metavar="DIR", help="the candidate catalogue"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="the baseline catalogue (default: FLEET_RULES, else the built-in catalogue)",
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="only readings with ts >= T (RFC 3339 with offset, or YYYY-MM-DD = 00:00 UTC)",
    )
    parser.add_argument("--to", dest="end", metavar="T", help="only readings with ts < T")
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
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="where to write diff.jsonl, daily.png and the runs (default: ./whatif-<UTC time>)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=50,
        metavar="N",
        help="rows of the by-truck and by-driver tables (default 50; 0: all)",
    )
    return parser.parse_args(argv)


def prepare_out_dir(out_dir: Path | None, now: Callable[[], datetime]) -> Path:
    """A new or empty directory: the runs' files must not mix with an earlier run's."""
    path = out_dir if out_dir is not None else Path(f"whatif-{now():%Y%m%dT%H%M%SZ}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--out-dir {path}: exists and is not an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(
    args: argparse.Namespace,
    settings: Settings,
    now: Callable[[], datetime] = utc_now,
) -> Report:
    """Everything but printing: load, replay twice, compare, write the files."""
    window = window_from(args.start, args.end)
    zones: Path | None = args.zones if args.zones is not None else settings.rules.zones
    candidate = load_rules(args.rules, zones, "candidate")
    baseline = baseline_rules(args.baseline, zones, settings)
    history = load_history(args.history, settings)
    # The candidate is a catalogue directory: its readings get posted limits as the flows
    # give them (one road network for both runs; the built-in rules use none).
    limits = road_limits(args.rules, settings, "whatif")
    try:
        files = resolve_inputs(args.lake)
    except BackfillInputError as error:
        raise UsageError(f"--lake: {error}") from None
    out_dir = prepare_out_dir(args.out_dir, now)
    window_file = out_dir / WINDOW_FILE
    try:
        check_input(files)
        replayed = files if window.whole else cut_window(files, window, window_file)
        span = measure(replayed)
        config = settings.rules.config()
        runs = [
            replay(name, rules, replayed, history, config, out_dir, limits)
            for name, rules in zip(SIDES, (baseline, candidate), strict=True)
        ]
    finally:
        window_file.unlink(missing_ok=True)
    comparison = compare(runs[0].alerts, runs[1].alerts)
    diff_path, chart_path = out_dir / DIFF_FILE, out_dir / CHART_FILE
    write_diff(comparison.differences, diff_path)
    draw_chart(comparison, window, chart_path)
    return Report(
        lake=args.lake,
        files=len(files),
        span=span,
        window=window,
        baseline=runs[0],
        candidate=runs[1],
        comparison=comparison,
        out_dir=out_dir,
        diff_path=diff_path,
        chart_path=chart_path,
        notes=notes_for(span, window, runs),
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    settings_from_env: Callable[[], Settings] = Settings.from_env,
    now: Callable[[], datetime] = utc_now,
    out: Callable[[str], None] = lambda text: print(text, end=""),
) -> int:
    configure_logging()
    args = parse_args(argv)
    try:
        settings = settings_from_env()
        report = run(args, settings, now)
    except SettingsError as error:
        err(f"whatif: {error}")
        return EXIT_USAGE
    except UsageError as error:
        for line in error.lines:
            err(line)
        return EXIT_USAGE
    except ReplayError as error:
        err(f"whatif: {error}")
        return EXIT_FAILED
    markdown = render_markdown(report, args.top)
    (report.out_dir / REPORT_FILE).write_text(markdown)
    out(markdown)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
