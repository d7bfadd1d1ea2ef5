"""Calls of the REST e-mail API: signed (Standard Webhooks), idempotent, retried, concurrent.

Each alert is one POST of JSON to ``FLEET_NOTIFY_URL`` with headers ``webhook-id`` (the
alert_id), ``webhook-timestamp``, ``webhook-signature`` and ``Idempotency-Key`` (the
alert_id). Connection errors, timeouts, 5xx and 429 are retried with full-jitter
exponential backoff (Retry-After honoured) up to ``max_attempts``; other 4xx are
permanent. ``deliver_all`` runs up to ``concurrency`` calls at once, so one slow alert does
not hold the others up. A digest (domain/digests.py) is one such call too, its
``digest_id`` in place of the alert_id.

The API's answers are hostile input too: at most ``MAX_ANSWER_BYTES`` of a body are read
(raw, undecoded), a Retry-After in no RFC 9110 form falls back to the backoff, and anything
the exchange raises is a failed attempt (retried, then ``undeliverable``). An alert that
cannot be rendered makes no call: its verdict is ``UNPROCESSABLE``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import structlog

from domain.alerts import ALERT_ID, Alert
from domain.digests import Digest, digest_json, render_digest
from domain.notifications import (
    RetryPolicy,
    Routes,
    Verdict,
    classify,
    email_json,
    one_line,
    render,
    sign,
)
from runtime.clock import utc_now
from runtime.redaction import redact_text

log = structlog.get_logger(__name__)

# Enough of an answer's body for the detail of a failure; the rest is never read.
MAX_ANSWER_BYTES = 4096


@dataclass(frozen=True)
class Delivery:
    alert_id: str  # or the digest_id of a digest
    verdict: Verdict  # DELIVERED, REJECTED (permanent), RETRY (attempts exhausted) or
    # UNPROCESSABLE (the alert could not be rendered; no call made)
    attempts: int
    detail: str
    error: BaseException | None = None  # what made it UNPROCESSABLE


class EmailApi:
    def __init__(
        self,
        url: str,
        secret: bytes,
        routes: Routes,
        zone: ZoneInfo,
        *,
        timeout_s: float = 10.0,
        policy: RetryPolicy | None = None,
        concurrency: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._url = url
        self._secret = secret
        self._routes = routes
        self._zone = zone
        self._policy = policy or RetryPolicy()
        self._client = httpx.Client(
            timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency)
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="notify")
        self._sleep = sleep
        self._now = now  # the webhook timestamp and a Retry-After date are wall-clock time
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def deliver_all(self, alerts: Sequence[Alert]) -> list[Delivery]:
        return list(self._pool.map(self.deliver, alerts))

    def deliver(self, alert: Alert) -> Delivery:
        alert_id = alert.alert_id
        try:
            body = self._body(alert_id, alert)
        except Exception as exc:  # the alert itself is the problem: no call could help
            return Delivery(alert_id, Verdict.UNPROCESSABLE, 0, f"{type(exc).__name__}: {exc}", exc)
        return self._call(alert_id, body)

    def deliver_digests(self, digests: Sequence[Digest]) -> list[Delivery]:
        return list(self._pool.map(self.deliver_digest, digests))

    def deliver_digest(self, digest: Digest) -> Delivery:
        """One digest, its id as ``webhook-id`` and ``Idempotency-Key``, like an alert's."""
        message_id = digest.digest_id
        try:
            if not ALERT_ID.fullmatch(message_id):  # ours: 32 hex chars
                raise ValueError(f"digest_id {message_id[:64]!r} is not a header-safe token")
            email = render_digest(digest, self._zone, self._routes.report_url)
            document = digest_json(digest, email)
            body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
        except Exception as exc:
            return Delivery(
                message_id, Verdict.UNPROCESSABLE, 0, f"{type(exc).__name__}: {exc}", exc
            )
        return self._call(message_id, body)

    def _call(self, message_id: str, body: bytes) -> Delivery:
        """POST ``body`` with ``message_id`` as ``webhook-id`` and ``Idempotency-Key``,
        retried as the policy says."""
        detail = ""
        for attempt in range(1, self._policy.max_attempts + 1):
            timestamp = int(self._now().timestamp())
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self._secret, message_id, timestamp, body),
                "idempotency-key": message_id,
            }
            retry_after = None
            try:
                status, retry_after, answer = self._post(body, headers)
            except Exception as exc:  # connection refused, reset, timeout, a malformed answer
                # httpx's messages can quote the URL (user info, query): FLEET_NOTIFY_URL
                error = redact_text(f"{type(exc).__name__}: {exc}", urls=[self._url])
                verdict, detail = Verdict.RETRY, one_line(error, 500)
            else:
                verdict = classify(status)
                detail = f"HTTP {status}: {one_line(redact_text(answer, urls=[self._url]), 200)}"
            if verdict is not Verdict.RETRY:
                return Delivery(message_id, verdict, attempt, detail)
            if attempt < self._policy.max_attempts:
                with self._rng_lock:
                    delay = self._policy.delay_s(attempt, retry_after, self._rng, self._now())
                log.warning(
                    "notify_retrying",
                    alert_id=message_id,
                    attempt=attempt,
                    in_s=round(delay, 2),
                    error=detail,
                )
                self._sleep(delay)
        return Delivery(message_id, Verdict.RETRY, self._policy.max_attempts, detail)

    def _body(self, alert_id: str, alert: Alert) -> bytes:
        # decode_alert checked it; it goes into headers (ASCII, no line break), so again here
        if not ALERT_ID.fullmatch(alert_id):
            raise ValueError(f"alert_id {alert_id[:64]!r} is not a header-safe token")
        email = render(alert, self._routes, self._zone)
        document = email_json(alert, email)
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()

    def _post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str | None, str]:
        """One call: the status, the Retry-After header and the start of the body (decoded
        leniently). The body is read raw, up to ``MAX_ANSWER_BYTES``: a huge or
        badly compressed answer costs nothing."""
        with self._client.stream("POST", self._url, content=body, headers=headers) as response:
            answer = bytearray()
            for chunk in response.iter_raw():
                answer += chunk
                if len(answer) >= MAX_ANSWER_BYTES:
                    break
            text = answer[:MAX_ANSWER_BYTES].decode("utf-8", "replace")
            return response.status_code, response.headers.get("retry-after"), text

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
