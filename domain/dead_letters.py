"""Dead-letter records (CONTRACT.md section 3): what was refused, where, and why."""

from __future__ import annotations

import base64
from enum import StrEnum

import msgspec

from domain.readings import MAX_PAYLOAD_BYTES, Reason
from domain.timestamps import format_rfc3339_ms


class Stage(StrEnum):
    """The flow that dead-lettered a message."""

    BRIDGE = "bridge"
    ALERTS = "alerts"
    ARCHIVE = "archive"
    BACKFILL = "backfill"
    NOTIFY = "notify"
    STORE = "store"


class DeadLetter(msgspec.Struct, frozen=True):
    """The DLQ value. ``raw`` is base64 of the original bytes (capped, see ``dead_letter``)."""

    stage: str
    reason: str
    detail: str
    source_topic: str
    raw: str
    received_at: str


_ENCODER = msgspec.json.Encoder()


def dead_letter(
    stage: Stage,
    reason: Reason | str,
    detail: str,
    source_topic: str,
    raw: bytes,
    received_at_ms: int,
) -> bytes:
    """Encode a DLQ record.

    ``raw`` holds the original bytes, except that a ``too_large`` payload keeps only its first
    64 KiB: a multi-megabyte original would exceed Kafka's message size and could never be
    dead-lettered at all. The detail says so.
    """
    if len(raw) > MAX_PAYLOAD_BYTES:
        detail = f"{detail}; raw holds the first {MAX_PAYLOAD_BYTES} of {len(raw)} bytes"
        raw = raw[:MAX_PAYLOAD_BYTES]
    record = DeadLetter(
        stage=str(stage),
        reason=str(reason),
        detail=detail,
        source_topic=source_topic,
        raw=base64.b64encode(raw).decode("ascii"),
        received_at=format_rfc3339_ms(received_at_ms),
    )
    return _ENCODER.encode(record)
