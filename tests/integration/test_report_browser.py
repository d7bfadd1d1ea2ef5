"""The daily report (``python -m fleetwatch.report``, run as a command) in a real headless
Chromium from Debian's packages, driven over the DevTools Protocol (tests/browser.py): the
page loads from a file, every image decodes and is drawn at its size, nothing is fetched,
and its console and log report no error or warning. A screenshot of the whole page is kept
in the test's output (its path is printed).

Chromium is required in CI (.ci/run installs it); elsewhere the test is skipped, naming it.
A first test shows the checks see what they must: a broken image, a console error, a
refused fetch."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests import report_lake
from tests.browser import chromium, chromium_binary
from tests.report_lake import FIRST_DAY, ZONE, ReportLake

DAY = FIRST_DAY + timedelta(days=3)
IMAGES = """Promise.all(Array.from(document.images).map(async (img) => {
  let decoded = true;
  try { await img.decode(); } catch (e) { decoded = false; }
  const box = img.getBoundingClientRect();
  return {id: img.id, alt: img.alt, decoded: decoded, complete: img.complete,
          width: img.naturalWidth, height: img.naturalHeight, shown: box.width * box.height};
}))"""


@pytest.fixture(scope="module")
def browser_binary() -> str:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium must be installed in CI (.ci/run installs Debian's chromium)")
        pytest.skip("needs Chromium: Debian's chromium package (apt-get install chromium)")
    return binary


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ReportLake:
    roads_cache = tmp_path_factory.getbasetemp() / "report-roads-cache"
    return report_lake.build(tmp_path_factory.mktemp("report-browser"), roads_cache)


def test_the_checks_catch_a_broken_page(browser_binary: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; script-src 'unsafe-inline'\"><title>broken</title></head><body>"
        '<img id="bad" alt="bad" src="data:image/png;base64,iVBORw0KGgoAAAA=">'
        '<img id="far" alt="far" src="http://127.0.0.1:9/x.png">'
        '<script>console.error("boom")</script></body></html>'
    )
    with chromium(browser_binary, tmp_path / "profile") as tab:
        tab.open(broken.as_uri())
        images = tab.evaluate(IMAGES)
        problems = tab.problems()
    assert [(i["id"], i["decoded"], i["width"]) for i in images] == [
        ("bad", False, 0),
        ("far", False, 0),
    ]
    assert any("console.error: boom" in p for p in problems), problems
    assert any("Content Security Policy" in p for p in problems), problems


def test_the_report_renders_in_chromium(
    browser_binary: str, run: ReportLake, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    env = {
        **os.environ,
        "FLEET_LAKE_DIR": str(run.lake),
        "FLEET_HISTORY_DIR": str(run.history),
        "FLEET_TIMEZONE": ZONE,
    }
    command = [sys.executable, "-m", "fleetwatch.report", "--day", str(DAY), "--out", str(page)]
    done = subprocess.run(
        [*command, "--min-km", "3"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"report: wrote {page}" in done.stderr

    shot = tmp_path / "report.png"
    with chromium(browser_binary, tmp_path / "profile") as tab:
        tab.open(page.as_uri())
        facts = tab.evaluate(
            "({title: document.title, lang: document.documentElement.lang,"
            " charset: document.characterSet,"
            " sections: Array.from(document.querySelectorAll('section')).map(s => s.id),"
            " tables: document.querySelectorAll('table').length})"
        )
        images = tab.evaluate(IMAGES)
        tab.screenshot(shot)
        problems = tab.problems()
        requests = tab.requests()
    print(f"screenshot of the report: {shot}")

    assert facts == {
        "title": f"Fleet day {DAY} - fleetwatch",
        "lang": "en",
        "charset": "UTF-8",
        "sections": ["summary", "scores", "events", "trends", "hours"],
        "tables": 5,
    }
    assert [i["id"] for i in images] == [
        "scores-chart",
        "events-chart",
        "trends-chart",
        "hours-chart",
    ]
    for image in images:
        assert image["decoded"], image["id"]
        assert image["complete"], image["id"]
        assert image["width"] == 800, image
        assert image["height"] > 100, image
        assert image["shown"] > 0, f"{image['id']} is not drawn"
        assert image["alt"], image["id"]
    assert problems == [], "the console and log must be clean"
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert shot.stat().st_size > 50_000, "a page of charts, not a blank one"
