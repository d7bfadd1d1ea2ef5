"""The last line of defence of every flow (CONTRACT.md section 3).

A record that a step cannot process, for a reason no contract rule names (a bug, a value
at the edge of what a type holds), must not stop the flow: left to propagate, the
exception kills the process before the record's offset or MQTT ack is committed, and the
restarted flow meets the same record again, a crash loop. Steps catch such an exception
for that one record and hand it here: it becomes a dead letter with reason
``unprocessable`` (the error in ``detail``), logged at error level with its traceback, and
the flow goes on; the DLQ output counts it (dataflows/_dead_letters.py).

Only per-record work is guarded. Failures of the infrastructure (a Kafka delivery
refused, a full disk) are raised in sinks and still stop the flow with a clear error.
Tests fail on any ``unprocessable`` they did not ask for (tests/conftest.py), so the
guard hides no bug from them.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from domain.dead_letters import DeadLetter, Reason, Stage

log = structlog.get_logger("fleetwatch.unprocessable")


def unprocessable(
    stage: Stage,
    error: BaseException,
    source_topic: str,
    raw: bytes,
    received_at_ms: int,
    on_delivered: Callable[[], None] | None = None,
) -> DeadLetter:
    """The dead letter for one record whose processing raised ``error`` (logged here)."""
    detail = f"{type(error).__name__}: {error}"
    log.error(
        "unprocessable",
        stage=str(stage),
        source_topic=source_topic,
        error=detail,
        exc_info=error,
    )
    return DeadLetter(
        stage,
        Reason.UNPROCESSABLE,
        detail,
        source_topic,
        raw,
        received_at_ms,
        on_delivered=on_delivered,
    )
