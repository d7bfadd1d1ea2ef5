"""Lines to one JSONL file, from any number of workers and processes, resumable.

A single Bytewax partition owns the file, so every line passes through one writer. Its
recovery snapshot is the file length: a resumed run truncates what was written after it and
goes on, so the file never holds a line twice. A fresh run starts the file empty.
"""

from __future__ import annotations

import os
from pathlib import Path

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from typing_extensions import override


class JsonlSink(FixedPartitionedSink[bytes, int]):
    """Writes ``(key, line)`` items; the key is ignored."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @override
    def list_parts(self) -> list[str]:
        return ["jsonl"]

    @override
    def part_fn(self, item_key: str) -> int:
        return 0

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSinkPartition[bytes, int]:
        return _JsonlPartition(self._path, resume_state)


class _JsonlPartition(StatefulSinkPartition[bytes, int]):
    def __init__(self, path: Path, resume_at: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("r+b" if resume_at is not None and path.exists() else "wb")
        self._file.truncate(resume_at or 0)
        self._file.seek(0, os.SEEK_END)

    @override
    def write_batch(self, values: list[bytes]) -> None:
        self._file.write(b"".join(line + b"\n" for line in values))
        self._file.flush()

    @override
    def snapshot(self) -> int:
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    @override
    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
