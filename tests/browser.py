"""A real headless Chromium (Debian's ``chromium`` package) driven over the Chrome DevTools
Protocol: load a page, evaluate JavaScript in it, collect what its console and log said,
take a full-page screenshot. Just enough CDP for the page tests, over a plain WebSocket
(``websockets``' sync client): no browser download, no driver binary.

Chromium runs with the flags this machine needs (root: no sandbox; no background
networking, which a closed network refuses), a fresh profile and ``--remote-debugging-port=0``;
the port it picked is read from ``DevToolsActivePort`` in the profile."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_binary() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    pass


@dataclass
class Tab:
    """One page target: ``call`` sends a command and waits for its answer; events that come
    meanwhile are kept in ``events`` (method, params), in order."""

    socket: ClientConnection
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append((message["method"], message.get("params", {})))

    def wait_for(self, method: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The first event ``method`` (already received or still to come)."""
        for name, params in self.events:
            if name == method:
                return params
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.01, deadline - time.monotonic())))
            if "method" in message:
                self.events.append((message["method"], message.get("params", {})))
                if message["method"] == method:
                    params: dict[str, Any] = message.get("params", {})
                    return params

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if a promise); a thrown error is a
        CdpError."""
        answer = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            raise CdpError(f"{expression[:80]}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def open(self, url: str, timeout_s: float = 30.0) -> None:
        """Navigate and wait for the load event (every image loaded or failed)."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise CdpError(f"cannot open {url}: {answer['errorText']}")
        self.wait_for("Page.loadEventFired", timeout_s)

    def problems(self) -> list[str]:
        """What the page's console and log reported as errors or warnings, and its uncaught
        exceptions, one line each."""
        found = []
        for method, params in self.events:
            if method == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "warning",
                "assert",
            ):
                texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                found.append(f"console.{params['type']}: {' '.join(texts)}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(
                    f"exception: {details.get('exception', {}).get('description', details)}"
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                entry = params["entry"]
                found.append(f"log {entry['level']} ({entry['source']}): {entry['text']}")
        return found

    def requests(self) -> list[str]:
        """The URL of every request the page made (data: URLs included where reported)."""
        return [p["request"]["url"] for m, p in self.events if m == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, width: int = 1400) -> None:
        """The whole page, ``width`` CSS pixels wide, as PNG."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@contextmanager
def chromium(binary: str, profile: Path, timeout_s: float = 30.0) -> Iterator[Tab]:
    """A headless Chromium with a fresh profile in ``profile``, and its first tab."""
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "LANG": "en_US.UTF-8"},
    )
    try:
        port = _debugging_port(profile / "DevToolsActivePort", process, timeout_s)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            yield Tab(socket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _debugging_port(path: Path, process: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CdpError(f"chromium exited with {process.returncode} before it listened")
        lines = path.read_text().splitlines() if path.exists() else []
        if lines and lines[0].strip().isdigit():
            return int(lines[0])
        time.sleep(0.05)
    raise CdpError(f"chromium wrote no {path.name} in {timeout_s} s")
