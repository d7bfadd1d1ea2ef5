"""Calls of the REST e-mail API: signed (Standard Webhooks), idempotent, retried, concurrent.

Each alert is one POST of JSON to ``FLEET_NOTIFY_URL`` with headers ``webhook-id`` (the
alert_id), ``webhook-timestamp``, ``webhook-signature`` and ``Idempotency-Key`` (the
alert_id). Connection errors, timeouts, 5xx and 429 are retried with full-jitter
exponential backoff (Retry-After honoured) up to ``max_attempts``; other 4xx are
permanent. ``deliver_all`` runs up to ``concurrency`` calls at once, so one slow alert does
not hold the others up.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog

from domain.notifications import RetryPolicy, Routes, Verdict, classify, email_json, render, sign

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Delivery:
    alert_id: str
    verdict: Verdict  # DELIVERED, REJECTED (permanent) or RETRY (attempts exhausted)
    attempts: int
    detail: str


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
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def deliver_all(self, alerts: Sequence[Mapping[str, Any]]) -> list[Delivery]:
        return list(self._pool.map(self.deliver, alerts))

    def deliver(self, alert: Mapping[str, Any]) -> Delivery:
        alert_id = str(alert["alert_id"])
        body = json.dumps(
            email_json(alert, render(alert, self._routes, self._zone)), separators=(",", ":")
        ).encode()
        detail = ""
        for attempt in range(1, self._policy.max_attempts + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": alert_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self._secret, alert_id, timestamp, body),
                "idempotency-key": alert_id,
            }
            retry_after = None
            try:
                response = self._client.post(self._url, content=body, headers=headers)
            except httpx.TransportError as exc:  # connection refused, reset, timeout
                verdict, detail = Verdict.RETRY, f"{type(exc).__name__}: {exc}"
            else:
                verdict = classify(response.status_code)
                detail = f"HTTP {response.status_code}: {response.text[:200]}"
                retry_after = response.headers.get("retry-after")
            if verdict is not Verdict.RETRY:
                return Delivery(alert_id, verdict, attempt, detail)
            if attempt < self._policy.max_attempts:
                with self._rng_lock:
                    delay = self._policy.delay_s(attempt, retry_after, self._rng, datetime.now(UTC))
                log.warning(
                    "notify_retrying",
                    alert_id=alert_id,
                    attempt=attempt,
                    in_s=round(delay, 2),
                    error=detail,
                )
                self._sleep(delay)
        return Delivery(alert_id, Verdict.RETRY, self._policy.max_attempts, detail)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
