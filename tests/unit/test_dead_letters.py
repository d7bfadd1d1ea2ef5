"""DLQ records (CONTRACT.md section 3)."""

from __future__ import annotations

import base64
import json

from domain.dead_letters import Stage, dead_letter
from domain.readings import MAX_PAYLOAD_BYTES, Reason
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


def test_huge_payload_keeps_its_first_64_kib_and_says_so() -> None:
    raw = b"y" * (MAX_PAYLOAD_BYTES * 20)
    record = json.loads(dead_letter(Stage.BRIDGE, Reason.TOO_LARGE, "too big", "t", raw, 0))
    assert base64.b64decode(record["raw"]) == raw[:MAX_PAYLOAD_BYTES]
    assert str(len(raw)) in record["detail"]
