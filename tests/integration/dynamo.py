"""A throttling proxy in front of a DynamoDB-API server, for the store tests (the server
itself: devtools/localdynamo.py, or FLEET_TEST_DYNAMODB_URL)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.request import Request, urlopen

import boto3

from connectors.dynamodb import item_values
from devtools.localdynamo import AWS_ENV


class ThrottlingProxy:
    """Forwards DynamoDB API calls, but throttles: every ``every``-th call gets a
    ProvisionedThroughputExceededException, and each BatchWriteItem passes on only its
    first few items, answering the rest as UnprocessedItems. A call mentioning
    ``reject_marker`` is refused with a ValidationException, as an oversized item would be."""

    def __init__(self, upstream: str, every: int = 3, passes: int = 7) -> None:
        self.upstream = upstream
        self.every = every
        self.passes = passes
        self.reject_marker = "reject-me"
        self.calls = 0
        self.throttled = 0
        self.unprocessed = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()

    def _decide(self, target: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """(0, None) to forward as is; else the status and document to answer with."""
        with self._lock:
            self.calls += 1
            throttle = self.calls % self.every == 0
        if self.reject_marker in json.dumps(body):
            return 400, {
                "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                "message": "Item size has exceeded the maximum allowed size",
            }
        if throttle:
            with self._lock:
                self.throttled += 1
            return 400, {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "throttled by the test proxy",
            }
        return 0, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                status, answer = proxy._decide(target, body)
                held_back: list[Any] = []
                if status == 0 and target.endswith("BatchWriteItem"):
                    ((table, requests),) = body["RequestItems"].items()
                    body["RequestItems"][table] = requests[: proxy.passes]
                    held_back = requests[proxy.passes :]
                    raw = json.dumps(body).encode()
                if answer is None:
                    status, answer = self._forward(raw)
                    if held_back:
                        with proxy._lock:
                            proxy.unprocessed += len(held_back)
                        (table,) = body["RequestItems"]
                        unprocessed = answer.setdefault("UnprocessedItems", {})
                        unprocessed.setdefault(table, []).extend(held_back)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, raw: bytes) -> tuple[int, dict[str, Any]]:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                request = Request(proxy.upstream, data=raw, headers=headers, method="POST")
                try:
                    with urlopen(request, timeout=30) as response:
                        return response.status, json.loads(response.read() or b"{}")
                except Exception as error:  # an HTTPError carries DynamoDB's error document
                    read = getattr(error, "read", None)
                    code = getattr(error, "code", 500)
                    return int(code), json.loads(read()) if read else {"message": str(error)}

        return Handler


def scan_table(url: str, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` on the DynamoDB-API server at ``url``, as plain values."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items += [item_values(item) for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
