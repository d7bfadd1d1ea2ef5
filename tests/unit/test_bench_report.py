"""The committed benchmark results hang together: results.md is what benchmarks.report makes
of results.json, docs/performance.md shows that table, and the plot renders."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report
from tests.kube import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def test_results_md_is_made_from_results_json() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    assert results["mode"] == "full"
    assert report.markdown(results) == (RESULTS / "results.md").read_text()


def test_the_performance_page_shows_the_committed_results() -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    assert (RESULTS / "results.md").read_text().strip() in page


def test_the_plot_renders(tmp_path: Path) -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    report.plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
