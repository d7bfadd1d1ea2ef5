"""DLQ records (CONTRACT.md section 3)."""

from __future__ import annotations

import base64
import json

from domain.dead_letters import MAX_DEAD_LETTER_BYTES, Reason, Stage, dead_letter, max_raw_bytes
from domain.readings import MAX_PAYLOAD_BYTES
from tests.builders import BEGINNING_MS


def test_record_fields() -> None:
    record = json.loads(
        dead_letter(
            Stage.BRIDGE, Reason.SCHEMA, "missing ts", "fleet/T1/telemetry", b"{}", BEGINNING_MS
        )
    )
    assert record == {
        "stage": "bridge",
        "reason": "schema",
        "detail": "missing ts",
        "source_topic": "fleet/T1/telemetry",
        "raw": "e30=",
        "received_at": "2026-11-24T10:00:00.000Z",
    }


def test_a_too_large_payload_is_kept_whole() -> None:
    raw = b"y" * (MAX_PAYLOAD_BYTES * 4)  # 256 KiB: Mosquitto's limit in k8s
    record = json.loads(dead_letter(Stage.BRIDGE, Reason.TOO_LARGE, "too big", "t", raw, 0))
    assert base64.b64decode(record["raw"]) == raw
    assert "raw_truncated" not in record
    assert "raw_size" not in record


def test_a_payload_beyond_the_dlq_limit_is_cut_and_says_so() -> None:
    raw = bytes(range(256)) * 8_000  # 2 MB
    encoded = dead_letter(Stage.BRIDGE, Reason.TOO_LARGE, "too big", "t", raw, 0)
    record = json.loads(encoded)
    kept = base64.b64decode(record["raw"])
    assert len(encoded) <= MAX_DEAD_LETTER_BYTES
    assert kept == raw[: max_raw_bytes()]
    assert len(kept) > 700_000  # as much as fits, not the old 64 KiB
    assert record["raw_truncated"] is True
    assert record["raw_size"] == len(raw)


def test_the_largest_record_fits_even_with_the_longest_detail() -> None:
    raw = b"z" * (max_raw_bytes() + 1)
    encoded = dead_letter(Stage.ALERTS, Reason.UNPROCESSABLE, "\u2028" * 10_000, "t" * 5000, raw, 0)
    assert len(encoded) <= MAX_DEAD_LETTER_BYTES


def test_text_utf8_cannot_carry_is_replaced_not_raised() -> None:
    record = json.loads(
        dead_letter(Stage.BRIDGE, Reason.SCHEMA, "bad \ud800 detail", "fleet/\udcff/t", b"x", 0)
    )
    assert record["detail"] == "bad ? detail"
    assert record["source_topic"] == "fleet/?/t"
