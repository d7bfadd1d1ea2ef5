"""CatalogueStore (connectors/catalogue.py): the FLEET_RULES directory reloaded while flows
run (CONTRACT.md section 9: "New or changed files are used within 60 s while flows run. An
invalid file is refused with an error that names the file, the rule and the field; the
versions in force stay in force").

Real files in ``tmp_path``, no mocks: each test writes a directory, calls ``refresh()`` (the
refresh thread's body) and looks at ``current()``, the problems returned, the log lines and
the Prometheus counters."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from connectors.catalogue import CatalogueStore
from domain.catalogue import Catalogue, CatalogueError, Problem, RuleState
from domain.readings import Reading
from domain.timestamps import parse_rfc3339_ms

JAN = "2026-01-01T00:00:00Z"
FEB = "2026-02-01T00:00:00Z"
MAR = "2026-03-01T00:00:00Z"
APR = "2026-04-01T00:00:00Z"


# --- writing a directory ------------------------------------------------------------------


def instant(rule_id: str, speed: float | str, **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "kind": "instant_over", "speed_over_kmh": speed, **extra}


def document(version: int, effective_from: str, *rules: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"version": version, "effective_from": effective_from, "rules": list(rules)},
        sort_keys=False,
    )


def write(path: Path, text: str) -> None:
    """Replace ``path`` whole (write beside it, rename into place), as editors, ``kubectl cp``
    and config tools do: a new inode, so the change is seen whatever the clock's granularity."""
    spare = path.with_name(f".{path.name}.tmp")
    spare.write_text(text)
    os.replace(spare, path)


def write_version(
    directory: Path, name: str, version: int, effective_from: str, *rules: dict[str, Any]
) -> Path:
    path = directory / name
    write(path, document(version, effective_from, *rules))
    return path


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    return directory


# --- reading the catalogue back -----------------------------------------------------------


def ms(text: str) -> int:
    return parse_rfc3339_ms(text)


def versions(catalogue: Catalogue) -> list[tuple[int, str]]:
    """(version, file) in event-time order."""
    return [(v.version, v.source) for v in catalogue.versions]


def rules_at(catalogue: Catalogue, at: str) -> dict[str, float]:
    """The rules judging a reading at ``at``: id -> the rule's speed."""
    in_force = catalogue.at(ms(at) + 1)
    assert in_force is not None, f"no version in force at {at}"
    return {rule.id: rule.definition.kind.threshold_kmh for rule, _, _ in in_force.judged}


def version_at(catalogue: Catalogue, at: str) -> int:
    in_force = catalogue.at(ms(at) + 1)
    assert in_force is not None
    return in_force.version.version


def where(problems: list[Problem]) -> set[tuple[str, str | None, str | None]]:
    return {(p.file, p.rule, p.field) for p in problems}


def refused_lines(logs: Iterable[Mapping[str, Any]]) -> set[tuple[str, str | None, str | None]]:
    return {
        (str(e["file"]), e["rule"], e["field"])
        for e in logs
        if e["event"] == "rule_file_refused" and e["log_level"] == "error"
    }


# --- the counters (process-wide: every test compares before and after) ---------------------


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class Counters:
    """fleetwatch_rule_reloads_total{outcome} and fleetwatch_rule_files_refused_total, as
    increases since the last ``take()``."""

    def __init__(self) -> None:
        self._base = self._now()

    @staticmethod
    def _now() -> dict[str, float]:
        now = {
            outcome: sample("fleetwatch_rule_reloads_total", {"outcome": outcome})
            for outcome in ("ok", "unchanged", "refused")
        }
        now["files_refused"] = sample("fleetwatch_rule_files_refused_total")
        return now

    def take(self) -> dict[str, float]:
        now = self._now()
        delta = {key: now[key] - self._base[key] for key in now}
        self._base = now
        return {key: value for key, value in delta.items() if value}


@pytest.fixture
def counters() -> Counters:
    return Counters()


def loaded(directory: Path, zones: Path | None = None) -> CatalogueStore:
    """A store after its first read, which found nothing wrong."""
    store = CatalogueStore(directory, zones, refresh_s=60)
    assert store.refresh() == []
    return store


# --- the tests ----------------------------------------------------------------------------


def test_initial_load(rules_dir: Path, counters: Counters) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yml", 2, FEB, instant("fast", 120), instant("faster", 150))
    with capture_logs() as logs:
        store = loaded(rules_dir)
    catalogue = store.current()
    assert versions(catalogue) == [(1, "v1.yaml"), (2, "v2.yml")]
    assert rules_at(catalogue, JAN) == {"fast": 130}
    assert rules_at(catalogue, FEB) == {"fast": 120, "faster": 150}
    assert catalogue.at(ms(JAN) - 1) is None, "before the first version no rule applies"
    assert [e["event"] for e in logs] == ["rules_loaded"]
    assert counters.take() == {"ok": 1}


def test_a_new_version_file_is_used(rules_dir: Path, counters: Counters) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = loaded(rules_dir)
    counters.take()
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100), instant("new", 150))
    assert store.refresh() == []
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2.yaml")]
    assert rules_at(store.current(), FEB) == {"fast": 100, "new": 150}
    assert rules_at(store.current(), JAN) == {"fast": 130}, "earlier readings keep version 1"
    assert counters.take() == {"ok": 1}


def test_a_changed_file_is_used(rules_dir: Path, counters: Counters) -> None:
    path = write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = loaded(rules_dir)
    counters.take()
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 100))
    assert store.refresh() == []
    assert rules_at(store.current(), JAN) == {"fast": 100}
    # Edited in place (same inode), a different size: seen too.
    path.write_text(document(1, JAN, instant("fast", 99.5, severity="critical")))
    assert store.refresh() == []
    [rule] = store.current().versions[0].rules
    assert (rule.definition.kind.threshold_kmh, rule.critical) == (99.5, True)
    assert counters.take() == {"ok": 2}


def test_a_broken_change_keeps_the_earlier_content(rules_dir: Path, counters: Counters) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 120), instant("slow", 90))
    store = loaded(rules_dir)
    before = store.current()
    counters.take()
    # A typo in one field of one rule (speed_over_kph): the whole file is refused.
    broken = instant("slow", 90)
    broken["speed_over_kph"] = broken.pop("speed_over_kmh")
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100), broken)
    with capture_logs() as logs:
        problems = store.refresh()
    assert ("v2.yaml", "slow", "speed_over_kph") in where(problems)
    assert ("v2.yaml", "slow", "speed_over_kph") in refused_lines(logs)
    assert all(p.file == "v2.yaml" for p in problems)
    assert rules_at(store.current(), FEB) == {"fast": 120, "slow": 90}, "not fast: 100"
    assert store.current().same_as(before)
    assert counters.take() == {"refused": 1, "files_refused": 1}
    # A wrong value (not just a wrong name), and then not YAML at all: same outcome.
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100), instant("slow", 401))
    assert where(store.refresh()) == {("v2.yaml", "slow", "speed_over_kmh")}
    write(rules_dir / "v2.yaml", "version: 2\nrules: [\n")
    [problem] = store.refresh()
    assert (problem.file, problem.rule) == ("v2.yaml", None)
    assert problem.message.startswith("not YAML")
    assert rules_at(store.current(), FEB) == {"fast": 120, "slow": 90}
    # Fixed: used.
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100), instant("slow", 95))
    assert store.refresh() == []
    assert rules_at(store.current(), FEB) == {"fast": 100, "slow": 95}


def test_a_broken_new_file_is_refused_and_the_rest_used(
    rules_dir: Path, counters: Counters
) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = loaded(rules_dir)
    counters.take()
    write_version(rules_dir, "v2.yaml", 2, FEB, {"id": "odd", "kind": "teleport"})
    write_version(rules_dir, "v3.yaml", 3, MAR, instant("fast", 110))
    with capture_logs() as logs:
        problems = store.refresh()
    assert where(problems) == {("v2.yaml", "odd", "kind")}
    assert refused_lines(logs) == {("v2.yaml", "odd", "kind")}
    assert versions(store.current()) == [(1, "v1.yaml"), (3, "v3.yaml")]
    assert version_at(store.current(), FEB) == 1
    assert counters.take() == {"ok": 1, "refused": 1, "files_refused": 1}


def test_a_removed_files_version_is_gone(rules_dir: Path) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100))
    store = loaded(rules_dir)
    (rules_dir / "v2.yaml").unlink()
    assert store.refresh() == []
    assert versions(store.current()) == [(1, "v1.yaml")]
    assert rules_at(store.current(), MAR) == {"fast": 130}


@pytest.mark.parametrize(
    ("clash", "newcomer"),
    [
        ("version", (2, MAR)),  # the same number, effective later than the one in force
        ("version", (2, "2026-01-15T00:00:00Z")),  # ... or earlier
        ("effective_from", (3, FEB)),
    ],
)
@pytest.mark.parametrize("name", ["a_first_by_name.yaml", "z_last_by_name.yaml"])
def test_a_clash_keeps_the_version_in_force(
    rules_dir: Path, counters: Counters, clash: str, newcomer: tuple[int, str], name: str
) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 120))
    store = loaded(rules_dir)
    before = store.current()
    counters.take()
    write_version(rules_dir, name, *newcomer, instant("fast", 50))
    with capture_logs() as logs:
        problems = store.refresh()
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2.yaml")]
    assert rules_at(store.current(), FEB) == {"fast": 120}
    assert store.current().same_as(before)
    # The problem names the file refused, not the one that stays.
    assert where(problems) == {(name, None, clash)}
    assert refused_lines(logs) == {(name, None, clash)}
    assert counters.take() == {"refused": 1, "files_refused": 1}
    # Another file changing later does not let the newcomer in either.
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 131))
    assert where(store.refresh()) == {(name, None, clash)}
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2.yaml")]
    # The file in force removed: the newcomer is used.
    (rules_dir / "v2.yaml").unlink()
    assert store.refresh() == []
    assert versions(store.current()) == [(1, "v1.yaml"), (newcomer[0], name)]


def test_clashing_newcomers_first_by_name_wins(rules_dir: Path) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = loaded(rules_dir)
    write_version(rules_dir, "v2-b.yaml", 2, MAR, instant("fast", 90))
    write_version(rules_dir, "v2-a.yaml", 2, FEB, instant("fast", 100))
    write_version(rules_dir, "v3-a.yaml", 3, APR, instant("fast", 80))
    write_version(rules_dir, "v3-b.yaml", 4, APR, instant("fast", 70))
    problems = store.refresh()
    assert where(problems) == {
        ("v2-b.yaml", None, "version"),
        ("v3-b.yaml", None, "effective_from"),
    }
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2-a.yaml"), (3, "v3-a.yaml")]


def test_a_changed_file_that_now_clashes_keeps_its_earlier_content(rules_dir: Path) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 120))
    store = loaded(rules_dir)
    write_version(rules_dir, "v2.yaml", 1, MAR, instant("fast", 100))  # version 1 is taken
    assert where(store.refresh()) == {("v2.yaml", None, "version")}
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2.yaml")]
    assert rules_at(store.current(), FEB) == {"fast": 120}


def test_a_file_in_force_that_changes_beats_a_new_file_it_clashes_with(rules_dir: Path) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 120))
    store = loaded(rules_dir)
    # In one reload: v2.yaml changed (still version 2), and a.yaml, first by name, also 2.
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 110))
    write_version(rules_dir, "a.yaml", 2, MAR, instant("fast", 50))
    assert where(store.refresh()) == {("a.yaml", None, "version")}
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2.yaml")]
    assert rules_at(store.current(), FEB) == {"fast": 110}


def test_an_empty_directory_keeps_the_catalogue(rules_dir: Path, counters: Counters) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = loaded(rules_dir)
    before = store.current()
    counters.take()
    (rules_dir / "v1.yaml").unlink()
    (rules_dir / "README.txt").write_text("not a version")
    with capture_logs() as logs:
        problems = store.refresh()
    assert where(problems) == {(str(rules_dir), None, None)}
    assert [e["keeping"] for e in logs] == ["the versions in force"]
    assert store.current() is before
    assert counters.take() == {"refused": 1, "files_refused": 1}
    assert store.refresh() == [], "reported once, not at every refresh"
    # The directory itself gone (a volume unmounted): kept as well.
    (rules_dir / "README.txt").unlink()
    rules_dir.rmdir()
    assert where(store.refresh()) == {(str(rules_dir), None, None)}
    assert store.current() is before
    # Files back: used.
    rules_dir.mkdir()
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 125))
    assert store.refresh() == []
    assert rules_at(store.current(), JAN) == {"fast": 125}


def test_dot_files_and_other_names_are_not_versions(rules_dir: Path) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, ".v2.yaml", 2, FEB, instant("fast", 100))  # an editor's copy
    write(rules_dir / ".broken.yaml", "{{{")
    write_version(rules_dir, "v3.yaml.bak", 3, MAR, instant("fast", 100))
    write_version(rules_dir, "v4.json", 4, APR, instant("fast", 100))
    (rules_dir / "nested.yaml").mkdir()  # a directory with a version's name
    write_version(rules_dir / "nested.yaml", "v5.yaml", 5, APR, instant("fast", 100))
    store = loaded(rules_dir)
    assert versions(store.current()) == [(1, "v1.yaml")]


def configmap_revision(directory: Path, stamp: str, files: dict[str, str]) -> Path:
    """A kubelet revision: a hidden timestamped directory holding the data."""
    revision = directory / f"..{stamp}"
    revision.mkdir()
    for name, text in files.items():
        (revision / name).write_text(text)
    return revision


def swap_data_link(directory: Path, revision: Path) -> None:
    """What kubelet does: a new ``..data_tmp`` link renamed over ``..data``, atomically."""
    spare = directory / "..data_tmp"
    spare.symlink_to(revision.name)
    os.replace(spare, directory / "..data")


def test_kubernetes_configmap_layout(rules_dir: Path, counters: Counters) -> None:
    first = configmap_revision(
        rules_dir,
        "2026_01_01_00_00_00.000000001",
        {"v1.yaml": document(1, JAN, instant("fast", 130))},
    )
    swap_data_link(rules_dir, first)
    (rules_dir / "v1.yaml").symlink_to("..data/v1.yaml")
    store = loaded(rules_dir)
    assert versions(store.current()) == [(1, "v1.yaml")], "read once, by its visible name"
    counters.take()

    # A new revision: v1.yaml changed and a new key v2.yaml. Kubelet swaps ..data, adds the
    # new key's visible link, then removes the old revision.
    second = configmap_revision(
        rules_dir,
        "2026_01_02_00_00_00.000000002",
        {
            "v1.yaml": document(1, JAN, instant("fast", 100)),
            "v2.yaml": document(2, FEB, instant("fast", 90), instant("new", 150)),
        },
    )
    swap_data_link(rules_dir, second)
    assert store.refresh() == []  # the swap alone: the changed v1.yaml
    assert versions(store.current()) == [(1, "v1.yaml")]
    assert rules_at(store.current(), JAN) == {"fast": 100}
    (rules_dir / "v2.yaml").symlink_to("..data/v2.yaml")
    for path in first.iterdir():
        path.unlink()
    first.rmdir()
    assert store.refresh() == []
    assert versions(store.current()) == [(1, "v1.yaml"), (2, "v2.yaml")]
    assert rules_at(store.current(), FEB) == {"fast": 90, "new": 150}

    # A revision without v2.yaml: after the swap its visible link dangles, then goes.
    third = configmap_revision(
        rules_dir,
        "2026_01_03_00_00_00.000000003",
        {"v1.yaml": document(1, JAN, instant("fast", 100))},
    )
    swap_data_link(rules_dir, third)
    assert store.refresh() == []
    assert versions(store.current()) == [(1, "v1.yaml")]
    (rules_dir / "v2.yaml").unlink()
    assert store.refresh() == []
    assert versions(store.current()) == [(1, "v1.yaml")]

    # A broken revision: refused by its visible name; what is in force stays.
    fourth = configmap_revision(
        rules_dir, "2026_01_04_00_00_00.000000004", {"v1.yaml": "version: one\n"}
    )
    swap_data_link(rules_dir, fourth)
    problems = store.refresh()
    assert {p.file for p in problems} == {"v1.yaml"}
    assert ("v1.yaml", None, "version") in where(problems)
    assert rules_at(store.current(), JAN) == {"fast": 100}
    # ok: the swap, the new link, the swap without v2.yaml (its dangling link is no file).
    assert counters.take() == {"ok": 3, "refused": 1, "files_refused": 1}


ZONES_RULE = {"id": "depot", "kind": "zone_over", "zone": "depot", "speed_over_kmh": 30}


def square(name: str, lat: float, lon: float, half: float = 0.01) -> dict[str, Any]:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return {
        "type": "Feature",
        "properties": {"name": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def write_zones(path: Path, *features: dict[str, Any]) -> None:
    write(path, json.dumps({"type": "FeatureCollection", "features": list(features)}))


def fires_at(store: CatalogueStore, lat: float, lon: float) -> bool:
    in_force = store.current().at(ms(JAN) + 1)
    assert in_force is not None
    [(rule, lineage, _)] = in_force.judged
    reading = Reading("e1", "T00001", ms(JAN) + 1, 50.0, lat, lon)
    return rule.judge(RuleState(lineage), reading, in_force.version.version) is not None


def test_a_zones_file_change(tmp_path: Path, rules_dir: Path) -> None:
    zones = tmp_path / "zones.geojson"
    write_zones(zones, square("depot", 54.30, 10.10))
    write_version(rules_dir, "v1.yaml", 1, JAN, ZONES_RULE)
    store = loaded(rules_dir, zones)
    assert fires_at(store, 54.30, 10.10)
    assert not fires_at(store, 53.55, 9.99)

    # The depot moved: the zone_over rule uses the new polygon.
    write_zones(zones, square("depot", 53.55, 9.99))
    assert store.refresh() == []
    assert fires_at(store, 53.55, 9.99)
    assert not fires_at(store, 54.30, 10.10)

    # A broken zones file: refused, naming it; the zones in use stay.
    write(zones, '{"type": "FeatureCollection", "features": [')
    problems = store.refresh()
    assert {p.file for p in problems} == {str(zones)}
    assert fires_at(store, 53.55, 9.99)

    # Zones without the depot: the file naming it is refused (rule and field named) and its
    # content in force stays.
    write_zones(zones, square("harbour", 54.32, 10.14))
    problems = store.refresh()
    assert where(problems) == {("v1.yaml", "depot", "zone")}
    assert fires_at(store, 53.55, 9.99)


def test_an_unchanged_directory_does_no_work(rules_dir: Path, counters: Counters) -> None:
    path = write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, {"id": "odd", "kind": "teleport"})
    store = CatalogueStore(rules_dir, None, refresh_s=60)
    assert where(store.refresh()) == {("v2.yaml", "odd", "kind")}
    catalogue = store.current()
    counters.take()
    with capture_logs() as logs:
        for _ in range(3):
            assert store.refresh() == []  # the broken file is not reported again
    assert store.current() is catalogue
    assert logs == []
    assert counters.take() == {}
    # Touched, the same content: read again, nothing changed, nothing logged as loaded.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    (rules_dir / "v2.yaml").unlink()
    with capture_logs() as logs:
        assert store.refresh() == []
    assert [e["event"] for e in logs] == []
    assert store.current().same_as(catalogue)
    assert counters.take() == {"unchanged": 1}


def test_start_needs_a_valid_version(tmp_path: Path, rules_dir: Path) -> None:
    with pytest.raises(CatalogueError) as empty:
        CatalogueStore(rules_dir).start()
    assert {p.file for p in empty.value.problems} == {str(rules_dir)}
    with pytest.raises(CatalogueError) as missing:
        CatalogueStore(tmp_path / "nowhere").start()
    assert {p.file for p in missing.value.problems} == {str(tmp_path / "nowhere")}
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", -1))
    write_version(rules_dir, "v2.yaml", 2, JAN, {"id": "Bad-Id", "kind": "instant_over"})
    with pytest.raises(CatalogueError) as broken:
        CatalogueStore(rules_dir).start()
    assert where(list(broken.value.problems)) == {
        ("v1.yaml", "fast", "speed_over_kmh"),
        ("v2.yaml", "#1", "id"),
    }
    assert "v1.yaml: rule 'fast': field 'speed_over_kmh'" in str(broken.value)


@pytest.fixture
def started(rules_dir: Path) -> Iterator[CatalogueStore]:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = CatalogueStore(rules_dir, None, refresh_s=0.05).start()
    yield store
    store.stop()


def test_the_refresh_thread_picks_up_changes(rules_dir: Path, started: CatalogueStore) -> None:
    """start(): loaded at once, then kept fresh without anyone calling refresh()."""
    assert versions(started.current()) == [(1, "v1.yaml")]
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100))
    deadline = time.monotonic() + 5
    while len(started.current().versions) < 2:
        assert time.monotonic() < deadline, "the new file was never used"
        time.sleep(0.02)
    assert rules_at(started.current(), FEB) == {"fast": 100}


def test_metrics_over_a_sequence_of_reloads(rules_dir: Path, counters: Counters) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    store = loaded(rules_dir)
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", 100))
    store.refresh()
    assert counters.take() == {"ok": 2}
    # Two broken files in one reload: two files refused, one refused reload.
    write_version(rules_dir, "v3.yaml", 3, MAR, instant("fast", "x"))
    write_version(rules_dir, "v4.yaml", 4, APR, instant("fast", 100), instant("fast", 90))
    assert where(store.refresh()) == {
        ("v3.yaml", "fast", "speed_over_kmh"),
        ("v4.yaml", "fast", "id"),
    }
    assert counters.take() == {"refused": 1, "files_refused": 2}
    # Both fixed: one ok reload.
    write_version(rules_dir, "v3.yaml", 3, MAR, instant("fast", 90))
    write_version(rules_dir, "v4.yaml", 4, APR, instant("fast", 80))
    store.refresh()
    assert counters.take() == {"ok": 1}
    assert REGISTRY.get_sample_value("fleetwatch_rule_catalogue_latest_version") == 4


def test_a_file_still_broken_is_counted_once(rules_dir: Path, counters: Counters) -> None:
    write_version(rules_dir, "v1.yaml", 1, JAN, instant("fast", 130))
    write_version(rules_dir, "v2.yaml", 2, FEB, instant("fast", "x"))
    store = CatalogueStore(rules_dir, None, refresh_s=60)
    store.refresh()
    assert counters.take() == {"ok": 1, "refused": 1, "files_refused": 1}
    write_version(rules_dir, "v3.yaml", 3, MAR, instant("fast", 100))  # v2.yaml unchanged
    store.refresh()
    assert counters.take() == {"ok": 1}
