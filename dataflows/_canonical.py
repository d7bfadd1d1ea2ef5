"""Reading ``fleet.telemetry`` records back: canonical readings, or dead letters."""

from __future__ import annotations

from collections.abc import Iterable

from connectors.kafka import OutboundRecord
from domain.dead_letters import Stage
from domain.readings import Reading, decode_canonical
from fleetwatch.metrics import counted_dead_letter


def decode_records(
    values: Iterable[bytes], stage: Stage, source_topic: str, dlq_topic: str, received_at_ms: int
) -> tuple[list[Reading], list[OutboundRecord]]:
    """The readings among ``values``, and a dead letter (stage ``stage``) for each other."""
    readings: list[Reading] = []
    dead: list[OutboundRecord] = []
    for value in values:
        outcome = decode_canonical(value)
        if isinstance(outcome, Reading):
            readings.append(outcome)
            continue
        record = counted_dead_letter(
            stage, outcome.reason, outcome.detail, source_topic, value, received_at_ms
        )
        dead.append(OutboundRecord(dlq_topic, None, record))
    return readings, dead
