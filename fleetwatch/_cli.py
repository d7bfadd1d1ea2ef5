"""What the operator commands of ``fleetwatch`` share: the two errors they report, stderr,
the lake directory and the driver history as the flows find them, and the backfill replayed
in this process.

``fleetwatch.whatif``, ``fleetwatch.map``, ``fleetwatch.explain`` and ``fleetwatch.report``
use these, so a lake, a catalogue or a history is read, replayed and reported on alike by
each of them.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from bytewax.run import cli_main
from polars.exceptions import PanicException

from connectors.history import load_history_dir, load_history_postgres
from connectors.jsonl_sink import JsonlSink
from connectors.parquet_input import ParquetReadingsSource
from connectors.road_limits import PostedLimits
from dataflows._rules import posted_limits
from dataflows.backfill import build_flow, dead_letter_path
from domain.catalogue import RuleBook
from domain.history import HistoryIndex
from domain.rules import RuleConfig
from runtime.progress import Progress
from runtime.settings import Settings, SettingsError


class UsageError(ValueError):
    """Bad arguments, settings, catalogue, zones or history: nothing was done (exit 2).
    ``lines`` are printed on stderr, one each."""

    def __init__(self, *lines: str) -> None:
        self.lines = lines
        super().__init__("; ".join(lines))


class ReplayError(RuntimeError):
    """A replay failed: the lake cannot be read, the flow failed (exit 1)."""


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def root_cause(error: BaseException) -> str:
    """The innermost cause of ``error`` (Bytewax wraps what a step raised), as text."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def lake_dir(option: Path | None, settings: Settings, command: str) -> Path:
    """``--lake DIR``, else FLEET_LAKE_DIR; neither, or not a directory, is a ``UsageError``."""
    lake = option if option is not None else settings.lake.dir
    if lake is None:
        raise UsageError(f"{command}: no lake: give --lake DIR or set FLEET_LAKE_DIR")
    if not lake.is_dir():
        raise UsageError(f"{command}: --lake {lake}: not a directory")
    return lake


def load_history(directory: Path | None, settings: Settings, command: str) -> HistoryIndex:
    """``--history DIR``, else the flows' history (FLEET_HISTORY_DSN or FLEET_HISTORY_DIR).
    One that cannot be loaded is a ``UsageError``: the backfill would run on without it,
    but a command that reports drivers must not report none by accident."""
    try:
        if directory is not None:
            return load_history_dir(directory)
        if settings.history.dsn:
            return load_history_postgres(settings.history.dsn)
        return load_history_dir(settings.history.dir)
    except (Exception, PanicException) as error:  # HistoryError, OSError, the database's
        raise UsageError(f"{command}: the driver history cannot be loaded: {error}") from None


def road_limits(
    catalogue_dir: Path | None, settings: Settings, command: str
) -> PostedLimits | None:
    """The posted limits the flows would give readings judged by the catalogue of
    ``catalogue_dir`` (``dataflows._rules.posted_limits``: FLEET_ROADS, FLEET_ROAD_MATCH_M,
    FLEET_ROADS_CACHE); None for the built-in rules (None) or FLEET_ROADS=none."""
    rules = dataclasses.replace(settings.rules, catalogue_dir=catalogue_dir)
    try:
        return posted_limits(rules)
    except SettingsError as error:
        raise UsageError(f"{command}: {error}") from None


def replay_backfill(
    files: list[Path],
    book: RuleBook,
    config: RuleConfig,
    history: HistoryIndex,
    alerts_path: Path,
    *,
    limits: PostedLimits | None = None,
    what: str = "the replay",
    progress: Progress | None = None,
) -> Progress:
    """The backfill (``dataflows.backfill.build_flow``: the stream's rules code) over
    ``files`` under ``book``, 1 worker, in this process: what ``python -m bytewax.run
    dataflows.backfill`` runs. Its alerts go to ``alerts_path``, its dead letters beside
    (``dead_letter_path``); both files exist afterwards, empty when nothing was written.
    ``limits``: the road network for posted limits (as ``dataflows._rules.posted_limits``
    gives the flows); ``progress``: where it reports (default: stderr every 2 s). Raises
    ``ReplayError`` naming ``what`` when the flow fails."""
    dead_path = dead_letter_path(alerts_path)
    progress = progress if progress is not None else Progress()
    source = ParquetReadingsSource(files, book.catalogue.prefilter, progress=progress)
    flow = build_flow(
        source,
        JsonlSink(alerts_path),
        JsonlSink(dead_path),
        config,
        history,
        progress,
        book,
        limits,
    )
    try:
        cli_main(flow, workers_per_process=1)  # type: ignore[no-untyped-call]
    except Exception as error:  # Bytewax wraps what a step raised
        raise ReplayError(f"{what} failed: {root_cause(error)}") from error
    for path in (alerts_path, dead_path):  # a sink that received nothing wrote no file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return progress
