"""A local DynamoDB-API server for tests and benchmarks: dynalite, from the npm registry,
installed into build/dynalite on first use and started on a free port (in memory)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.localbrokers import BrokerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
DYNALITE_VERSION = "3.2.2"
INSTALL_DIR = ROOT / "build" / "dynalite"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "fleetwatch-test",
    "AWS_SECRET_ACCESS_KEY": "fleetwatch-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def dynalite_binary() -> Path:
    binary = INSTALL_DIR / "node_modules" / ".bin" / "dynalite"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the DynamoDB tests need npm (Node.js) to install dynalite")
        subprocess.run(
            [npm, "install", "--prefix", str(INSTALL_DIR), "--no-audit", "--no-fund",
             f"dynalite@{DYNALITE_VERSION}"],
            check=True, capture_output=True,
        )  # fmt: skip
    return binary


@contextmanager
def dynalite(workdir: Path) -> Iterator[str]:
    port = free_port()
    server = BrokerProcess("dynalite", [str(dynalite_binary()), "--port", str(port)], port, workdir)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
