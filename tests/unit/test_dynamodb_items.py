"""The DynamoDB item design and write policy, with a scripted client (the server itself is
exercised in tests/integration/test_store.py)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from connectors.dynamodb import (
    LATEST,
    TelemetryTable,
    history_item,
    history_key,
    item_values,
    latest_item,
    newest_per_truck,
)
from domain.readings import Reading
from tests.builders import BEGINNING_MS


def reading(event_id: str, ts_offset_ms: int, truck: str = "T1") -> Reading:
    return Reading(event_id, truck, BEGINNING_MS + ts_offset_ms, 88.5, 52.5, None)


def test_history_keys_sort_as_the_rules_order_readings() -> None:
    readings = [reading("b", 0), reading("a", 0), reading("a", 1), reading("z", -1)]
    ordered = sorted(readings, key=history_key)
    assert [(r.event_id, r.ts_ms - BEGINNING_MS) for r in ordered] == [
        ("z", -1), ("a", 0), ("b", 0), ("a", 1)
    ]  # fmt: skip
    assert history_key(readings[0]) < LATEST  # 'latest' sorts after every history key


def test_items_carry_the_reading_and_its_expiry() -> None:
    item = item_values(history_item(reading("e1", 0), retention_s=3600))
    assert item["sk"] == "2026-11-24T10:00:00.000Z#e1"
    assert (item["speed_kmh"], item["lat"]) == (88.5, 52.5)
    assert "lon" not in item  # absent, not null
    assert item["expires_at"] == BEGINNING_MS // 1000 + 3600
    latest = item_values(latest_item(reading("e1", 0)))
    assert (latest["sk"], latest["last_key"]) == (LATEST, item["sk"])


def test_newest_per_truck() -> None:
    newest = newest_per_truck([reading("a", 5), reading("b", 9), reading("c", 1, truck="T2")])
    assert sorted(r.event_id for r in newest) == ["b", "c"]


class ScriptedClient:
    """Leaves the last item of every batch unprocessed once, throttles every third call,
    and keeps a latest item with DynamoDB's condition."""

    def __init__(self) -> None:
        self.calls = 0
        self.history: dict[tuple[str, str], dict[str, Any]] = {}
        self.latest: dict[str, str] = {}
        self.held_back: set[str] = set()

    def _maybe_throttle(self) -> None:
        self.calls += 1
        if self.calls % 3 == 0:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "op"
            )

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        self._maybe_throttle()
        ((table, requests),) = RequestItems.items()
        unprocessed = []
        for request in requests:
            item = request["PutRequest"]["Item"]
            key = item["sk"]["S"]
            if request is requests[-1] and key not in self.held_back:
                self.held_back.add(key)
                unprocessed.append(request)
                continue
            self.history[(item["truck_id"]["S"], key)] = item
        return {"UnprocessedItems": {table: unprocessed} if unprocessed else {}}

    def put_item(self, **kwargs: Any) -> None:
        self._maybe_throttle()
        item = kwargs["Item"]
        truck, key = item["truck_id"]["S"], item["last_key"]["S"]
        if truck in self.latest and not self.latest[truck] < key:
            raise ClientError(
                {"Error": {"Code": "ConditionalCheckFailedException", "Message": ""}}, "PutItem"
            )
        self.latest[truck] = key


def test_writes_retry_throttling_and_unprocessed_items_and_keep_the_newest() -> None:
    client = ScriptedClient()
    table = TelemetryTable(client, "t", retention_s=60, sleep=lambda _s: None)
    first = [reading(f"e{i}", i * 1000) for i in range(60)]
    assert table.write(first) == []
    assert table.write([reading("old", -5000), first[3]]) == []  # older, and a repeat
    assert len(client.history) == 61
    assert client.latest == {"T1": history_key(first[-1])}
    assert table.throttled > 3


def test_other_errors_are_not_swallowed() -> None:
    class Broken:
        def batch_write_item(self, **_kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "op")

    with pytest.raises(ClientError, match="AccessDenied"):
        TelemetryTable(Broken(), "t", 60, sleep=lambda _s: None).write([reading("e", 0)])
