"""Telemetry in a DynamoDB table (or any DynamoDB-API server), through boto3.

One table, two kinds of item under partition key ``truck_id``:

* history: sort key ``sk`` = ``<ts RFC 3339 UTC ms>#<event_id>``: ``event_id``, ``ts``,
  ``ts_ms``, ``speed_kmh``, ``lat``/``lon`` when given, and ``expires_at`` (epoch seconds;
  the table's TTL attribute). A replayed reading has the same key, so rewriting it is a no-op:
  at-least-once delivery never creates duplicates.
* latest: sort key ``sk`` = ``latest``: the truck's newest reading (the same attributes, and
  ``last_key``, its history key). It is replaced only when the new reading's key is greater
  (a conditional write), so replays and disorder never move a truck back in time. The keys
  compare as the contract orders readings: by ts, ties by event_id.

``latest`` sorts after every history key (``l`` > digits), so a history query is
``truck_id = :t AND sk BETWEEN :from AND :to``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from domain.dead_letters import DeadLetter, Reason, Stage
from domain.readings import Reading, encode_canonical
from domain.timestamps import format_rfc3339_ms, to_epoch_ms
from runtime.redaction import redact_text

log = structlog.get_logger(__name__)

LATEST = "latest"
BATCH_LIMIT = 25  # BatchWriteItem's maximum
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}

_UNREACHABLE = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)

Item = dict[str, dict[str, Any]]  # DynamoDB's low-level attribute-value form


def history_key(reading: Reading) -> str:
    return f"{format_rfc3339_ms(reading.ts_ms)}#{reading.event_id}"


def _attributes(reading: Reading) -> Item:
    item: Item = {
        "truck_id": {"S": reading.truck_id},
        "event_id": {"S": reading.event_id},
        "ts": {"S": format_rfc3339_ms(reading.ts_ms)},
        "ts_ms": {"N": str(reading.ts_ms)},
        "speed_kmh": {"N": _number(reading.speed_kmh)},
    }
    if reading.lat is not None:
        item["lat"] = {"N": _number(reading.lat)}
    if reading.lon is not None:
        item["lon"] = {"N": _number(reading.lon)}
    return item


def _number(value: float) -> str:
    return str(Decimal(repr(value)))


def _key_of(item: Item) -> str:
    """``history_key`` from an item's formatted ``ts`` (formatting it once per reading)."""
    return f"{item['ts']['S']}#{item['event_id']['S']}"


def history_item(reading: Reading, retention_s: int) -> Item:
    item = _attributes(reading)
    item["sk"] = {"S": _key_of(item)}
    item["expires_at"] = {"N": str(reading.ts_ms // 1000 + retention_s)}
    return item


def latest_item(reading: Reading) -> Item:
    item = _attributes(reading)
    item["sk"] = {"S": LATEST}
    item["last_key"] = {"S": _key_of(item)}
    return item


def newest_per_truck(readings: Iterable[Reading]) -> list[Reading]:
    """Each truck's newest reading. (ts_ms, event_id) orders as ``history_key`` does (the
    timestamp is fixed-width), without formatting anything."""
    newest: dict[str, Reading] = {}
    for reading in readings:
        current = newest.get(reading.truck_id)
        if current is None or (reading.ts_ms, reading.event_id) > (
            current.ts_ms,
            current.event_id,
        ):
            newest[reading.truck_id] = reading
    return list(newest.values())


@dataclass(frozen=True)
class Rejected:
    """A reading DynamoDB refused (not throttled: invalid, too large)."""

    reading: Reading
    reason: str
    detail: str


@dataclass
class Backoff:
    """Exponential backoff with full jitter, for throttling and unprocessed items."""

    base_s: float = 0.05
    cap_s: float = 5.0
    attempts: int = 0

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.attempts += 1
        sleep(random.uniform(0, min(self.cap_s, self.base_s * 2**self.attempts)))


class TelemetryTable:
    """Writes readings to ``table``: history in batches of 25, latest conditionally.

    Throttling and unprocessed items are retried with backoff, without limit: the flow
    stalls rather than skipping (its lag shows it). A request DynamoDB refuses for the data
    (ValidationException: too large, bad value) is retried item by item, and the items that
    still fail are returned as ``Rejected`` for the dead-letter topic."""

    def __init__(
        self,
        client: Any,
        table: str,
        retention_s: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._retention_s = retention_s
        self._sleep = sleep
        self.throttled = 0  # retries, for the log and the tests

    def write(self, readings: Sequence[Reading]) -> list[Rejected]:
        rejected: list[Rejected] = []
        unique = {(r.truck_id, r.ts_ms, r.event_id): r for r in readings}  # one write per key
        batch = list(unique.values())
        for start in range(0, len(batch), BATCH_LIMIT):
            rejected += self._write_history(batch[start : start + BATCH_LIMIT])
        refused = {id(r.reading) for r in rejected}
        for reading in newest_per_truck(r for r in batch if id(r) not in refused):
            self._put_latest(reading)
        return rejected

    def _write_history(self, readings: list[Reading]) -> list[Rejected]:
        requests = [{"PutRequest": {"Item": history_item(r, self._retention_s)}} for r in readings]
        backoff = Backoff()
        while requests:
            try:
                response = self._call("batch_write_item", RequestItems={self._table: requests})
            except ClientError as error:
                if _code(error) == "ValidationException":
                    return self._write_one_by_one(readings)
                raise
            requests = response.get("UnprocessedItems", {}).get(self._table, [])
            if requests:
                self.throttled += 1
                backoff.wait(self._sleep)
        return []

    def _write_one_by_one(self, readings: list[Reading]) -> list[Rejected]:
        rejected = []
        for reading in readings:
            try:
                self._call(
                    "put_item",
                    TableName=self._table,
                    Item=history_item(reading, self._retention_s),
                )
            except ClientError as error:
                if _code(error) != "ValidationException":
                    raise
                rejected.append(Rejected(reading, "rejected_by_store", _message(error)))
        return rejected

    def _put_latest(self, reading: Reading) -> None:
        item = latest_item(reading)
        try:
            self._call(
                "put_item",
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(last_key) OR last_key < :key",
                ExpressionAttributeValues={":key": item["last_key"]},
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise  # an older reading than the one stored: nothing to do

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One API call, retried with backoff while DynamoDB throttles or is unreachable
        (boto3's own retries are off: one policy, here, logged)."""
        backoff = Backoff()
        while True:
            try:
                return getattr(self._client, operation)(**kwargs)
            except ClientError as error:
                if _code(error) not in _THROTTLED:
                    raise
                self.throttled += 1
                reason = _code(error)
            except _UNREACHABLE as error:
                reason = type(error).__name__
            except BotoCoreError as error:  # e.g. SSLError: its message quotes the endpoint URL
                endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
                message = redact_text(f"{type(error).__name__}: {error}", urls=[endpoint])
                raise RuntimeError(message) from None
            if backoff.attempts % 10 == 9:
                log.warning("dynamodb_retrying", operation=operation, reason=reason)
            backoff.wait(self._sleep)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))


def create_table(client: Any, table: str) -> bool:
    """Create the table (on-demand capacity, TTL on ``expires_at``); False if it exists."""
    try:
        client.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "truck_id", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "truck_id", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as error:
        if _code(error) == "ResourceInUseException":
            return False
        raise
    client.get_waiter("table_exists").wait(TableName=table)
    try:
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )
    except ClientError as error:  # some DynamoDB-API servers have no TTL
        log.warning("dynamodb_ttl_not_set", table=table, error=_message(error))
    return True


def dynamodb_client(region: str | None, endpoint_url: str | None) -> Any:
    """A boto3 DynamoDB client; credentials from the usual AWS chain."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},  # TelemetryTable retries
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=16,
    )
    try:
        return boto3.client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url or None, config=config
        )
    except ValueError as error:  # "Invalid endpoint: <the URL as given>"
        raise ValueError(redact_text(str(error), urls=[endpoint_url])) from None


def item_values(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A low-level item as plain Python values (for tests and tools)."""
    plain: dict[str, Any] = {}
    for name, value in item.items():
        ((kind, raw),) = value.items()
        plain[name] = float(raw) if kind == "N" else raw
    return plain


class TelemetryWriter:
    """Writes readings to the table, one ``TelemetryTable`` per worker thread (Bytewax runs
    each worker on an OS thread of its own; a table holds its own backoff), and returns a
    dead letter (``rejected_by_store``) for each reading the table refuses."""

    def __init__(
        self, table: Callable[[], TelemetryTable], source_topic: str, now: Callable[[], datetime]
    ) -> None:
        self._table = table
        self._source_topic = source_topic
        self._now = now
        self._tables: dict[int, TelemetryTable] = {}

    def write_batch(self, readings: list[Reading]) -> list[DeadLetter]:
        worker = threading.get_ident()
        table = self._tables.get(worker)
        if table is None:
            table = self._tables.setdefault(worker, self._table())
        refused = table.write(readings)
        received_at = to_epoch_ms(self._now())
        letters = []
        for rejected in refused:
            log.error(
                "dynamodb_rejected", event_id=rejected.reading.event_id, detail=rejected.detail
            )
            letters.append(
                DeadLetter(
                    Stage.STORE,
                    Reason.REJECTED_BY_STORE,
                    rejected.detail,
                    self._source_topic,
                    encode_canonical(rejected.reading),
                    received_at,
                    rejected.reading.truck_id.encode(),
                )
            )
        return letters
