"""Flow processes from the source tree: ``python -m bytewax.run dataflows.<name>``, started
the same way by the demo, the benchmarks and the integration tests.

A process gets this process's environment without any ``FLEET_*`` variable (a developer's
shell must not leak settings into a run) plus the caller's; it runs in the repository root
and appends its output to a log file. Bytewax's API server (``BYTEWAX_DATAFLOW_API_ENABLED``)
writes ``dataflow.json`` into ``BYTEWAX_DATAFLOW_API_CACHE_PATH``, a directory that defaults
to the working directory: unless the caller names one, it is a directory beside the log, not
the repository. SIGTERM is the graceful stop (the flows' own, runtime/shutdown.py), SIGKILL
the crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def inherited_environment() -> dict[str, str]:
    """This process's environment without ``FLEET_*``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}


@dataclass
class FlowProcess:
    """``python -m bytewax.run <module> <args>`` in its own process, output to ``log_path``.

    ``runner=None`` runs ``python -m <module> <args>`` instead (a benchmark's baseline)."""

    module: str
    env: Mapping[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    runner: str | None = "bytewax.run"

    @property
    def command(self) -> list[str]:
        runner = [self.runner] if self.runner else []
        return [sys.executable, "-m", *runner, self.module, *self.args]

    def environment(self) -> dict[str, str]:
        """What the process gets: the inherited environment, then ``env``."""
        environment = inherited_environment()
        environment.update(self.env)
        api = "BYTEWAX_DATAFLOW_API_ENABLED" in environment
        if api and "BYTEWAX_DATAFLOW_API_CACHE_PATH" not in environment:
            cache = self.log_path.with_name(f"{self.log_path.stem}-bytewax")
            cache.mkdir(parents=True, exist_ok=True)
            environment["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(cache)
        return environment

    def start(self) -> FlowProcess:
        environment = self.environment()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment
            )
        return self

    def run(self, timeout_s: float) -> int:
        """Start, wait for the end (SIGKILL after ``timeout_s``, then TimeoutExpired)."""
        self.start()
        try:
            return self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def log_events(self) -> list[dict[str, object]]:
        """The JSON lines of the log so far (every run that appended to it)."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def wait_for_event(self, event: str, count: int = 1, timeout_s: float = 30.0) -> None:
        """Return once the log holds ``count`` lines of ``event``; raise if the process
        exits first (RuntimeError) or ``timeout_s`` passes (TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(e.get("event") == event for e in self.log_events()) >= count:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited {self.process.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        raise TimeoutError(
            f"no {count}x {event!r} from {self.module} in {timeout_s} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no flush, no close, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, the graceful stop (SIGKILL after ``timeout_s``); returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None, "not started"
        return self.process.wait(timeout=timeout_s)
