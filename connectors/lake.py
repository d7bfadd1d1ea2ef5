"""The Parquet lake (CONTRACT.md section 8): ``date=YYYY-MM-DD/<file>.parquet`` under a root.

A file holds the rows of one *roll*: a range of offsets of one Kafka partition, split by
the UTC date of one timestamp column (the readings of ``fleet.telemetry`` by ``ts`` in the
lake's root; the archived alerts of ``fleet.alerts`` by ``window_end`` in its ``alerts/``,
connectors/alert_lake.py), or by one date column (the archived scorecards of
``fleet.scorecards`` by their local ``day`` in its ``scorecards/``,
connectors/scorecard_lake.py). Its name says exactly that:

    date=2026-11-24/p0003-00000000000000001200-00000000000000004711-1of2.parquet

so the lake itself records what has been archived. A roll's files are first written under
temporary names (``.<name>.<random>.tmp``) and fsynced, all of them; only then are they
renamed into place: no reader ever sees a partial file. A roll counts as committed when all
its parts exist; after a crash in the middle of one, its parts are removed on restart and
the archive resumes at the roll's first offset. Each reading is therefore stored exactly
once (for a moment after a crash between two renames, a reader may see part of a roll that
is about to be rewritten).

A write the filesystem refuses (a full disk, ENOSPC; no permission; an I/O error) raises
``LakeWriteError``, after removing the roll's temporary files: a failed roll leaves nothing
behind, and the lake still ends at the last committed roll. ``Lake.stop_writing`` lets the
caller wait until the rolls other workers of the process are writing are done, so that it
can stop the process without leaving a half-written roll.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import structlog

from connectors.parquet import readings_frame
from domain.readings import Reading

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^p(\d{4})-(\d{20})-(\d{20})-(\d+)of(\d+)\.parquet$")


@dataclass(frozen=True)
class LakeFile:
    path: Path
    partition: int
    first_offset: int
    last_offset: int
    part: int
    parts: int

    @property
    def roll(self) -> tuple[int, int, int, int]:
        return (self.partition, self.first_offset, self.last_offset, self.parts)


def file_name(partition: int, first_offset: int, last_offset: int, part: int, parts: int) -> str:
    return f"p{partition:04d}-{first_offset:020d}-{last_offset:020d}-{part}of{parts}.parquet"


class LakeWriteError(OSError):
    """The filesystem refused a write of the lake (``errno``, ``strerror``, ``filename``:
    the file). The roll it belonged to left no file behind."""

    @property
    def errno_name(self) -> str:
        """``ENOSPC``, ``EACCES``, ...: the symbolic name of ``errno``."""
        return errno.errorcode.get(self.errno or 0, str(self.errno))


class _WritingGate:
    """Counts the rolls being written by the workers of this process; once stopping, no
    new roll starts (its worker waits here until the process exits)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._writing = 0
        self._stopping = False

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._stopping)
            self._writing += 1
        try:
            yield
        finally:
            with self._changed:
                self._writing -= 1
                self._changed.notify_all()

    def stop(self, timeout_s: float) -> bool:
        with self._changed:
            self._stopping = True
            return self._changed.wait_for(lambda: self._writing == 0, timeout_s)


class Lake:
    """A lake directory: what it holds, and writing rolls into it. ``day_column`` is the
    timestamp column (UTC) whose date names each row's ``date=`` directory (or a date
    column: its value). ``writes_with``: another lake the same process writes (one flow
    archiving two topics); ``stop_writing`` on either then waits for the rolls of both."""

    def __init__(
        self, root: Path, day_column: str = "ts", *, writes_with: Lake | None = None
    ) -> None:
        self.root = root
        self.day_column = day_column
        self._gate: _WritingGate = _WritingGate() if writes_with is None else writes_with._gate

    def files(self) -> list[LakeFile]:
        found = []
        for path in self.root.glob("date=*/p*.parquet"):
            match = _FILE.match(path.name)
            if match:
                partition, first, last, part, parts = (int(g) for g in match.groups())
                found.append(LakeFile(path, partition, first, last, part, parts))
        return found

    def resume_offset(self, partition: int) -> int | None:
        """The first offset of ``partition`` not yet archived (None: nothing archived yet).

        Removes the parts of an incomplete roll (a crash in the middle of writing it) and
        leftover temporary files: the roll is written again from its first offset."""
        for stray in self.root.glob(f"date=*/.p{partition:04d}-*.tmp"):
            stray.unlink(missing_ok=True)
        rolls: dict[tuple[int, int, int, int], list[LakeFile]] = defaultdict(list)
        for lake_file in self.files():
            if lake_file.partition == partition:
                rolls[lake_file.roll].append(lake_file)
        committed = None
        for (_, _, last, parts), files in rolls.items():
            if {f.part for f in files} == set(range(1, parts + 1)):
                committed = last if committed is None else max(committed, last)
            else:
                for lake_file in files:
                    log.warning("lake_incomplete_roll_removed", path=str(lake_file.path))
                    lake_file.path.unlink(missing_ok=True)
        return None if committed is None else committed + 1

    def write_roll(
        self, partition: int, first_offset: int, last_offset: int, readings: Iterable[Reading]
    ) -> list[Path]:
        """Write one roll of readings: a file per date of their event time, each atomically."""
        return self.write_rows(partition, first_offset, last_offset, readings_frame(list(readings)))

    def write_rows(
        self, partition: int, first_offset: int, last_offset: int, rows: pl.DataFrame
    ) -> list[Path]:
        """Write one roll of ``rows`` (every column kept as it is): a file per UTC date of
        ``day_column``, each atomically; an empty ``rows`` still writes one empty file."""
        frame = rows.with_columns(pl.col(self.day_column).dt.date().alias("_date"))
        by_date = sorted(
            frame.partition_by("_date", as_dict=True).items(), key=lambda item: str(item[0][0])
        )
        if not by_date:
            # Every record in the range was refused: an empty file still records the range.
            by_date = [((None,), frame)]
        parts = []
        for part, ((day,), day_rows) in enumerate(by_date, start=1):
            directory = self.root / f"date={day if day is not None else 'none'}"
            path = directory / file_name(partition, first_offset, last_offset, part, len(by_date))
            parts.append((path, _parquet_bytes(day_rows.drop("_date"))))
        with self._gate.writing():
            return _write_all_or_nothing(parts)

    def stop_writing(self, timeout_s: float) -> bool:
        """From now on no roll starts in this process; wait up to ``timeout_s`` for those
        being written to finish (False: some still were)."""
        return self._gate.stop(timeout_s)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    # Encoded in memory (a roll is at most FLEET_LAKE_ROLL_MB of input), so every write to
    # the disk is Python's own, and a refusal arrives as an OSError with its errno.
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


def _write_all_or_nothing(parts: list[tuple[Path, bytes]]) -> list[Path]:
    """Write every part under a temporary name and fsync it, then rename them all into place.

    A refusal (ENOSPC is the likely one: it arrives at write or at fsync) removes the
    temporary files and raises ``LakeWriteError``: readers never see any of the roll."""
    temporaries: list[Path] = []
    renamed: list[Path] = []
    current = parts[0][0]
    try:
        for path, data in parts:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            temporaries.append(temporary)
            with temporary.open("xb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        for (path, _), temporary in zip(parts, temporaries, strict=True):
            current = path
            temporary.replace(path)  # a new directory entry: may be refused too (ext4)
            renamed.append(path)
        for directory in sorted({path.parent for path, _ in parts}):
            current = directory
            _fsync_directory(directory)  # the renames survive a power cut too
    except OSError as error:
        # Not committed: the roll is written again from its first offset at the restart.
        for leftover in [*temporaries, *renamed]:
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
        raise LakeWriteError(error.errno, error.strerror, str(current)) from error
    return renamed


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
