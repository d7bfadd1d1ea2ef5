"""Dead letters (CONTRACT.md section 3): what was refused, where, and why.

One vocabulary of stages and reasons for every flow, and one typed wrapper, ``DeadLetter``,
that steps emit beside their good output (dataflows/_dead_letters.py splits the two) and
that one sink per flow writes (connectors/dead_letters.py), counted there.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import msgspec

from domain.timestamps import format_rfc3339_ms


class Stage(StrEnum):
    """The flow that dead-lettered a message."""

    BRIDGE = "bridge"
    ALERTS = "alerts"
    ARCHIVE = "archive"
    ARCHIVE_ALERTS = "archive_alerts"
    # dataflows.archive_alerts too: the records of fleet.scorecards it refuses.
    ARCHIVE_SCORECARDS = "archive_scorecards"
    BACKFILL = "backfill"
    NOTIFY = "notify"
    STORE = "store"


class Reason(StrEnum):
    """Why a record was dead-lettered. The first six are what a reading can be refused for
    (CONTRACT.md section 3; ``PAYLOAD_REASONS``); the rest belong to stages."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TRUCK_MISMATCH = "truck_mismatch"
    # Any stage: processing one record raised where no rule of the contract names the
    # problem (dataflows/_guard.py). The record is dead-lettered; the flow goes on.
    UNPROCESSABLE = "unprocessable"
    # bridge: Kafka refused to store a valid reading (too large for the topic, say).
    REFUSED_BY_KAFKA = "refused_by_kafka"
    # notify: the e-mail API answered a permanent 4xx; or retries ran out.
    REJECTED = "rejected"
    UNDELIVERABLE = "undeliverable"
    # store: DynamoDB refused the item (too large, invalid).
    REJECTED_BY_STORE = "rejected_by_store"


PAYLOAD_REASONS = frozenset(
    {
        Reason.TOO_LARGE,
        Reason.INVALID_JSON,
        Reason.SCHEMA,
        Reason.OUT_OF_RANGE,
        Reason.BAD_TIMESTAMP,
        Reason.TRUCK_MISMATCH,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a flow refuses, as steps emit it: encoded (``encode``) only by the DLQ sink.
    ``key`` is its Kafka key on the DLQ; ``on_delivered`` runs once Kafka confirmed it (the
    bridge acknowledges the MQTT message then)."""

    stage: Stage
    reason: Reason
    detail: str
    source_topic: str
    raw: bytes
    received_at_ms: int
    key: bytes | None = None
    on_delivered: Callable[[], None] | None = None

    def encode(self) -> bytes:
        return dead_letter(
            self.stage, self.reason, self.detail, self.source_topic, self.raw, self.received_at_ms
        )


class DeadLetterRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """The DLQ value. ``raw`` is base64 of the original bytes, all of them unless the record
    would not fit the DLQ topic; then ``raw_truncated`` and ``raw_size`` say so."""

    stage: str
    reason: str
    detail: str
    source_topic: str
    raw: str
    received_at: str
    raw_truncated: bool = False
    raw_size: int | None = None


# The largest DLQ record (its JSON) that Kafka takes with default settings: librdkafka's
# ``message.max.bytes`` (1,000,000) is below the broker's default limit (1,048,588). The
# original is kept whole up to about 3/4 of this (base64); Mosquitto's message limit in
# k8s (256 KiB) keeps every MQTT payload well inside it.
MAX_DEAD_LETTER_BYTES = 1_000_000
# Room for every field but ``raw``: ours are short, and the detail is capped below.
MAX_DETAIL_CHARS = 2_000
_RECORD_ROOM = 8_192 + 4 * MAX_DETAIL_CHARS

_ENCODER = msgspec.json.Encoder()


def max_raw_bytes(max_record_bytes: int = MAX_DEAD_LETTER_BYTES) -> int:
    """The most original bytes a DLQ record of at most ``max_record_bytes`` can hold."""
    return (max_record_bytes - _RECORD_ROOM) // 4 * 3


def dead_letter(
    stage: Stage,
    reason: Reason | str,
    detail: str,
    source_topic: str,
    raw: bytes,
    received_at_ms: int,
    max_record_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> bytes:
    """Encode a DLQ record (CONTRACT.md section 3). Never raises for any text: a detail or
    topic with characters UTF-8 cannot carry (lone surrogates) is written with U+FFFD."""
    limit = max_raw_bytes(max_record_bytes)
    truncated = len(raw) > limit
    record = DeadLetterRecord(
        stage=str(stage),
        reason=str(reason),
        detail=_printable(detail[:MAX_DETAIL_CHARS]),
        source_topic=_printable(source_topic[:1024]),
        raw=base64.b64encode(raw[:limit]).decode("ascii"),
        received_at=format_rfc3339_ms(received_at_ms),
        raw_truncated=truncated,
        raw_size=len(raw) if truncated else None,
    )
    return _ENCODER.encode(record)


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")
