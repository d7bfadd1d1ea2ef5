"""Reading ``fleet.telemetry`` records back: canonical readings, or dead letters.

Every flow that reads the topic (alerts, archive, store) decodes through here, with the
same checks: the contract's validation (``domain.readings.decode_reading``), the future
bound of CONTRACT.md section 3 measured from the Kafka record's timestamp (the moment the
record was produced, so a replay decides as the first run did; the flow's clock only when
the broker gave no timestamp), and the last line of defence (dataflows/_guard.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.kafka_source import Fetch
from dataflows._guard import unprocessable
from domain.dead_letters import DeadLetter, Stage
from domain.readings import Reading, Rejection, decode_reading


def not_after_ms(record_ts_ms: int, received_at_ms: int, max_future_ms: int) -> int:
    """The latest reading ts a record may carry: its Kafka timestamp (or, without one, the
    moment it was received) plus FLEET_MAX_FUTURE_S."""
    return (record_ts_ms if record_ts_ms >= 0 else received_at_ms) + max_future_ms


def not_after_all(fetch: Fetch, received_at_ms: int, max_future_ms: int) -> list[int]:
    """``not_after_ms`` for each record of ``fetch``, computed in one pass (the hot path)."""
    timestamps = fetch.timestamps
    if len(timestamps) != len(fetch.values):
        return [received_at_ms + max_future_ms] * len(fetch.values)
    return [(ts if ts >= 0 else received_at_ms) + max_future_ms for ts in timestamps]


def decode_telemetry(value: bytes, not_after: int) -> Reading | Rejection | Exception:
    """One record: a reading, a rejection, or the exception decoding raised (never raises)."""
    try:
        return decode_reading(value, not_after_ms=not_after)
    except Exception as error:  # the last line of defence: see dataflows/_guard.py
        return error


def decode_records(
    values: Sequence[bytes],
    timestamps: Sequence[int],
    stage: Stage,
    source_topic: str,
    received_at_ms: int,
    max_future_ms: int,
) -> tuple[list[Reading], list[DeadLetter]]:
    """The readings among ``values`` (``timestamps``: their Kafka timestamps, may be
    shorter), and a dead letter (stage ``stage``) for each other."""
    readings: list[Reading] = []
    dead: list[DeadLetter] = []
    count = len(timestamps)
    for index, value in enumerate(values):
        record_ts = timestamps[index] if index < count else -1
        outcome = decode_telemetry(value, not_after_ms(record_ts, received_at_ms, max_future_ms))
        if isinstance(outcome, Reading):
            readings.append(outcome)
        else:
            dead.append(as_dead_letter(outcome, stage, source_topic, value, received_at_ms))
    return readings, dead


def as_dead_letter(
    outcome: Rejection | Exception,
    stage: Stage,
    source_topic: str,
    value: bytes,
    received_at_ms: int,
) -> DeadLetter:
    """The dead letter for a record that did not decode as a reading."""
    if isinstance(outcome, Exception):
        return unprocessable(stage, outcome, source_topic, value, received_at_ms)
    return DeadLetter(stage, outcome.reason, outcome.detail, source_topic, value, received_at_ms)
