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


def test_catalogue_md_is_made_from_catalogue_json() -> None:
    results = json.loads((RESULTS / "catalogue.json").read_text())
    assert results["mode"] == "full"
    assert report.catalogue_markdown(results) == (RESULTS / "catalogue.md").read_text()


def test_the_performance_page_shows_the_committed_catalogue_results() -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    assert (RESULTS / "catalogue.md").read_text().strip() in page


def test_the_throughput_table_has_the_catalogue_rows_when_the_run_had_them() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    catalogue = json.loads((RESULTS / "catalogue.json").read_text())
    without = report.markdown({k: v for k, v in results.items() if k != "catalogue"})
    assert "10-rule catalogue" not in without
    rows = [
        line
        for line in report.markdown({**results, "catalogue": catalogue}).splitlines()
        if "10-rule catalogue" in line
    ]
    stream, backfill = catalogue["stream"], catalogue["backfill"]
    ten, posted = (
        stream["alerts flow, 10-rule catalogue"],
        stream["alerts flow, posted-limit catalogue"],
    )
    b_ten, b_posted = (
        backfill["backfill, 10-rule catalogue"],
        backfill["backfill, posted-limit catalogue"],
    )
    ratios = catalogue["ratios"]
    assert rows == [
        f"| alerts flow, 10-rule catalogue | {ten['per_s']:,}/s "
        f"| alerts flow, built-in (same run) | {stream['alerts flow, built-in']['per_s']:,}/s "
        f"| {ratios['stream_catalogue_over_builtin']:.2f}x |",
        f"| alerts flow, posted-limit catalogue (10 rules + 3 tiers, roads) "
        f"| {posted['per_s']:,}/s "
        f"| alerts flow, 10-rule catalogue (no roads) | {ten['per_s']:,}/s "
        f"| {ratios['stream_posted_over_catalogue']:.2f}x |",
        f"| backfill, 10-rule catalogue | {b_ten['per_s']:,} rows/s "
        f"| backfill, built-in | {backfill['backfill, built-in']['per_s']:,} rows/s "
        f"| {ratios['backfill_catalogue_over_builtin']:.2f}x |",
        f"| backfill, posted-limit catalogue (10 rules + 3 tiers, roads) "
        f"| {b_posted['per_s']:,} rows/s "
        f"| backfill, 10-rule catalogue (no roads) | {b_ten['per_s']:,} rows/s "
        f"| {ratios['backfill_posted_over_catalogue']:.2f}x |",
    ]


def test_the_posted_limit_benchmark_catalogue_adds_the_samples_three_tiers(tmp_path: Path) -> None:
    from benchmarks.alerts import START_MS
    from benchmarks.catalogue import POSTED_RULE_IDS, RULE_IDS, write_catalogue
    from connectors.catalogue import load_catalogue

    ten_dir, zones = write_catalogue(tmp_path / "ten", START_MS)
    posted_dir, _ = write_catalogue(tmp_path / "posted", START_MS, posted_limits=True)
    ten = load_catalogue(ten_dir, zones).versions
    posted = load_catalogue(posted_dir, zones).versions
    sample = load_catalogue(ROOT / "catalogue" / "rules", ROOT / "catalogue" / "zones.geojson")
    tiers = {r.id: r for r in sample.versions[-1].rules if r.id in POSTED_RULE_IDS}
    for before, after in zip(ten, posted, strict=True):
        assert [r.id for r in after.rules] == [*RULE_IDS, *POSTED_RULE_IDS]
        assert [(r.definition, r.critical) for r in after.rules[: len(RULE_IDS)]] == [
            (r.definition, r.critical) for r in before.rules
        ]
        assert {r.id: (r.definition, r.critical) for r in after.rules[len(RULE_IDS) :]} == {
            rule_id: (rule.definition, rule.critical) for rule_id, rule in tiers.items()
        }


def test_the_benchmark_catalogue_has_every_kind_scopes_and_two_versions(tmp_path: Path) -> None:
    from benchmarks.alerts import START_MS
    from benchmarks.catalogue import RULE_IDS, write_catalogue
    from connectors.catalogue import load_catalogue

    rules, zones = write_catalogue(tmp_path, START_MS)
    versions = load_catalogue(rules, zones).versions
    assert [v.version for v in versions] == [1, 2]
    for version in versions:
        assert [r.id for r in version.rules] == list(RULE_IDS)
        kinds = {r.definition.kind.name for r in version.rules}
        assert kinds == {"instant_over", "count_over", "duration_over", "deceleration", "zone_over"}
        scopes = [r.definition.scope for r in version.rules]
        assert any(s.trucks and s.vehicle_classes for s in scopes)
        assert any(s.trucks and not s.vehicle_classes for s in scopes)
        assert any(s.vehicle_classes and not s.trucks for s in scopes)
    first, second = versions
    changed = [
        a.id
        for a, b in zip(first.rules, second.rules, strict=True)
        if (a.definition, a.critical) != (b.definition, b.critical)
    ]
    assert changed == ["sustained_speeding", "harsh_braking", "centre_slow_zone"]


def test_roads_md_is_made_from_roads_json() -> None:
    results = json.loads((RESULTS / "roads.json").read_text())
    assert results["mode"] == "full"
    assert report.roads_markdown(results) == (RESULTS / "roads.md").read_text()


def test_the_performance_page_shows_the_committed_roads_results() -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    assert (RESULTS / "roads.md").read_text().strip() in page


def test_the_throughput_table_has_the_matching_row_when_the_run_had_it() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    roads = json.loads((RESULTS / "roads.json").read_text())
    without = report.markdown({k: v for k, v in results.items() if k != "roads"})
    assert "map matching" not in without
    rows = [
        line
        for line in report.markdown({**results, "roads": roads}).splitlines()
        if "map matching" in line
    ]
    matching = roads["matching"]["contenders"]
    batch = matching["match, batches of 1,000"]
    assert rows == [
        f"| map matching, batches of 1,000 (road index) | {batch['per_s']:,} readings/s "
        f"| one query_nearest per reading "
        f"| {matching['naive loop: one query_nearest per reading']['per_s']:,} readings/s "
        f"| {batch['ratio_to_naive']:.2f}x |",
    ]


def test_the_roads_benchmark_gives_the_naive_loops_answers_on_a_small_run() -> None:
    """A tiny run of benchmarks.roads's matching: every contender agrees with the naive loop
    (it raises otherwise) and the readings have the kinds it says."""
    from benchmarks.roads import NaiveMatcher, matching, sample_readings
    from connectors.roads import default_extract, load_road_index, read_ways

    extract = default_extract()
    index = load_road_index(extract, None)
    naive = NaiveMatcher(index)
    lats, lons, kinds = sample_readings(read_ways(extract), naive, 2_000)
    assert kinds == {"on_roads": 1_760, "far_from_roads": 200, "without_position": 40}
    found = matching(index, naive, lats, lons, rounds=1)
    assert 0.9 * kinds["on_roads"] <= found["matched"] <= kinds["on_roads"]
    assert set(found["contenders"]) >= {"match, batches of 1,000", "match, one batch of 2,000"}


def test_scorecards_md_is_made_from_scorecards_json() -> None:
    results = json.loads((RESULTS / "scorecards.json").read_text())
    assert results["mode"] == "full"
    assert report.scorecards_markdown(results) == (RESULTS / "scorecards.md").read_text()


def test_the_performance_page_shows_the_committed_scorecards_results() -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    assert (RESULTS / "scorecards.md").read_text().strip() in page


def test_the_throughput_table_has_the_scorecards_row_when_the_run_had_it() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    scorecards = json.loads((RESULTS / "scorecards.json").read_text())
    without = report.markdown({k: v for k, v in results.items() if k != "scorecards"})
    assert "driver scorecards" not in without
    rows = [
        line
        for line in report.markdown({**results, "scorecards": scorecards}).splitlines()
        if "driver scorecards" in line
    ]
    stream = scorecards["stream"]
    assert rows == [
        f"| alerts flow, built-in + driver scorecards "
        f"| {stream['alerts flow, built-in + scorecards']['per_s']:,}/s "
        f"| alerts flow, built-in (same run) | {stream['alerts flow, built-in']['per_s']:,}/s "
        f"| {scorecards['ratios']['with_over_without']:.2f}x |",
    ]
