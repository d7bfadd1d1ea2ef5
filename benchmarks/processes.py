"""Flow processes for the benchmarks: start one and wait for a log event; stop one."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_until(
    command: list[str], env: dict[str, str], log: Path, event: str, timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """Start ``command`` (output to ``log``) and return once it logged ``event``."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while f'"event": "{event}"' not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{command} did not log {event}; see {log}")
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
