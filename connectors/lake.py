"""The Parquet lake (CONTRACT.md section 8): ``date=YYYY-MM-DD/<file>.parquet`` under a root.

A file holds the readings of one *roll*: a range of offsets of one Kafka partition of
``fleet.telemetry``, split by date. Its name says exactly that:

    date=2026-11-24/p0003-00000000000000001200-00000000000000004711-1of2.parquet

so the lake itself records what has been archived. A roll's files are written one by one,
each atomically (temporary name, fsync, rename): no reader ever sees a partial file. A roll
counts as committed when all its parts exist; after a crash in the middle of one, its parts
are removed on restart and the archive resumes at the roll's first offset. Each reading is
therefore stored exactly once (for a moment after such a crash, a reader may see part of a
roll that is about to be rewritten).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import structlog

from connectors.parquet import readings_frame, write_atomically
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


class Lake:
    """A lake directory: what it holds, and writing rolls into it."""

    def __init__(self, root: Path) -> None:
        self.root = root

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
        """Write one roll: a file per date of the readings' event time, each atomically."""
        frame = readings_frame(list(readings)).with_columns(pl.col("ts").dt.date().alias("_date"))
        by_date = sorted(
            frame.partition_by("_date", as_dict=True).items(), key=lambda item: str(item[0][0])
        )
        if not by_date:
            # Every record in the range was refused: an empty file still records the range.
            by_date = [((None,), frame)]
        written = []
        for part, ((day,), rows) in enumerate(by_date, start=1):
            directory = self.root / f"date={day if day is not None else 'none'}"
            path = directory / file_name(partition, first_offset, last_offset, part, len(by_date))
            write_atomically(rows.drop("_date"), path)
            written.append(path)
        return written
