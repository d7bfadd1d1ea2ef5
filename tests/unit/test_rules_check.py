"""``python -m fleetwatch.rules check``: a valid directory prints its versions and ``ok``
(exit 0); an invalid one lists every problem, file, rule and field, on stderr (exit 1),
clashes between files included. Real files in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from domain.catalogue import CatalogueError
from fleetwatch.rules import EXIT_INVALID, EXIT_OK, EXIT_USAGE, check, main
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

V1 = """\
version: 1
effective_from: 2026-01-01T00:00:00Z
rules:
  - id: instant_overspeed
    kind: instant_over
    speed_over_kmh: 130
    severity: critical
  - id: sustained_speeding
    kind: count_over
    speed_over_kmh: 90
    count: 5
    within_s: 600
"""
V2 = """\
version: 2
effective_from: 2026-12-01T00:00:00+01:00
rules:
  - id: yard_slow
    kind: zone_over
    zone: Yard
    speed_over_kmh: 20
  - id: harsh_braking
    kind: deceleration
    drop_kmh: 30
    within_s: 3
"""
ZONES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "Yard"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[24.9, 60.1], [25.0, 60.1], [25.0, 60.2], [24.9, 60.1]]],
            },
        }
    ],
}


def catalogue(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def zones_file(tmp_path: Path) -> Path:
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps(ZONES))
    return path


def check_command(
    args: list[str], environ: dict[str, str] | None = None
) -> tuple[int, list[str], list[str]]:
    out: list[str] = []
    err: list[str] = []
    code = main(
        ["check", *args],
        settings_from_env=lambda: Settings.from_env(environ or {}),
        out=out.append,
        err=err.append,
    )
    return code, out, err


def test_a_valid_directory_prints_each_version_and_ok(tmp_path: Path) -> None:
    rules = catalogue(tmp_path / "rules", **{"v1.yaml": V1, "v2.yml": V2})
    code, out, err = check_command([str(rules), "--zones", str(zones_file(tmp_path))])
    assert code == EXIT_OK
    assert err == []
    assert out == [
        "version 1 from 2026-01-01T00:00:00.000Z (v1.yaml): "
        "instant_overspeed (instant_over), sustained_speeding (count_over)",
        "version 2 from 2026-11-30T23:00:00.000Z (v2.yml): "
        "yard_slow (zone_over), harsh_braking (deceleration)",
        "ok",
    ]


def test_the_zones_default_to_fleet_zones(tmp_path: Path) -> None:
    rules = catalogue(tmp_path / "rules", **{"v2.yaml": V2})
    code, _, err = check_command([str(rules)], {"FLEET_ZONES": str(zones_file(tmp_path))})
    assert (code, err) == (EXIT_OK, [])
    code, _, err = check_command([str(rules)])
    assert code == EXIT_INVALID
    assert err[0].startswith("v2.yaml: rule 'yard_slow': field 'zone': no zone named 'Yard'")


def test_every_problem_is_named_by_file_rule_and_field(tmp_path: Path) -> None:
    broken = V1.replace("count: 5", "count: many").replace("severity: critical", "severity: red")
    rules = catalogue(
        tmp_path / "rules",
        **{"a.yaml": broken, "b.yaml": V2.replace("drop_kmh: 30", "drop_kmh: 30\n    colour: red")},
    )
    code, out, err = check_command([str(rules), "--zones", str(zones_file(tmp_path))])
    assert code == EXIT_INVALID
    assert out == []
    assert [line.split(": ", 3)[:3] for line in err[:-1]] == [
        ["a.yaml", "rule 'instant_overspeed'", "field 'severity'"],
        ["a.yaml", "rule 'sustained_speeding'", "field 'count'"],
        ["b.yaml", "rule 'harsh_braking'", "field 'colour'"],
    ]
    assert err[-1] == f"rules check: {rules}: 3 problems"


def test_files_that_clash_are_refused(tmp_path: Path) -> None:
    rules = catalogue(
        tmp_path / "rules",
        **{
            "a.yaml": V1,
            "b.yaml": V1.replace("version: 1", "version: 3"),  # the same effective_from
            "c.yaml": V1.replace("2026-01-01", "2026-06-01"),  # the same version
        },
    )
    code, _, err = check_command([str(rules)])
    assert code == EXIT_INVALID
    assert "b.yaml: field 'effective_from': the same as a.yaml's" in err
    assert "c.yaml: field 'version': also in a.yaml" in err


def test_clashes_are_listed_with_the_files_own_problems(tmp_path: Path) -> None:
    """The strict load stops at the files' own problems; the check goes on to the clashes
    among the valid files, so one run lists everything to fix."""
    rules = catalogue(
        tmp_path / "rules",
        **{
            "a.yaml": V1,
            "b.yaml": V1.replace("2026-01-01", "2026-06-01"),  # version 1 again
            "c.yaml": V1.replace("version: 1", "version: 4").replace("count: 5", "count: 0"),
        },
    )
    with pytest.raises(CatalogueError, match="count") as raised:
        check(rules)
    problems = [str(p) for p in raised.value.problems]
    assert any(p.startswith("c.yaml: rule 'sustained_speeding': field 'count'") for p in problems)
    assert "b.yaml: field 'version': also in a.yaml" in problems
    assert len(problems) == len(set(problems)) == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda d: d.mkdir(), "no *.yaml catalogue files", id="empty"),
        pytest.param(lambda d: None, "", id="missing"),
    ],
)
def test_an_empty_or_missing_directory_is_invalid(
    tmp_path: Path, setup: Callable[[Path], None], message: str
) -> None:
    directory = tmp_path / "rules"
    setup(directory)
    code, out, err = check_command([str(directory)])
    assert code == EXIT_INVALID
    assert out == []
    assert err[0].startswith(str(directory))
    assert message in err[0]


def test_a_bad_setting_is_a_usage_error(tmp_path: Path) -> None:
    rules = catalogue(tmp_path / "rules", **{"v1.yaml": V1})
    code, _, err = check_command([str(rules)], {"FLEET_THRESHOLD_KMH": "fast"})
    assert code == EXIT_USAGE
    assert "FLEET_THRESHOLD_KMH" in err[0]


def run_check(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "fleetwatch.rules", "check", *args],
        env={**base, **environ},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_command_as_operators_run_it(tmp_path: Path) -> None:
    good = catalogue(tmp_path / "good", **{"v1.yaml": V1, "v2.yaml": V2})
    done = run_check(str(good), FLEET_ZONES=str(zones_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"
    assert done.stdout.count("version ") == 2

    bad = catalogue(tmp_path / "bad", **{"v1.yaml": V1.replace("within_s: 600", "within_s: -5")})
    done = run_check(str(bad))
    assert done.returncode == 1
    assert done.stdout == ""
    assert "v1.yaml: rule 'sustained_speeding': field 'within_s':" in done.stderr

    clash = catalogue(tmp_path / "clash", **{"a.yaml": V1, "b.yaml": V1})
    done = run_check(str(clash))
    assert done.returncode == 1
    assert "b.yaml: field 'version': also in a.yaml" in done.stderr

    done = run_check()
    assert done.returncode == 2
    assert "DIR" in done.stderr
