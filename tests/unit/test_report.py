"""``python -m fleetwatch.report`` on the real output of a demo-sized run (tests/report_lake.py:
the demo's road fleet on six days, twice a day, once across local midnight; the real
backfill's alerts and scorecards archived in the lake). The page has every section; its
tables say what a plain computation from the run's scorecards and alerts says; every image
is a PNG that decodes, drawn the same each time; no data is exit 1, bad arguments exit 2."""

from __future__ import annotations

import base64
import io
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from matplotlib.image import imread

from domain.alerts import Alert
from domain.scorecards import Scorecard
from domain.timestamps import parse_rfc3339_ms
from fleetwatch.report import (
    DEFAULT_MIN_KM,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DayData,
    main,
    read_alerts,
    read_cards,
    render,
)
from runtime.settings import Settings
from tests import report_lake
from tests.report_lake import DAYS, FIRST_DAY, ZONE, ReportLake

DAY = FIRST_DAY + timedelta(days=3)  # three days before it, two after
MIN_KM = 3.0  # a demo day is two ten-minute drives: 5-20 km
TOP = 5
NOW = datetime(2026, 12, 10, 6, 30, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HELSINKI = ZoneInfo(ZONE)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ReportLake:
    roads_cache = tmp_path_factory.getbasetemp() / "report-roads-cache"
    return report_lake.build(tmp_path_factory.mktemp("report"), roads_cache)


def environ(run: ReportLake, **extra: str) -> dict[str, str]:
    return {
        "FLEET_LAKE_DIR": str(run.lake),
        "FLEET_HISTORY_DIR": str(run.history),
        "FLEET_TIMEZONE": ZONE,
        **extra,
    }


def report(run: ReportLake, *argv: str, now: datetime = NOW, **env: str) -> int:
    return main(
        list(argv),
        settings_from_env=lambda: Settings.from_env(environ(run, **env)),
        now=lambda: now,
    )


class Page(HTMLParser):
    """The parts of the page the tests read: tables by id (rows of cell texts), images,
    section ids, every src/href, the title, the html element's attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str | None]] = []
        self.sections: list[str] = []
        self.references: list[str] = []
        self.tags: Counter[str] = Counter()
        self.root: dict[str, str | None] = {}
        self.title = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags[tag] += 1
        self.references += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "html":
            self.root = attributes
        elif tag == "title":
            self._in_title = True
        elif tag == "section":
            self.sections.append(attributes.get("id") or "")
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "table":
            self._table = attributes.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table is not None and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._cell is not None:
            self._cell.append(data)

    def body(self, table: str) -> list[list[str]]:
        return self.tables[table][1:]  # the header row off


def number(text: str) -> float:
    return float(text.replace(",", ""))


def local_day(alert: Alert) -> date:
    return datetime.fromtimestamp(parse_rfc3339_ms(alert.window_end) / 1000, HELSINKI).date()


def local_hour(alert: Alert) -> int:
    return datetime.fromtimestamp(parse_rfc3339_ms(alert.window_end) / 1000, HELSINKI).hour


def the_days_cards(run: ReportLake, day: date = DAY) -> list[Scorecard]:
    return [c for c in run.cards if c.day == day.isoformat()]


def name(run: ReportLake, driver_id: str) -> str:
    names = pl.read_parquet(run.history / "drivers.parquet").select("driver_id", "name").rows()
    return f"{dict(names)[driver_id]} ({driver_id})"


@pytest.fixture(scope="module")
def page(run: ReportLake, tmp_path_factory: pytest.TempPathFactory) -> Page:
    out = tmp_path_factory.mktemp("report-page") / "day.html"
    argv = ["--day", DAY.isoformat(), "--out", str(out), "--min-km", str(MIN_KM)]
    assert report(run, *argv) == EXIT_OK
    return Page(out.read_text(encoding="utf-8"))


def test_the_run_crosses_local_midnight_and_has_every_kind_of_day(run: ReportLake) -> None:
    """What the other tests rely on: alerts of the day whose UTC date is the day before, a
    driver without a scorecard on the day but with some in the window, events and none."""
    todays = [a for a in run.alerts if local_day(a) == DAY]
    assert any(a.window_end[:10] == (DAY - timedelta(days=1)).isoformat() for a in todays)
    assert {0, 11, 23} <= {local_hour(a) for a in todays}
    cards = the_days_cards(run)
    assert any(sum(c.alerts.values()) == 0 for c in cards if c.driver_id)
    assert any(sum(c.alerts.values()) >= 3 for c in cards if c.driver_id)
    assert any(c.driver_id is None for c in cards), "readings without a driver"
    # The scorecards count the same alerts: those of the driver and local day.
    assert sum(sum(c.alerts.values()) for c in cards) == len(todays)


def test_the_page_is_one_self_contained_html5_document(page: Page) -> None:
    assert page.root == {"lang": "en"}
    assert page.title == f"Fleet day {DAY} - fleetwatch"
    assert page.tags["script"] == 0
    assert page.tags["link"] == 0
    assert page.tags["iframe"] == 0
    # Nothing fetched: every reference is an embedded image.
    assert page.references
    assert all(r.startswith("data:image/png;base64,") for r in page.references)
    assert page.sections == ["summary", "scores", "events", "trends", "hours"]
    assert set(page.tables) == {
        "summary-table",
        "scores-table",
        "events-table",
        "trends-table",
        "hours-table",
    }


def test_every_image_is_a_png_with_alt_text_beside_its_table(page: Page) -> None:
    ids = [image["id"] for image in page.images]
    assert ids == ["scores-chart", "events-chart", "trends-chart", "hours-chart"]
    for image in page.images:
        assert len(image["alt"] or "") > 20, image["id"]
        data = base64.b64decode(str(image["src"]).removeprefix("data:image/png;base64,"))
        assert data.startswith(PNG_MAGIC)
        pixels = imread(io.BytesIO(data), format="png")
        height, width = pixels.shape[:2]
        assert (width, 100 <= height <= 2000) == (800, True), (image["id"], pixels.shape)
        assert pixels[..., :3].std() > 0.05, f"{image['id']} is not blank"


def test_the_summary_is_the_days_scorecards_alerts_and_telemetry(
    page: Page, run: ReportLake
) -> None:
    cards = the_days_cards(run)
    alerts = [a for a in run.alerts if local_day(a) == DAY]
    severities = Counter(str(a.severity) for a in alerts)
    telemetry = (
        pl.scan_parquet(str(run.lake / "date=*" / "*.parquet"), hive_partitioning=False)
        .filter(pl.col("ts").dt.convert_time_zone(ZONE).dt.date() == DAY)
        .select(pl.col("truck_id").n_unique())
        .collect()
        .item()
    )
    expected = {
        "drivers with a scorecard": sum(1 for c in cards if c.driver_id is not None),
        "trucks with a reading": telemetry,
        "readings": sum(c.readings for c in cards),
        "readings without a driver": sum(c.readings for c in cards if c.driver_id is None),
        "distance (km)": round(sum(c.distance_km for c in cards), 1),
        "driving (h)": round(sum(c.driving_s for c in cards) / 3600, 1),
        "alerts": len(alerts),
        "alerts: critical": severities["critical"],
        "alerts: warning": severities["warning"],
        "alerts without a driver": sum(1 for a in alerts if a.driver_id is None),
    }
    shown = {what: number(value) for what, value in page.body("summary-table")}
    assert shown == pytest.approx(expected)
    assert expected["alerts: critical"]
    assert expected["alerts: warning"]


def test_the_ranked_drivers_are_those_with_enough_km_best_and_worst_by_score(
    page: Page, run: ReportLake
) -> None:
    eligible = [c for c in the_days_cards(run) if c.driver_id and c.distance_km >= MIN_KM]
    ranking = sorted(
        eligible,
        key=lambda c: (
            -c.safety_score,
            c.events_per_1000km if c.events_per_1000km is not None else float("inf"),
            -c.distance_km,
            c.driver_id,
        ),
    )
    assert len(ranking) > 2 * TOP, "enough drivers for two full lists"
    best, worst = ranking[:TOP], ranking[-TOP:][::-1]
    rows = page.body("scores-table")
    expected = [
        [
            f"{label} {n}",
            name(run, str(c.driver_id)),
            f"{c.safety_score:.1f}",
            f"{c.distance_km:,.1f}",
            str(sum(c.alerts.values())),
        ]
        for label, cards in (("best", best), ("worst", worst))
        for n, c in enumerate(cards, 1)
    ]
    assert [row[:5] for row in rows] == expected
    rules = {row[1]: row[6] for row in rows}
    for c in best + worst:
        listed = ", ".join(f"{r} {n}" for r, n in sorted(c.alerts.items())) or "none"
        assert rules[name(run, str(c.driver_id))] == listed
    assert any(c.distance_km < MIN_KM for c in the_days_cards(run) if c.driver_id), (
        "some driver was left out for too few km"
    )


def test_the_top_drivers_by_events(page: Page, run: ReportLake) -> None:
    drivers = [c for c in the_days_cards(run) if c.driver_id and c.alerts]
    ranking = sorted(
        drivers,
        key=lambda c: (-sum(c.alerts.values()), -(c.events_per_1000km or 0), c.driver_id),
    )[:TOP]
    rows = page.body("events-table")
    assert [(row[0], int(row[1])) for row in rows] == [
        (name(run, str(c.driver_id)), sum(c.alerts.values())) for c in ranking
    ]


def test_each_listed_driver_has_a_trend_over_the_window(page: Page, run: ReportLake) -> None:
    listed = list(dict.fromkeys(row[1] for row in page.body("scores-table")))
    listed += [row[0] for row in page.body("events-table") if row[0] not in listed]
    rows = page.body("trends-table")
    assert [row[0] for row in rows] == listed
    first = DAY - timedelta(days=29)
    for row in rows:
        driver = row[0].rsplit("(", 1)[1].rstrip(")")
        window = [
            c
            for c in run.cards
            if c.driver_id == driver and first.isoformat() <= c.day <= DAY.isoformat()
        ]
        scores = [c.safety_score for c in window]
        assert int(row[1]) == len(window)
        assert len(window) <= 4
        assert number(row[3]) == pytest.approx(round(sum(scores) / len(scores), 1))
        assert number(row[4]) == pytest.approx(round(min(scores), 1))
    assert any(int(row[1]) > 1 for row in rows), "a trend of more than one day"


def test_alerts_by_rule_and_local_hour(page: Page, run: ReportLake) -> None:
    alerts = [a for a in run.alerts if local_day(a) == DAY]
    counts = Counter((a.rule, local_hour(a)) for a in alerts)
    hours = sorted({h for _, h in counts})
    header, *rows = page.tables["hours-table"]
    assert header == ["rule", *(f"{h:02d}h" for h in hours), "total"]
    rules = sorted({r for r, _ in counts})
    assert [row[0] for row in rows] == [*rules, "all rules"]
    for row in rows[:-1]:
        assert [int(v) for v in row[1:-1]] == [counts[row[0], h] for h in hours]
        assert int(row[-1]) == sum(counts[row[0], h] for h in hours)
    assert int(rows[-1][-1]) == len(alerts)


def test_the_footer_says_what_the_data_covers(run: ReportLake, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert report(run, "--day", str(DAY), "--out", str(out), "--days", "7") == EXIT_OK
    text = out.read_text()
    footer = text[text.index("<footer>") :]
    gaps = ", ".join(str(DAY - timedelta(days=n)) for n in (6, 5, 4))
    assert (
        f"Scorecards on 4 of the 7 days {DAY - timedelta(days=6)} to {DAY} (none on {gaps});"
        in footer
    )
    assert str(run.lake) in footer
    assert ZONE in footer
    assert "Generated at 2026-12-10 06:30:00 UTC" in footer
    out = tmp_path / "r30.html"
    assert report(run, "--day", str(DAY), "--out", str(out)) == EXIT_OK
    text = out.read_text()
    assert f"Scorecards on 4 of the 30 days {DAY - timedelta(days=29)} to {DAY} (the first " in text
    assert f"(the first {FIRST_DAY}, the last {DAY});" in text
    # The default --min-km: a demo day is too short for anyone to be ranked by score.
    assert f"at least {DEFAULT_MIN_KM:g} km" in text
    assert f"No driver drove {DEFAULT_MIN_KM:g} km or more on {DAY}" in text


def test_the_charts_are_the_same_each_time(run: ReportLake, tmp_path: Path) -> None:
    pages = []
    for n, now in enumerate((NOW, NOW + timedelta(hours=5))):
        out = tmp_path / f"{n}.html"
        assert report(run, "--day", str(DAY), "--out", str(out), "--min-km", "3", now=now) == 0
        pages.append(out.read_text())
    images = [re.findall(r'src="(data:[^"]+)"', p) for p in pages]
    assert len(images[0]) == 4
    assert images[0] == images[1]
    assert pages[0] != pages[1], "only the footer's time differs"


def test_names_are_escaped(run: ReportLake) -> None:
    zone = ZoneInfo(ZONE)
    cards = read_cards(run.lake, DAY - timedelta(days=29), DAY)
    today = cards.filter((pl.col("day") == DAY) & pl.col("driver_id").is_not_null())
    driver = today.sort("events", descending=True)["driver_id"][0]  # listed by events
    data = DayData(
        DAY,
        DAY - timedelta(days=29),
        zone,
        run.lake,
        cards,
        read_alerts(run.lake, DAY, zone),
        None,
        {driver: '<img src="https://evil.example/x.png"> & co'},
    )
    text = render(data, min_km=0, generated_at=NOW).html
    assert "evil.example" in text
    assert '<img src="https' not in text
    assert "&lt;img src=&quot;https://evil.example/x.png&quot;&gt; &amp; co" in text


def test_the_last_day_of_the_run_has_the_drive_past_midnight(
    run: ReportLake, tmp_path: Path
) -> None:
    """The day after the run's last UTC date has only the ten minutes after local midnight
    (UTC 22:00-22:05 of the date before): a report, from the partition before."""
    after = FIRST_DAY + timedelta(days=DAYS)
    out = tmp_path / "after.html"
    assert report(run, "--day", str(after), "--out", str(out), "--min-km", "0") == EXIT_OK
    page = Page(out.read_text())
    summary = dict(page.body("summary-table"))
    assert int(summary["trucks with a reading"]) == 20
    assert int(summary["drivers with a scorecard"]) > 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--day", "2026-11-20"], {}, "no scorecard and no alert of 2026-11-20"),
        (["--day", "2026-12-20", "--days", "60"], {}, "the last with data: 2026-12-07"),
    ],
)
def test_a_day_without_data_is_exit_1(
    run: ReportLake,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    out = tmp_path / "none.html"
    assert report(run, *args, "--out", str(out), **env) == EXIT_FAILED
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--day", "2026-12-04", "--lake", "/nonexistent"], {}, "--lake /nonexistent: not a"),
        (["--day", "2026-12-04"], {"FLEET_LAKE_DIR": ""}, "no lake: give --lake DIR"),
        (["--day", "2026-12-04", "--history", "/nonexistent"], {}, "history cannot be loaded"),
        (["--day", "2026-12-04"], {"FLEET_TIMEZONE": "Mars/Olympus"}, "FLEET_TIMEZONE"),
    ],
)
def test_bad_settings_are_exit_2(
    run: ReportLake,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    environment = {k: v for k, v in environ(run, **env).items() if v}
    code = main(args, settings_from_env=lambda: Settings.from_env(environment), now=lambda: NOW)
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--day", "2026-13-01"],
        ["--day", "tomorrow"],
        ["--day", "2026-12-04", "--days", "0"],
        ["--day", "2026-12-04", "--top", "x"],
        ["--day", "2026-12-04", "--min-km", "-1"],
        ["--day", "2026-12-04", "--min-km", "nan"],
    ],
)
def test_bad_arguments_are_exit_2(args: list[str]) -> None:
    fail: Callable[[], Settings] = lambda: pytest.fail("no settings read")  # noqa: E731
    with pytest.raises(SystemExit) as exit_:
        main(args, settings_from_env=fail)
    assert exit_.value.code == EXIT_USAGE


def test_a_lake_with_unreadable_scorecards_is_exit_1(
    run: ReportLake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    bad = lake / "scorecards" / "date=2026-12-04" / "x.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    code = report(run, "--day", "2026-12-04", "--lake", str(lake))
    assert code == EXIT_FAILED
    assert "cannot read the scorecards" in capsys.readouterr().err


def test_yesterday_is_the_local_day_before_now_and_out_takes_the_day(
    run: ReportLake, tmp_path: Path
) -> None:
    """At 00:30 in Helsinki (22:30 UTC the day before), yesterday is the local day before:
    what the CronJob (k8s/base/report.yaml) asks for."""
    now = datetime(2026, 12, 4, 22, 30, tzinfo=UTC)  # 5 Dec 00:30 in Helsinki
    out = str(tmp_path / "reports" / "{day}.html")
    assert report(run, "--day", "yesterday", "--out", out, now=now) == EXIT_OK
    assert (tmp_path / "reports" / "2026-12-04.html").exists()
    assert report(run, "--day", "today", "--out", out, now=now) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "2026-12-04.html",
        "2026-12-05.html",
    ]
