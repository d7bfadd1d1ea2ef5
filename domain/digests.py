"""Digests: one e-mail per recipient and period listing that period's alerts, by driver.

Pure logic; dataflows/digests.py runs it per (schedule, recipient) and
connectors/email_api.py sends what it closes.

Which period an alert is in: the one holding its ``window_end`` (in the fleet's zone,
domain/digest_periods.py), unless that period's digest is already *due*, i.e. processing
time has passed the period's end plus the grace (``FLEET_NOTIFY_DIGEST_GRACE_S``). Such a
late alert goes into the first period not yet due, the one holding ``now - grace``, and the
digest marks it late. So a period's content is frozen once it is due, whether or not its
digest has gone out yet, and that is what makes a digest exactly once across crashes: a run
resumed from a snapshot may send a due digest again, with the same id and never with an
alert the first sending lacked (the e-mail API drops the repeat by its idempotency key); an
alert the lost run had listed after the snapshot is listed again, late, in a later digest.
(This relies on the wall clock not going back across a restart.)

Bounded state: a digest lists at most ``MAX_LISTED`` alerts (the rest are counted, by rule,
not kept), and the ids of listed alerts are remembered for the retention, to list an alert
repeated on ``fleet.alerts`` once.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from domain.alerts import Alert, decode_alert
from domain.digest_periods import Every, Period, Schedule, digest_id
from domain.notifications import NO_DRIVER, Email, driver_label, one_line, story
from domain.readings import Rejection
from domain.timestamps import from_epoch_ms, parse_rfc3339_ms

MAX_LISTED = 500  # alerts listed in one digest; more are counted only
EN_DASH = "\u2013"


@dataclass(frozen=True, slots=True)
class DigestEntry:
    """One alert for one recipient's digest (the router's output, keyed by ``key``)."""

    recipient: str
    schedule: Schedule
    alert_id: str
    rule: str
    window_end_ms: int
    raw: bytes  # the record from fleet.alerts: rendered when the digest closes

    @property
    def key(self) -> str:
        return digest_key(self.recipient, self.schedule)


def digest_key(recipient: str, schedule: Schedule) -> str:
    return f"{schedule.name}|{recipient}"


@dataclass(frozen=True, slots=True)
class Digest:
    """A closed digest, ready to send: the alerts' records in the order they came."""

    digest_id: str
    recipient: str
    schedule: Schedule
    period: Period
    raws: tuple[tuple[str, bytes], ...]  # (alert_id, record), at most MAX_LISTED
    counts: dict[str, int]  # by rule, every alert of the period (listed or not)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class _Pending:
    period: Period
    raws: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class DigestBook:
    """One recipient's digests of one schedule: the periods not sent yet, and the ids of
    alerts listed lately. The snapshot is a copy of it."""

    recipient: str
    schedule: Schedule
    pending: dict[int, _Pending] = field(default_factory=dict)  # by period start
    listed: dict[str, int] = field(default_factory=dict)  # alert_id -> taken at (epoch ms)

    def add(self, entry: DigestEntry, zone: tzinfo, now_ms: int, grace_ms: int) -> str:
        """Put ``entry`` in its period (the module docstring says which); the outcome, for
        the metric: ``queued``, ``late``, ``duplicate`` (listed already) or ``unlisted``
        (counted only: the digest is full)."""
        if entry.alert_id in self.listed:
            return "duplicate"
        self.listed[entry.alert_id] = now_ms
        period = self.schedule.period(max(entry.window_end_ms, now_ms - grace_ms), zone)
        pending = self.pending.get(period.start_ms)
        if pending is None:
            pending = self.pending[period.start_ms] = _Pending(period)
        pending.counts[entry.rule] = pending.counts.get(entry.rule, 0) + 1
        if len(pending.raws) >= MAX_LISTED:
            return "unlisted"
        pending.raws[entry.alert_id] = entry.raw
        return "late" if entry.window_end_ms < period.start_ms else "queued"

    def close(self, now_ms: int, grace_ms: int, retention_ms: int) -> list[Digest]:
        """The digests due (period end + grace passed), oldest first, removed from the book;
        listed ids older than the retention are forgotten (a repeat after that is listed
        again)."""
        self.listed = {k: t for k, t in self.listed.items() if now_ms - t < retention_ms}
        due = sorted(s for s, p in self.pending.items() if p.period.end_ms + grace_ms <= now_ms)
        closed = []
        for start in due:
            pending = self.pending.pop(start)
            closed.append(
                Digest(
                    digest_id(self.recipient, self.schedule, start),
                    self.recipient,
                    self.schedule,
                    pending.period,
                    tuple(pending.raws.items()),
                    dict(pending.counts),
                )
            )
        return closed

    def forget(self, digest: Digest) -> None:
        """A digest that could not be sent: its alerts are dead-lettered, and a replay of
        them must be listed again, not skipped as repeats."""
        for alert_id, _ in digest.raws:
            self.listed.pop(alert_id, None)

    def wake_at_ms(self, grace_ms: int, retention_ms: int) -> int | None:
        """When the next digest is due, or the oldest listed id expires."""
        times = [p.period.end_ms + grace_ms for p in self.pending.values()]
        if self.listed:
            times.append(min(self.listed.values()) + retention_ms)
        return min(times, default=None)

    @property
    def empty(self) -> bool:
        return not self.pending and not self.listed

    def copy(self) -> DigestBook:
        return DigestBook(
            self.recipient,
            self.schedule,
            {s: _Pending(p.period, dict(p.raws), dict(p.counts)) for s, p in self.pending.items()},
            dict(self.listed),
        )


# --- Rendering ------------------------------------------------------------------------------


def _local(ms: int, zone: tzinfo) -> datetime:
    return from_epoch_ms(ms).astimezone(zone)


def period_text(period: Period, zone: tzinfo) -> str:
    """``07:00 1 Dec \u2013 07:00 2 Dec`` or, within one local day, ``10:00\u201311:00 1 Dec``
    seconds only when a bound has them (``every_s`` periods)."""
    start, end = _local(period.start_ms, zone), _local(period.end_ms, zone)
    clock = "%H:%M:%S" if start.second or end.second else "%H:%M"

    def day(moment: datetime) -> str:
        return f"{moment.day} {moment:%b}"

    if start.date() == end.date():
        return f"{start:{clock}}{EN_DASH}{end:{clock}} {day(start)}"
    return f"{start:{clock}} {day(start)} {EN_DASH} {end:{clock}} {day(end)}"


def _alerts(n: int) -> str:
    return "1 alert" if n == 1 else f"{n} alerts"


def _alert_line(alert: Alert, period: Period, zone: tzinfo) -> str:
    """``1 Dec 08:14:02 Sustained speeding: truck T0012, top 118.0 km/h, 28.0 km/h over the
    90 km/h limit; mean 104.2 km/h; Mannerheimintie [sustained_speeding]``."""
    told = story(alert)
    end_ms = parse_rfc3339_ms(alert.window_end)
    moment = _local(end_ms, zone)
    late = " (late)" if end_ms < period.start_ms else ""
    what = told.speed or told.happened
    place = f"; {told.place}" if told.place else ""
    return one_line(
        f"{moment.day} {moment:%b %H:%M:%S}{late} {told.title}: truck {one_line(alert.truck_id)}, "
        f"{what}{place} [{one_line(alert.rule)}]",
        limit=998,
    )


def report_link(digest: Digest, zone: tzinfo, template: str | None) -> tuple[date, str] | None:
    """The daily report a daily digest links: that of the last local day that has ended when
    the period ends (the day before the period's end: a ``daily`` digest's own day, and for
    ``{"daily": "07:00"}`` the day whose night it closes), with its address from
    ``template`` (``{day}`` -> YYYY-MM-DD). None for other schedules or no template."""
    if template is None or digest.schedule.every is not Every.DAILY:
        return None
    day = _local(digest.period.end_ms, zone).date() - timedelta(days=1)
    return day, template.replace("{day}", day.isoformat())


def render_digest(digest: Digest, zone: tzinfo, report_url: str | None = None) -> Email:
    """The digest's e-mail: counts by rule at the top (and, for a daily digest with a
    ``report_url`` template, a link to the day's report: ``report_link``), then the alerts
    grouped by driver (most alerts first; no driver last), each with its local time, title,
    truck, speed and limit, and road or zone where the details have one. Every value goes
    through ``one_line`` and the HTML is escaped. A record that no longer decodes is left out
    of the list (it is still counted)."""
    groups: dict[str, list[tuple[int, Alert]]] = {}
    for _, raw in digest.raws:
        alert = decode_alert(raw, zone)
        if isinstance(alert, Rejection):
            continue
        label = driver_label(alert)
        groups.setdefault(label, []).append((parse_rfc3339_ms(alert.window_end), alert))
    order = sorted(groups, key=lambda label: (label == NO_DRIVER, -len(groups[label]), label))
    when = period_text(digest.period, zone)
    zone_name = _local(digest.period.start_ms, zone).tzname() or ""
    total = digest.total
    subject = one_line(f"[fleetwatch] {_alerts(total)}, {when}", limit=998)
    by_rule = ", ".join(
        f"{one_line(rule)} {n}"
        for rule, n in sorted(digest.counts.items(), key=lambda item: (-item[1], item[0]))
    )
    title = f"{_alerts(total)}, {when} ({zone_name}), {digest.schedule.name} digest"
    text = [title, f"By rule: {by_rule}"]
    body_html = [f"<h2>{html.escape(title)}</h2><p>By rule: {html.escape(by_rule)}</p>"]
    link = report_link(digest, zone, report_url)
    if link is not None:
        day, url = link
        text.append(f"The day's report, {day.isoformat()}: {url}")
        body_html.append(
            f'<p>The day\'s report, {day.isoformat()}: <a href="{html.escape(url)}">'
            f"{html.escape(url)}</a></p>"
        )
    listed = sum(len(alerts) for alerts in groups.values())
    for label in order:
        alerts = sorted(groups[label], key=lambda item: item[0])
        heading = f"{label}: {_alerts(len(alerts))}"
        lines = [_alert_line(alert, digest.period, zone) for _, alert in alerts]
        text += ["", heading, *(f"  {line}" for line in lines)]
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        body_html.append(f"<h3>{html.escape(heading)}</h3><ul>{items}</ul>")
    if listed < total:
        more = f"{_alerts(total - listed)} more not listed (at most {MAX_LISTED} a digest)"
        text += ["", more]
        body_html.append(f"<p>{html.escape(more)}</p>")
    return Email([one_line(digest.recipient)], subject, "\n".join(text) + "\n", "".join(body_html))


def digest_json(digest: Digest, email: Email) -> dict[str, object]:
    """The request body of a digest: as an alert's, with ``digest_id`` and ``alert_ids``
    (the listed ones) instead of ``alert_id``."""
    return {
        "to": email.to,
        "subject": email.subject,
        "text": email.text,
        "html": email.html,
        "digest_id": digest.digest_id,
        "alert_ids": [alert_id for alert_id, _ in digest.raws],
        "tags": {
            "digest": digest.schedule.name,
            "period_start_ms": digest.period.start_ms,
            "period_end_ms": digest.period.end_ms,
            "alerts": digest.total,
        },
    }
