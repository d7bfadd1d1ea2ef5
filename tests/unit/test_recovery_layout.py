"""Recovery partitions on per-pod volumes: init containers and rebalancing on scale-down."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from fleetwatch.recovery_layout import (
    LayoutError,
    home_partitions,
    init_volume,
    main,
    ordinal_of,
    partitions_in,
    plan_rebalance,
    rebalance,
)


def volumes(tmp_path: Path, count: int) -> list[Path]:
    paths = [tmp_path / f"recovery-{i}" for i in range(count)]
    for path in paths:
        path.mkdir()
    return paths


def held(volume: Path) -> list[int]:
    return sorted(p.index for p in partitions_in(volume))


def test_home_partitions_spread_round_robin() -> None:
    assert [home_partitions(k, 3, 6) for k in range(3)] == [[0, 3], [1, 4], [2, 5]]
    assert home_partitions(3, 3, 6) == []  # an ordinal beyond the replicas holds nothing


def test_ordinal_comes_from_the_pod_name() -> None:
    assert ordinal_of("fleetwatch-alerts-12", "fleetwatch-alerts") == 12
    with pytest.raises(LayoutError, match="not a member"):
        ordinal_of("fleetwatch-archive-0", "fleetwatch-alerts")


def test_init_prepares_each_volume_once_and_together_they_hold_every_partition(
    tmp_path: Path,
) -> None:
    pods = volumes(tmp_path, 3)
    for ordinal, volume in enumerate(pods):
        init_volume(volume, ordinal, initial_replicas=3, partitions=6)
    assert [held(v) for v in pods] == [[0, 3], [1, 4], [2, 5]]
    # Restarted pods (init containers run again) change nothing, even if their layout
    # would now differ: the marker wins.
    for ordinal, volume in enumerate(pods):
        assert "already prepared" in init_volume(volume, ordinal, 2, 6)
    assert [held(v) for v in pods] == [[0, 3], [1, 4], [2, 5]]


def test_a_pod_added_by_scaling_up_starts_empty(tmp_path: Path) -> None:
    (volume,) = volumes(tmp_path, 1)
    init_volume(volume, ordinal=3, initial_replicas=3, partitions=6)
    assert held(volume) == []


def test_init_refuses_a_changed_partition_count(tmp_path: Path) -> None:
    (volume,) = volumes(tmp_path, 1)
    init_volume(volume, 0, 1, 4)
    with pytest.raises(LayoutError, match="cannot change"):
        init_volume(volume, 0, 1, 8)


def test_init_finishes_after_a_crash_midway(tmp_path: Path) -> None:
    (volume,) = volumes(tmp_path, 1)
    init_volume(volume, 0, 2, 6)
    (volume / "fleetwatch-recovery.json").unlink()  # as if it died before marking
    (volume / "part-2.sqlite3").unlink()
    init_volume(volume, 0, 2, 6)
    assert held(volume) == [0, 2, 4]


def test_rebalance_moves_the_removed_pods_partitions(tmp_path: Path) -> None:
    pods = volumes(tmp_path, 3)
    for ordinal, volume in enumerate(pods):
        init_volume(volume, ordinal, 3, 6)
    _write_state(pods[2] / "part-5.sqlite3", "truck T1")
    moves = rebalance(pods, replicas=2)
    assert [(m.index, m.target.parent) for m in moves] == [(2, pods[0]), (5, pods[1])]
    assert [held(v) for v in pods] == [[0, 2, 3], [1, 4, 5], []]  # nothing else moved
    assert _read_state(pods[1] / "part-5.sqlite3") == "truck T1"
    assert plan_rebalance(pods, 2).moves == []  # a rerun has nothing left to do


def test_rebalance_clears_an_identical_copy_left_by_an_interrupted_move(
    tmp_path: Path,
) -> None:
    pods = volumes(tmp_path, 2)
    for ordinal, volume in enumerate(pods):
        init_volume(volume, ordinal, 2, 4)
    shutil.copy(pods[1] / "part-1.sqlite3", pods[0] / "part-1.sqlite3")
    rebalance(pods, 1)
    assert [held(v) for v in pods] == [[0, 1, 2, 3], []]


def test_rebalance_refuses_missing_or_conflicting_partitions(tmp_path: Path) -> None:
    pods = volumes(tmp_path, 2)
    for ordinal, volume in enumerate(pods):
        init_volume(volume, ordinal, 2, 4)
    shutil.copy(pods[1] / "part-1.sqlite3", pods[0] / "part-1.sqlite3")
    _write_state(pods[0] / "part-1.sqlite3", "diverged")
    with pytest.raises(LayoutError, match="held twice with different contents"):
        plan_rebalance(pods, 1)
    (pods[0] / "part-1.sqlite3").unlink()
    (pods[1] / "part-3.sqlite3").unlink()
    with pytest.raises(LayoutError, match=r"partitions \[3\] of 4 are on none"):
        plan_rebalance(pods, 1)


def test_the_command_line_reports_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = volumes(tmp_path, 2)
    assert main(["rebalance", "--replicas", "1", *map(str, pods)]) == 2
    assert "no recovery partitions" in capsys.readouterr().err
    args = ["init", "--dir", str(pods[0]), "--partitions", "2", "--initial-replicas", "1"]
    assert main([*args, "--ordinal", "0"]) == 0
    assert held(pods[0]) == [0, 1]


def _write_state(path: Path, value: str) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, 1, ?)",
            ("rules", "T1", value.encode()),
        )
    connection.close()


def _read_state(path: Path) -> str:
    connection = sqlite3.connect(path)
    (value,) = connection.execute("SELECT ser_change FROM snaps").fetchone()
    connection.close()
    return bytes(value).decode()
