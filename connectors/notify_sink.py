"""The notifier's output: e-mails for alerts, at most one successful call per alert.

A ``FixedPartitionedSink`` with ``partitions`` partitions; alerts are routed by alert_id.
Each partition remembers the alert_ids it delivered, for ``retention_s``, and that set is
its recovery snapshot. (Not the ones it dead-lettered: ``python -m fleetwatch.replay`` puts
those back on ``fleet.alerts`` once the API works again, and they must be tried anew; a
repeat from upstream of an undelivered alert is simply tried again.) ``write_batch`` skips
those ids, delivers the rest concurrently and returns only when every call has finished, so
a snapshot never claims an alert that was not sent. Duplicates on ``fleet.alerts`` and
replays after a restart therefore make no second call within the retention; past it, the
``Idempotency-Key`` header lets the e-mail service drop a repeat. Permanent failures (4xx)
and alerts whose retries ran out go to the DLQ (stage ``notify``), confirmed first, and so
does an alert that could not be rendered (reason ``unprocessable``: the flow's decoder
admits only renderable alerts, so that is a bug of ours, and it must not stop the flow).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zlib import adler32

import structlog
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from typing_extensions import override

from connectors.email_api import Delivery, EmailApi
from connectors.kafka import OutboundRecord
from domain.alerts import Alert
from domain.dead_letters import Reason, Stage
from domain.notifications import Verdict
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import NOTIFICATIONS, counted_dead_letter
from runtime.settings import Topics

log = structlog.get_logger(__name__)

Sent = dict[str, int]  # alert_id -> when it was settled (epoch ms)


class NotifySink(FixedPartitionedSink[tuple[Alert, bytes], Sent]):
    """Items: ``(alert_id, (alert, raw bytes))``."""

    def __init__(
        self,
        api: Callable[[], EmailApi],
        send_dead_letters: Callable[[list[OutboundRecord]], None],
        topics: Topics,
        retention_s: float,
        partitions: int = 4,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._api = api
        self._send_dead_letters = send_dead_letters
        self._alerts_topic = topics.alerts
        self._dlq_topic = topics.dlq
        self._retention_ms = int(retention_s * 1000)
        self._partitions = partitions
        self._now = now

    @override
    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self._partitions)]

    @override
    def part_fn(self, item_key: str) -> int:
        # surrogatepass: the same bytes as UTF-8 for every valid key, and no key can raise.
        return adler32(item_key.encode("utf-8", "surrogatepass"))

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: Sent | None
    ) -> StatefulSinkPartition[tuple[Alert, bytes], Sent]:
        return _NotifyPartition(self, dict(resume_state or {}))


class _NotifyPartition(StatefulSinkPartition[tuple[Alert, bytes], Sent]):
    def __init__(self, sink: NotifySink, sent: Sent) -> None:
        self._sink = sink
        self._sent = sent
        self._api = sink._api()

    @override
    def write_batch(self, values: list[tuple[Alert, bytes]]) -> None:
        sink, now = self._sink, to_epoch_ms(self._sink._now())
        # Forget what is older than the retention: the Idempotency-Key covers it from then on.
        self._sent = {k: t for k, t in self._sent.items() if now - t < sink._retention_ms}
        pending: dict[str, tuple[Alert, bytes]] = {}
        for alert, raw in values:
            alert_id = alert.alert_id
            if alert_id not in self._sent and alert_id not in pending:
                pending[alert_id] = (alert, raw)
            else:
                NOTIFICATIONS.labels("duplicate").inc()
        if not pending:
            return
        deliveries = self._api.deliver_all([alert for alert, _ in pending.values()])
        dead: list[OutboundRecord] = []
        for delivery in deliveries:
            if delivery.verdict is Verdict.DELIVERED:
                NOTIFICATIONS.labels("sent").inc()
                log.info("email_sent", alert_id=delivery.alert_id, attempts=delivery.attempts)
            else:
                dead.append(self._dead_letter(delivery, pending[delivery.alert_id][1], now))
        if dead:
            sink._send_dead_letters(dead)
        for delivery in deliveries:
            if delivery.verdict is Verdict.DELIVERED:
                self._sent[delivery.alert_id] = now

    def _dead_letter(self, delivery: Delivery, raw: bytes, now: int) -> OutboundRecord:
        reason: str
        if delivery.verdict is Verdict.UNPROCESSABLE:
            reason, detail = Reason.UNPROCESSABLE, delivery.detail
            log.error(
                "unprocessable",
                stage=str(Stage.NOTIFY),
                source_topic=self._sink._alerts_topic,
                alert_id=delivery.alert_id,
                error=detail,
                exc_info=delivery.error,
            )
        else:
            reason = "rejected" if delivery.verdict is Verdict.REJECTED else "undeliverable"
            log.error(
                "email_failed", alert_id=delivery.alert_id, reason=reason, detail=delivery.detail
            )
            detail = f"after {delivery.attempts} attempts: {delivery.detail}"
        NOTIFICATIONS.labels(reason).inc()
        record = counted_dead_letter(
            Stage.NOTIFY, reason, detail, self._sink._alerts_topic, raw, now
        )
        key = delivery.alert_id.encode("utf-8", "surrogatepass")
        return OutboundRecord(self._sink._dlq_topic, key, record)

    @override
    def snapshot(self) -> Sent:
        return dict(self._sent)

    @override
    def close(self) -> None:
        self._api.close()
