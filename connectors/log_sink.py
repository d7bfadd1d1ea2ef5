"""An output that logs each item: for flows whose real output is a side effect (the lake)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

import structlog
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override


class LogSink(DynamicSink[Any]):
    def __init__(self, event: str) -> None:
        self._event = event

    @override
    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Any]:
        return _LogPartition(self._event, worker_index)


class _LogPartition(StatelessSinkPartition[Any]):
    def __init__(self, event: str, worker: int) -> None:
        self._log = structlog.get_logger("fleetwatch").bind(worker=worker)
        self._event = event

    @override
    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            fields = (
                asdict(item)
                if is_dataclass(item) and not isinstance(item, type)
                else {"item": item}
            )
            self._log.info(self._event, **fields)
