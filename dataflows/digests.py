"""The digest steps of dataflows.notify: routing alerts to digests, and a thin Bytewax logic
around ``DigestBook`` (domain/digests.py) per (schedule, recipient).

``Router`` splits each alert: the recipients that get it at once (the immediate path, one
e-mail per alert, connectors/notify_sink.py) and one ``DigestEntry`` per recipient that gets
it in a digest, keyed by schedule and recipient. ``DigestStep`` keeps each key's
``DigestBook`` in Bytewax state: entries go into their period as they come; a wake-up at
each period's end plus the grace closes the due digests and sends them, one call each,
through the e-mail API (``deliver``), before the epoch (and so the snapshot that records
them as sent) can close. A digest the API refuses or whose retries run out is
dead-lettered as its alerts (stage ``notify``, one record per listed alert, the detail
naming the digest), confirmed first, and those alerts are forgotten so that a replay
lists them again. At the end of bounded input the digests already due go out; the others
wait in the recovery state for the next run (without ``-r`` they are lost, and a warning
says how many).

Why a resumed run sends each digest once: domain/digests.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Generic, TypeVar

import structlog
from bytewax.operators import StatefulBatchLogic

from connectors.email_api import Delivery
from connectors.kafka import OutboundRecord
from domain.alerts import Alert
from domain.dead_letters import Reason, Stage
from domain.digests import Digest, DigestBook, DigestEntry
from domain.notifications import Routes, Verdict
from domain.timestamps import from_epoch_ms, parse_rfc3339_ms, to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import NOTIFICATIONS, counted_dead_letter

log = structlog.get_logger(__name__)

KeyedAlert = tuple[str, tuple[Alert, bytes]]
T = TypeVar("T")

# fleetwatch_notifications_total's outcomes for an alert put in one recipient's digest
_QUEUED = {
    "queued": "digested",
    "late": "digested_late",
    "duplicate": "digest_duplicate",
    "unlisted": "digest_unlisted",
}


@dataclass(frozen=True)
class Router:
    """Who gets an alert at once and who in a digest (``Routes.deliveries``)."""

    routes: Routes

    def immediate(self, item: KeyedAlert) -> bool:
        """Whether anyone gets the alert at once (the immediate path's filter)."""
        return not self.routes.modes or bool(self.routes.recipients(item[1][0]))

    def digest_entries(self, item: KeyedAlert) -> list[tuple[str, DigestEntry]]:
        """One entry per recipient that gets the alert in a digest, keyed by digest."""
        if not self.routes.modes:
            return []
        alert, raw = item[1]
        _, later = self.routes.deliveries(alert)
        end_ms = parse_rfc3339_ms(alert.window_end)
        entries = [
            DigestEntry(recipient, schedule, alert.alert_id, alert.rule, end_ms, raw)
            for recipient, schedule in later
        ]
        return [(entry.key, entry) for entry in entries]


class Shared(Generic[T]):
    """One ``factory()`` per process, made on first use (the workers share the e-mail
    API's client and pool)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._made: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        with self._lock:
            if self._made is None:
                self._made = self._factory()
            return self._made


@dataclass(frozen=True)
class DigestStep:
    """Builds the per-(schedule, recipient) logic; the API, DLQ and clock are plugged in."""

    deliver: Callable[[Sequence[Digest]], list[Delivery]]
    send_dead_letters: Callable[[list[OutboundRecord]], None]
    alerts_topic: str
    dlq_topic: str
    zone: tzinfo
    grace: timedelta
    # How long listed alert_ids are remembered (FLEET_NOTIFY_RETENTION_S): a repeat of an
    # alert on fleet.alerts within it is not listed twice.
    retention: timedelta
    now: Callable[[], datetime] = utc_now

    def build(self, resume_state: DigestBook | None) -> _DigestLogic:
        return _DigestLogic(self, resume_state)


class _DigestLogic(StatefulBatchLogic[DigestEntry, Digest, DigestBook | None]):
    def __init__(self, step: DigestStep, book: DigestBook | None) -> None:
        self._step = step
        self._grace_ms = round(step.grace.total_seconds() * 1000)
        self._retention_ms = round(step.retention.total_seconds() * 1000)
        self.book = book  # None until the first entry says whose digests these are

    def on_batch(self, values: list[DigestEntry]) -> tuple[list[Digest], bool]:
        step, now = self._step, to_epoch_ms(self._step.now())
        book = self.book
        if book is None:
            book = self.book = DigestBook(values[0].recipient, values[0].schedule)
        for entry in values:
            outcome = book.add(entry, step.zone, now, self._grace_ms)
            NOTIFICATIONS.labels(_QUEUED[outcome]).inc()
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Digest], bool]:
        return self._close()

    def on_eof(self) -> tuple[list[Digest], bool]:
        sent, discard = self._close()
        if self.book is not None and self.book.pending:
            log.warning(
                "digests_waiting",
                schedule=self.book.schedule.name,
                periods=len(self.book.pending),
                note="sent by the next run resumed from recovery (-r)",
            )
        return sent, discard

    def notify_at(self) -> datetime | None:
        if self.book is None:
            return None
        wake = self.book.wake_at_ms(self._grace_ms, self._retention_ms)
        return None if wake is None else from_epoch_ms(wake)

    def snapshot(self) -> DigestBook | None:
        return None if self.book is None else self.book.copy()

    def _close(self) -> tuple[list[Digest], bool]:
        """Send the due digests; the sent ones are the output (for the log)."""
        book = self.book
        if book is None:
            return [], StatefulBatchLogic.DISCARD
        now = to_epoch_ms(self._step.now())
        due = book.close(now, self._grace_ms, self._retention_ms)
        sent = self._send(book, due) if due else []
        # Nothing pending and nothing remembered: the key's state can go (its next alert
        # starts a new book, as the first one did).
        return sent, StatefulBatchLogic.DISCARD if book.empty else StatefulBatchLogic.RETAIN

    def _send(self, book: DigestBook, due: list[Digest]) -> list[Digest]:
        step = self._step
        by_id = {digest.digest_id: digest for digest in due}
        sent: list[Digest] = []
        dead: list[OutboundRecord] = []
        now = to_epoch_ms(step.now())
        for delivery in step.deliver(due):
            digest = by_id[delivery.alert_id]
            if delivery.verdict is Verdict.DELIVERED:
                NOTIFICATIONS.labels("digest_sent").inc()
                log.info(
                    "digest_sent",
                    digest_id=digest.digest_id,
                    schedule=digest.schedule.name,
                    period_start=from_epoch_ms(digest.period.start_ms).isoformat(),
                    alerts=digest.total,
                    attempts=delivery.attempts,
                )
                sent.append(digest)
                continue
            book.forget(digest)
            dead += self._dead_letters(digest, delivery, now)
        if dead:
            step.send_dead_letters(dead)
        return sent

    def _dead_letters(self, digest: Digest, delivery: Delivery, now: int) -> list[OutboundRecord]:
        step = self._step
        reason: str
        if delivery.verdict is Verdict.UNPROCESSABLE:
            reason = Reason.UNPROCESSABLE
            log.error(
                "unprocessable",
                stage=str(Stage.NOTIFY),
                digest_id=digest.digest_id,
                error=delivery.detail,
                exc_info=delivery.error,
            )
        else:
            reason = "rejected" if delivery.verdict is Verdict.REJECTED else "undeliverable"
            log.error(
                "digest_failed",
                digest_id=digest.digest_id,
                reason=reason,
                detail=delivery.detail,
            )
        NOTIFICATIONS.labels(f"digest_{reason}").inc()
        detail = (
            f"digest {digest.digest_id} ({digest.schedule.name}, "
            f"{from_epoch_ms(digest.period.start_ms).isoformat()}): "
            f"after {delivery.attempts} attempts: {delivery.detail}"
        )
        return [
            OutboundRecord(
                step.dlq_topic,
                alert_id.encode("utf-8", "surrogatepass"),
                counted_dead_letter(Stage.NOTIFY, reason, detail, step.alerts_topic, raw, now),
            )
            for alert_id, raw in digest.raws
        ]
