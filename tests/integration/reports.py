"""Figures that fault tests measure, written to build/reports/ and shown in the test output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.flows import ROOT

REPORTS = ROOT / "build" / "reports"


def report(name: str, figures: dict[str, object], capsys: pytest.CaptureFixture[str]) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    with capsys.disabled():
        print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return path
