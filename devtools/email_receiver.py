"""A local stand-in for the REST e-mail service, for the demo and the tests.

It verifies each request's Standard Webhooks signature (401 if wrong), treats
``Idempotency-Key`` as the service would (a repeat is answered 200 and sends nothing), and
can be told to fail: per key, a script of responses to give first (a status, optionally
with Retry-After, or a delay longer than the client's timeout). A scripted answer can be
hostile too: any status code, a Retry-After in any script (sent as UTF-8 bytes), a huge
body. ``outage`` makes it answer every call with one failure until it is set back to None
(the service down).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from domain.notifications import verify


@dataclass(frozen=True)
class Call:
    key: str
    status: int
    signature_ok: bool
    duplicate: bool = False  # a success for a key already e-mailed: nothing was sent


@dataclass(frozen=True)
class Fail:
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0  # answer this late (past the client's timeout: a timeout); a 2xx
    # after a delay is a slow success: the e-mail is sent even if the client stopped waiting
    body_bytes: int = 0  # answer (a failure) with a body of this many bytes instead


@dataclass
class EmailReceiver:
    secret: bytes
    verbose: bool = False
    calls: list[Call] = field(default_factory=list)
    emails: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: dict[str, deque[Fail]] = field(default_factory=lambda: defaultdict(deque))
    outage: Fail | None = None  # while set, every signed call gets this answer
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/send"

    def fail(self, key: str, *failures: Fail) -> None:
        self.script[key].extend(failures)

    def start(self) -> EmailReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver._handle(self, body)

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        key = request.headers.get("idempotency-key", "")
        try:
            timestamp = int(request.headers.get("webhook-timestamp", ""))
        except ValueError:
            timestamp = -1
        ok = verify(
            self.secret,
            request.headers.get("webhook-id", ""),
            timestamp,
            body,
            request.headers.get("webhook-signature", ""),
        )
        with self._lock:
            if ok and self.outage is not None:
                scripted: Fail | None = self.outage  # the script waits for the outage to end
            else:
                scripted = self.script[key].popleft() if ok and self.script[key] else None
        answer: dict[str, object]
        repeat = False
        if not ok:
            status, answer = 401, {"error": "bad signature"}
        elif scripted is not None and not 200 <= scripted.status < 300:
            time.sleep(scripted.delay_s)
            status, answer = scripted.status, {"error": "scripted failure"}
            if scripted.body_bytes:
                answer = {"error": "x" * scripted.body_bytes}
        else:
            if scripted is not None:
                time.sleep(scripted.delay_s)  # a slow success: sent, even if the client gave up
            with self._lock:
                repeat = key in self.emails
                if not repeat:
                    self.emails[key] = json.loads(body)
            status, answer = 200, {"id": key, "duplicate": repeat}
            if self.verbose and not repeat:
                email = self.emails[key]
                print(f"  e-mail sent: {email['subject']} -> {', '.join(email['to'])}", flush=True)
        with self._lock:
            self.calls.append(Call(key, status, ok, repeat))
        request.send_response(status)
        if scripted is not None and scripted.retry_after:
            # http.server writes headers as Latin-1: this sends the value's UTF-8 bytes.
            request.send_header("retry-after", scripted.retry_after.encode().decode("latin-1"))
        request.send_header("content-type", "application/json")
        request.end_headers()
        # The client gave up (timed out), or stopped reading a body it did not want.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            request.wfile.write(json.dumps(answer).encode())

    def calls_for(self, key: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.key == key]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
