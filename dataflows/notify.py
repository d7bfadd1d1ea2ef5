"""dataflows.notify: ``fleet.alerts`` -> one e-mail per alert through a REST e-mail API.

Input:  ``FLEET_TOPIC_ALERTS``, every partition (Bytewax recovery keeps the offsets).
Output: POST to ``FLEET_NOTIFY_URL`` per alert: recipients from ``FLEET_NOTIFY_ROUTES``
        (default, by severity, by truck group), subject, text and HTML, times in
        ``FLEET_NOTIFY_TIMEZONE``; signed with ``FLEET_NOTIFY_SECRET`` (Standard Webhooks
        ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``) and with
        ``Idempotency-Key`` = alert_id. Alerts that cannot be read, that the API refuses
        (4xx) or whose retries run out go to ``FLEET_TOPIC_DLQ`` (stage ``notify``).
        A record the e-mail cannot be made of (domain.alerts.decode_alert: a wrong
        type, a number out of range, a time the zone cannot show) is dead-lettered with
        its reason; one that makes a step raise, with ``unprocessable``. Neither stops it.
Digests: a route of the routes file may deliver in digests instead (hourly, daily at a
        local time, or every N seconds): one POST per recipient and period listing the
        period's alerts by driver, ``Idempotency-Key`` = the digest's id (recipient,
        schedule, period). Critical alerts still go at once unless a route says otherwise.
        The pending digests are Bytewax state (dataflows/digests.py, domain/digests.py).
Guarantee: one successful call per alert from the service's point of view: sent ids are
        kept in recovery state for ``FLEET_NOTIFY_RETENTION_S`` (connectors/notify_sink.py),
        and the idempotency key covers what is older. One per digest: its id is
        deterministic and a due period takes no more alerts. Run with ``-r`` for both.
Knobs:  FLEET_NOTIFY_TIMEOUT_S, FLEET_NOTIFY_MAX_ATTEMPTS, FLEET_NOTIFY_CONCURRENCY.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.email_api import EmailApi
from connectors.kafka import ConfirmedProducer
from connectors.kafka_keyed_sink import KafkaTopicSink
from connectors.kafka_source import Fetch, KafkaBatchSource
from connectors.notify_sink import NotifySink
from dataflows._dead_letters import output_dead_letters, split_dead_letters, to_line
from dataflows._entry import lazy_flow, prepare
from dataflows._guard import unprocessable
from dataflows.digests import DigestStep, Router, Shared
from domain.alerts import Alert, decode_alert
from domain.dead_letters import DeadLetter, Stage
from domain.notifications import RetryPolicy, Routes, secret_bytes
from domain.readings import Rejection
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import NOTIFICATIONS
from runtime.settings import Settings, SettingsError

KeyedAlert = tuple[str, tuple[Alert, bytes]]
KeyedLine = tuple[str, bytes]


@dataclass(frozen=True)
class AlertDecoder:
    """Records of ``fleet.alerts`` -> alerts the sink can render in ``zone``, or dead letters."""

    alerts_topic: str
    zone: tzinfo = UTC
    now: Callable[[], datetime] = utc_now

    def decode_batch(self, fetches: list[Fetch]) -> list[KeyedAlert | DeadLetter]:
        out: list[KeyedAlert | DeadLetter] = []
        for fetch in fetches:
            for raw in fetch.values:
                try:
                    out.append(self.decode(raw))
                except Exception as error:  # the last line of defence: see dataflows/_guard.py
                    NOTIFICATIONS.labels("unprocessable").inc()
                    received_at = to_epoch_ms(self.now())
                    out.append(
                        unprocessable(Stage.NOTIFY, error, self.alerts_topic, raw, received_at)
                    )
        return out

    def decode(self, raw: bytes) -> KeyedAlert | DeadLetter:
        alert = decode_alert(raw, self.zone)
        if isinstance(alert, Rejection):
            NOTIFICATIONS.labels("not_an_alert").inc()
            received_at = to_epoch_ms(self.now())
            return DeadLetter(
                Stage.NOTIFY, alert.reason, alert.detail, self.alerts_topic, raw, received_at
            )
        return (alert.alert_id, (alert, raw))


def build_flow(
    source: Source[Fetch],
    emails: Sink[KeyedAlert],
    dead_letters: Sink[KeyedLine],
    alerts_topic: str,
    zone: tzinfo = UTC,
    routes: Routes | None = None,
    digests: DigestStep | None = None,
) -> Dataflow:
    """The e-mails are sent by the sink, which routes by alert_id and keeps the sent ids in
    its recovery state; an e-mail that fails is learnt there, so the sink writes those dead
    letters itself (connectors/notify_sink.py). Every other dead letter goes to the DLQ
    output. With digest routes (``routes`` and ``digests``), the sink gets only the alerts
    someone gets at once, and ``collect_digests`` keeps and sends the digests
    (dataflows/digests.py)."""
    decoder = AlertDecoder(alerts_topic, zone)
    flow = Dataflow("notify")
    fetches = op.input("kafka_source", flow, source)  # Fetch of fleet.alerts
    decoded = op.flat_map_batch("decode_batch", fetches, decoder.decode_batch)
    split = split_dead_letters("split_decoded", decoded)  # (alert_id, (alert, raw)) | dead
    output_dead_letters("dead_letters", to_line, dead_letters, split.errs)
    if routes is None or not routes.modes:
        op.output("send_emails", split.oks, emails)
        return flow
    if digests is None:
        raise ValueError("routes with digests need a DigestStep")
    router = Router(routes)
    immediate = op.filter("immediate", split.oks, router.immediate)  # (alert_id, (alert, raw))
    op.output("send_emails", immediate, emails)
    entries = op.flat_map("digest_entries", split.oks, router.digest_entries)  # (key, entry)
    sent = op.stateful_batch("collect_digests", entries, digests.build)  # (key, Digest)
    op.inspect("digests_sent", sent, _no_op)
    return flow


def _no_op(_step_id: str, _item: object) -> None:
    """The digests are sent inside ``collect_digests`` (before its snapshot): nothing
    downstream, but Bytewax needs the stream to end somewhere."""


def load_routes(path: Path | None) -> Routes:
    """The routes file, parsed once; without one, everything goes to fleet-ops@localhost."""
    if path is None:
        return Routes(("fleet-ops@localhost",))
    try:
        return Routes.parse(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"FLEET_NOTIFY_ROUTES={path}: {exc}") from None


def flow_from_settings(settings: Settings) -> Dataflow:
    used = [settings.topics.alerts, settings.topics.dlq]
    prepare("notify", settings, ["notify", "kafka", "topics"], used)
    assert settings.notify.url is not None  # validated
    assert settings.notify.secret is not None
    routes = load_routes(settings.notify.routes)
    secret = secret_bytes(settings.notify.secret)
    url, zone = settings.notify.url, ZoneInfo(settings.notify.timezone)
    policy = RetryPolicy(max_attempts=settings.notify.max_attempts)

    def api() -> EmailApi:
        return EmailApi(
            url,
            secret,
            routes,
            zone,
            timeout_s=settings.notify.timeout_s,
            policy=policy,
            concurrency=settings.notify.concurrency,
        )

    producer = ConfirmedProducer(settings.kafka.producer_config())
    emails = NotifySink(api, producer.send_all, settings.topics, settings.notify.retention_s)
    source = KafkaBatchSource(
        settings.kafka.config(), settings.topics.alerts, tail=settings.kafka.tail
    )
    dead = KafkaTopicSink(settings.kafka.producer_config(), settings.topics.dlq)
    shared_api = Shared(api)
    digests = DigestStep(
        lambda due: shared_api().deliver_digests(due),
        producer.send_all,
        settings.topics.alerts,
        settings.topics.dlq,
        zone,
        timedelta(seconds=routes.digest_grace_s),
        timedelta(seconds=settings.notify.retention_s),
    )
    return build_flow(source, emails, dead, settings.topics.alerts, zone, routes, digests)


__getattr__ = lazy_flow(flow_from_settings)
