"""What a review of the catalogue found, each held by a test: lineages the same in every
process, a zone shared by worker threads, the past of a catalogue changed under a running
stream, numbers beyond any float, durations that round to nothing, and which copy of a
duplicate the backfill keeps."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connectors.catalogue import CatalogueStore
from domain.catalogue import Catalogue, CatalogueError, RuleBook, parse_version
from domain.readings import Reading
from domain.rules import judge
from domain.zones import Zones, ZonesError

ROOT = Path(__file__).resolve().parents[2]
SCOPED = """version: 2
effective_from: 2026-02-01T00:00:00Z
rules:
  - {id: depot, kind: count_over, speed_over_kmh: 90, count: 3, within_s: 600,
     scope: {trucks: ["T1*", "T2*", "T3*", "T4*"], vehicle_classes: [heavy, medium, light]}}
"""
T = 1_800_000_000_000  # 2027-01-15: under version 2


def run_python(code: str, hash_seed: str) -> str:
    env = {"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_a_scoped_rule_has_the_same_lineage_in_every_process() -> None:
    """Scope lists are sets; their order follows the hash seed. A lineage built from it
    would change at every restart, and every scoped rule's state would start empty."""
    code = f"""
        from domain.catalogue import Catalogue, parse_version
        catalogue = Catalogue([parse_version({SCOPED!r}, "0002.yaml")])
        print(catalogue.at({T}).judged[0][1])
    """
    lineages = {run_python(code, seed) for seed in ("0", "1", "2", "3")}
    assert len(lineages) == 1, lineages


def test_removing_an_older_version_under_a_running_stream_keeps_the_state() -> None:
    """The version that judges every reading never changed: the stream must go on as a
    backfill with the new catalogue does (the lineage once named its run's first version)."""
    rule = "  - {id: x, kind: count_over, speed_over_kmh: 90, count: 3, within_s: 600}\n"
    v1 = parse_version(
        "version: 1\neffective_from: 2026-01-01T00:00:00Z\nrules:\n" + rule, "0001.yaml"
    )
    v2 = parse_version(
        "version: 2\neffective_from: 2026-02-01T00:00:00Z\nrules:\n" + rule, "0002.yaml"
    )
    before, after = RuleBook(Catalogue([v1, v2])), RuleBook(Catalogue([v2]))
    readings = [Reading(f"e{i}", "T1", T + i * 1000, 95.0) for i in range(3)]
    states: dict = {}
    stream = judge(states, readings[:2], before) + judge(states, readings[2:], after)
    assert len(stream) == len(judge({}, readings, after)) == 1
    # And the other way: a version added in the past that breaks the run resets the state,
    # as a backfill with that catalogue would.
    changed = parse_version(
        "version: 3\neffective_from: 2027-01-15T00:00:00.001Z\nrules:\n"
        + rule.replace("within_s: 600", "within_s: 900"),
        "0003.yaml",
    )
    back = parse_version(
        "version: 4\neffective_from: 2027-01-15T08:00:00Z\nrules:\n" + rule, "0004.yaml"
    )
    later = [Reading(f"f{i}", "T1", T + 30 * 86_400_000 + i, 95.0) for i in range(2)]
    broken = RuleBook(Catalogue([v2, changed, back]))
    states = {}
    judge(states, readings[:2], after)
    assert judge(states, later, broken) == []


def test_a_zone_shared_by_threads_answers_without_crashing() -> None:
    """GEOS is not safe for concurrent first use of a geometry: two threads on freshly read
    zones crashed the process (3 runs of 3) before queries took turns."""
    code = """
        import math, os, threading
        from domain.zones import Zones
        n = 400
        ring = [[7.0 + 0.01 * math.cos(2 * math.pi * i / n),
                 50.0 + 0.01 * math.sin(2 * math.pi * i / n)] for i in range(n)]
        ring.append(ring[0])
        feature = {"type": "Feature", "properties": {"name": "yard"},
                   "geometry": {"type": "Polygon", "coordinates": [ring]}}
        zones = [Zones.from_geojson({"type": "FeatureCollection", "features": [feature]})["yard"]
                 for _ in range(200)]
        wrong = [0]
        barrier = threading.Barrier(2)
        def worker():
            for zone in zones:
                barrier.wait()
                for j in range(50):
                    if not zone.contains(50.0, 7.0 + 0.0001 * j):
                        wrong[0] += 1
        threads = [threading.Thread(target=worker) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(wrong[0])
    """
    assert run_python(code, "0") == "0"


HUGE = "1" + "0" * 400


@pytest.mark.parametrize("field", ["speed_over_kmh", "cooldown_s"])
def test_an_integer_beyond_any_float_is_a_named_problem(field: str) -> None:
    values = {"speed_over_kmh": "90", "cooldown_s": "600"} | {field: HUGE}
    text = (
        "version: 1\neffective_from: 2026-01-01T00:00:00Z\nrules:\n"
        f"  - {{id: a, kind: instant_over, speed_over_kmh: {values['speed_over_kmh']}, "
        f"cooldown_s: {values['cooldown_s']}}}\n"
    )
    with pytest.raises(CatalogueError) as caught:
        parse_version(text, "big.yaml")
    assert {(p.rule, p.field) for p in caught.value.problems} == {("a", field)}


def test_a_coordinate_beyond_any_float_is_a_zones_error() -> None:
    ring = [[int(HUGE), 0], [1, 0], [1, 1], [0, 0]]
    feature = {
        "type": "Feature",
        "properties": {"name": "z"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    with pytest.raises(ZonesError, match="finite"):
        Zones.from_geojson({"type": "FeatureCollection", "features": [feature]})


def test_a_read_that_raised_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store remembers what it read only once the read is done: a failure is not
    mistaken for "nothing changed" at the next refresh."""
    (tmp_path / "0001.yaml").write_text(
        "version: 1\neffective_from: 2026-01-01T00:00:00Z\nrules: []\n"
    )
    store = CatalogueStore(tmp_path)

    def failing() -> list:
        raise OSError("the disk went away")

    monkeypatch.setattr(store, "_read", failing)
    with pytest.raises(OSError, match="went away"):
        store.refresh()
    monkeypatch.undo()
    assert store.refresh() == []
    assert [v.version for v in store.current().versions] == [1]


@pytest.mark.parametrize("field", ["within_s", "max_gap_s"])
def test_a_duration_that_rounds_to_nothing_is_refused(field: str) -> None:
    kind = (
        "deceleration, drop_kmh: 20"
        if field == "within_s"
        else "duration_over, speed_over_kmh: 90, for_s: 10"
    )
    text = (
        "version: 1\neffective_from: 2026-01-01T00:00:00Z\nrules:\n"
        f"  - {{id: a, kind: {kind}, {field}: 1.0e-320}}\n"
    )
    with pytest.raises(CatalogueError) as caught:
        parse_version(text, "tiny.yaml")
    assert ("a", field) in {(p.rule, p.field) for p in caught.value.problems}


def test_the_backfill_keeps_the_first_copy_of_a_duplicate_whatever_the_catalogue(
    tmp_path: Path,
) -> None:
    """Two rows with one event id and different speeds: the first stays, as in the stream,
    with or without a rule that needs every reading (which once changed the order of
    deduplication and filtering)."""
    import polars as pl

    from connectors.parquet_input import ParquetReadingsSource, TruckReadings
    from domain.catalogue import Prefilter

    frame = pl.DataFrame(
        {
            "event_id": ["e1", "e1"],
            "truck_id": ["T1", "T1"],
            "ts": pl.Series([T, T], dtype=pl.Datetime("ms", "UTC")),
            "speed_kmh": [50.0, 150.0],
            "lat": pl.Series([None, None], dtype=pl.Float64),
            "lon": pl.Series([None, None], dtype=pl.Float64),
        }
    )
    path = tmp_path / "dupes.parquet"
    frame.write_parquet(path)
    for keep in (Prefilter(90.0), Prefilter(math.inf, successors_over_kmh=20.0)):
        source = ParquetReadingsSource([path], keep, buckets=1)
        part = source.build_part("step", "0", None)
        speeds: list[float] = []
        while True:
            try:
                batch = part.next_batch()
            except StopIteration:
                break
            items = [item for item in batch if isinstance(item, TruckReadings)]
            speeds += [r.speed_kmh for item in items for r in item.readings]
        # The first copy (50 km/h) stays, kept or dropped as slow by each prefilter; the
        # 150 km/h copy never comes through (filtered first, it once did).
        expected = [50.0] if keep.successors_over_kmh is not None else []
        assert speeds == expected, (keep, speeds)
