"""Kafka input for Bytewax in batches: one item per fetch, the record values with their offsets.

Bytewax's ``KafkaSource`` emits one ``KafkaSourceMessage`` per record, and at hundreds of
thousands of records per second building those objects costs as much as the processing.
Here every Kafka partition is a Bytewax partition (as there), whose item is a ``Fetch``:
the values one ``consume`` returned and the offsets they span. Its snapshot is the next
offset to read; a ``start_offset`` function can override where a partition starts (the
archive resumes from what its lake holds, see connectors/lake.py).

Transient consumer errors (broker down, connection reset) are logged and retried by
librdkafka; fatal ones stop the flow. With ``tail=False`` a partition ends at its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from typing_extensions import override

from connectors.liveness import STATISTICS_INTERVAL_MS, InputLiveness
from runtime.metrics import CONSUMER_LAG

log = structlog.get_logger(__name__)

_ERROR_LOG_INTERVAL_S = 10.0
_LAG_UPDATE_INTERVAL_S = 1.0
FETCH_WAIT_MAX_MS = "25"


@dataclass(frozen=True, slots=True)
class Fetch:
    """Record values from one partition, in offset order, from ``first_offset`` to
    ``last_offset`` (inclusive; offsets may have gaps, e.g. transaction markers), and each
    record's Kafka timestamp in epoch ms (-1 when the broker gave none; an empty list when
    the source kept none)."""

    partition: int
    first_offset: int
    last_offset: int
    values: list[bytes]
    timestamps: list[int] = field(default_factory=list)


class KafkaBatchSource(FixedPartitionedSource[Fetch, int]):
    """Every partition of ``topic``, read in batches of up to ``batch_size`` values."""

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = 10_000,
        start_offset: Callable[[int, int | None], int] | None = None,
        liveness: InputLiveness | None = None,
    ) -> None:
        self._config: dict[str, str | int | float | bool] = dict(config)
        self._topic = topic
        self._tail = tail
        self._batch_size = batch_size
        self._start_offset = start_offset
        self._liveness = liveness

    @override
    def list_parts(self) -> list[str]:
        metadata = (
            AdminClient(self._config).list_topics(self._topic, timeout=30).topics[self._topic]
        )
        if metadata.error is not None:
            raise RuntimeError(
                f"cannot list partitions of Kafka topic {self._topic!r}: {metadata.error.str()}"
            )
        return [str(partition) for partition in sorted(metadata.partitions)]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[Fetch, int]:
        partition = int(for_part)
        if self._start_offset is not None:
            offset = self._start_offset(partition, resume_state)
        else:
            offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _KafkaBatchPartition(
            self._config,
            self._topic,
            int(for_part),
            offset,
            self._tail,
            self._batch_size,
            self._liveness,
        )


class _KafkaBatchPartition(StatefulSourcePartition[Fetch, int]):
    def __init__(
        self,
        config: dict[str, str | int | float | bool],
        topic: str,
        partition: int,
        offset: int,
        tail: bool,
        batch_size: int,
        liveness: InputLiveness | None = None,
    ) -> None:
        self._liveness = liveness
        if liveness is not None:
            # Reachable and caught up? librdkafka's statistics say, without a broker call
            # (connectors/liveness.py): they arrive through ``consume`` once a second.
            liveness.register(topic, partition)
            config = {**config, "statistics.interval.ms": STATISTICS_INTERVAL_MS}
            config["stats_cb"] = self._on_statistics  # type: ignore[assignment]
        # Client-level errors (a broker down, a connection reset or timed out) come here, not
        # through ``consume``: logged as JSON (rate-limited), never raised from the callback.
        config = {**config}
        config["error_cb"] = self._on_client_error  # type: ignore[assignment]
        self._fatal: KafkaError | None = None
        self._consumer = Consumer(
            {
                # Offsets live in the recovery snapshots, not in a consumer group.
                "group.id": "fleetwatch-unused",
                "enable.auto.commit": "false",
                "enable.partition.eof": str(not tail).lower(),
                # How long the broker may hold a fetch when the partition has nothing new.
                # Kafka answers as soon as data arrives, but some brokers (Tansu) hold every
                # fetch this long: librdkafka's 500 ms default put 150 ms into every alert.
                # FLEET_KAFKA_FETCH_WAIT_MAX_MS overrides it.
                "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
                **config,
            }
        )
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._at_end = False
        self._last_error_log = 0.0
        self._lag = CONSUMER_LAG.labels(topic, str(partition))
        self._lag_updated = 0.0

    @override
    def next_batch(self) -> list[Fetch]:
        if self._fatal is not None:
            self._on_error(self._fatal)
        if self._at_end:
            raise StopIteration
        values: list[bytes] = []
        timestamps: list[int] = []
        first_offset = last_offset = None
        for message in self._consumer.consume(self._batch_size, 0.001):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end = True  # emit this batch; stop at the next call
                    break
                self._on_error(error)
                continue
            value = message.value()
            values.append(value if value is not None else b"")
            timestamps.append(message.timestamp()[1])  # (type, ms); -1 when not available
            last_offset = message.offset()
            if first_offset is None:
                first_offset = last_offset
        if first_offset is not None and last_offset is not None:
            self._offset = last_offset + 1
        self._update_lag()
        if first_offset is None or last_offset is None:
            return []
        return [Fetch(self._partition, first_offset, last_offset, values, timestamps)]

    def _update_lag(self) -> None:
        """Lag from the high watermark the last fetch response carried (no broker call)."""
        now = time.monotonic()
        if now - self._lag_updated < _LAG_UPDATE_INTERVAL_S and not self._at_end:
            return
        self._lag_updated = now
        _low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), cached=True
        )
        if high >= 0 and self._offset >= 0:  # both known (not before the first fetch)
            self._lag.set(max(high - self._offset, 0))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal() or not (error.retriable() or error.code() < 0):
            raise RuntimeError(
                f"Kafka consumer error on {self._topic}[{self._partition}]: {error.str()}"
            )
        self._log_retrying(error)

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error  # raised from next_batch: the callback must not raise
            return
        self._log_retrying(error)

    def _log_retrying(self, error: KafkaError) -> None:
        """librdkafka retries by itself: say so, at most every _ERROR_LOG_INTERVAL_S."""
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.warning(
                "kafka_consumer_retrying",
                topic=self._topic,
                partition=self._partition,
                error=error.str(),
            )

    def _on_statistics(self, statistics: str) -> None:
        if self._liveness is not None:
            self._liveness.report_statistics(self._topic, self._partition, statistics, self._offset)

    @override
    def snapshot(self) -> int:
        return self._offset

    @override
    def close(self) -> None:
        if self._liveness is not None:
            self._liveness.unregister(self._topic, self._partition)
        self._consumer.close()
