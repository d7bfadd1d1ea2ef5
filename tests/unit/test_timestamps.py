"""Epoch-millisecond instants and their RFC 3339 form."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.timestamps import (
    MAX_EPOCH_MS,
    BadTimestamp,
    format_rfc3339_ms,
    from_epoch_ms,
    parse_rfc3339_ms,
    to_epoch_ms,
)
from tests.builders import BEGINNING, BEGINNING_MS


def test_format_has_millis_and_z() -> None:
    assert format_rfc3339_ms(BEGINNING_MS + 5) == "2026-11-24T10:00:00.005Z"
    assert format_rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_rfc3339_ms(MAX_EPOCH_MS) == "9999-12-31T23:59:59.999Z"


@given(st.integers(min_value=0, max_value=MAX_EPOCH_MS))
def test_format_parse_round_trip(epoch_ms: int) -> None:
    assert parse_rfc3339_ms(format_rfc3339_ms(epoch_ms)) == epoch_ms


def test_datetime_conversions() -> None:
    assert to_epoch_ms(BEGINNING) == BEGINNING_MS
    assert from_epoch_ms(BEGINNING_MS) == BEGINNING


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_epoch_ms(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_offset_past_midnight_crosses_the_date() -> None:
    assert (
        format_rfc3339_ms(parse_rfc3339_ms("2026-01-01T00:30:00+01:00"))
        == "2025-12-31T23:30:00.000Z"
    )


def test_before_epoch_is_refused() -> None:
    with pytest.raises(BadTimestamp):
        parse_rfc3339_ms("1969-12-31T23:59:59Z")
