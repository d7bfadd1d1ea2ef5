"""Drill (issue 15): the lake's disk fills up while dataflows.archive runs.

The lake lives on a small tmpfs the test mounts (root and CAP_SYS_ADMIN needed); the disk
is filled with a ballast file, leaving room for about half the lake. Where mounting is not
permitted, the archive process runs with a test-only ``sitecustomize`` (written to a
temporary directory, never shipped) whose ``os.fsync`` fails with ENOSPC once the lake
holds more than that room: ENOSPC at fsync is how a full disk shows itself on file systems
with delayed allocation, or on NFS. ``FLEET_TEST_DISK_FULL=inject`` forces that mode.

Expected: the archive stops with exit code 74 and one ``lake_write_failed`` line (no
traceback, no Rust panic), the lake then holds only complete rolls and no temporary file,
no reader ever meets a partial file, and once space is back a restart completes the lake
with each reading exactly once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from connectors.lake import Lake, LakeWriteError
from dataflows.archive import EXIT_LAKE_WRITE_FAILED
from domain.readings import Reading, encode_canonical
from domain.timestamps import to_epoch_ms
from tests.integration.flows import FlowProcess, Namespace, cluster_addresses, cluster_args, produce
from tests.integration.reports import report

# Readings 60 ms apart from ten minutes before midnight: the lake has two dates.
START = to_epoch_ms(datetime(2026, 11, 24, 23, 50, tzinfo=UTC))
DISK_BYTES = 4 * 1024 * 1024
READINGS = 120_000  # about 700 KB of lake in some 50 files
ROOM_BYTES = 320 * 1024  # what the ballast leaves free: about half the lake

# The test-only hook of the injected mode (module text of a ``sitecustomize``).
_ENOSPC_HOOK = """
import errno
import os

_lake = os.environ.get("FLEET_TEST_ENOSPC_DIR")
_room = int(os.environ.get("FLEET_TEST_ENOSPC_BYTES", "0"))


def _used(directory):
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


if _lake:
    _fsync = os.fsync

    def fsync(fd):
        number = fd if isinstance(fd, int) else fd.fileno()
        try:
            target = os.readlink(f"/proc/self/fd/{number}")
        except OSError:
            target = ""
        if target.startswith(_lake + os.sep) and _used(_lake) > _room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _fsync(fd)

    os.fsync = fsync
"""


def readings(count: int, trucks: int) -> list[Reading]:
    rng = random.Random(count)
    return [
        Reading(
            f"T{n % trucks:03d}-{n}",
            f"T{n % trucks:03d}",
            START + n * 60,
            round(rng.uniform(40, 140), 1),
            52.0,
            None,
        )
        for n in range(count)
    ]


def publish(namespace: Namespace, batch: list[Reading]) -> None:
    records: list[tuple[bytes | None, bytes]] = [
        (r.truck_id.encode(), encode_canonical(r)) for r in batch
    ]
    for start in range(0, len(records), 20_000):
        produce(
            namespace.brokers.kafka_brokers,
            namespace.topic("telemetry"),
            records[start : start + 20_000],
        )


def lake_frame(lake: Path) -> pl.DataFrame:
    return pl.read_parquet(lake / "**" / "*.parquet", hive_partitioning=True)


@dataclass
class SmallDisk:
    """The lake's file system: a mounted tmpfs, or ENOSPC injected into the archive."""

    root: Path
    kind: str  # "tmpfs" or "injected"
    hook_dir: Path | None = None
    room_bytes: int | None = None
    ballast: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ballast = self.root / "ballast"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def fill(self, room_bytes: int) -> None:
        """Leave only ``room_bytes`` free."""
        if self.kind == "tmpfs":
            stat = os.statvfs(self.root)
            with self.ballast.open("wb") as ballast:
                ballast.write(b"\0" * (stat.f_bavail * stat.f_frsize - room_bytes))
        else:
            self.room_bytes = room_bytes

    def free(self) -> None:
        """Space comes back: the ballast is deleted (or the injection ends)."""
        self.ballast.unlink(missing_ok=True)
        self.room_bytes = None

    def env(self) -> dict[str, str]:
        if self.room_bytes is None or self.hook_dir is None:
            return {}
        return {
            "PYTHONPATH": f"{self.hook_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "FLEET_TEST_ENOSPC_DIR": str(self.lake),
            "FLEET_TEST_ENOSPC_BYTES": str(self.room_bytes),
        }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    mounted = False
    if os.environ.get("FLEET_TEST_DISK_FULL") != "inject":
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "fleetwatch-drill", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        mounted = mount.returncode == 0
    try:
        if mounted:
            yield SmallDisk(root, "tmpfs")
        else:
            hook_dir = tmp_path / "enospc-hook"
            hook_dir.mkdir()
            (hook_dir / "sitecustomize.py").write_text(_ENOSPC_HOOK)
            yield SmallDisk(root, "injected", hook_dir)
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=False)


def complete_rolls_only(lake: Path) -> bool:
    """Every roll in the lake has all its parts."""
    found = Lake(lake).files()
    rolls = {f.roll for f in found}
    return all(
        {f.part for f in found if f.roll == roll} == set(range(1, roll[3] + 1)) for roll in rolls
    )


def lake_files(lake: Path) -> list[str]:
    return sorted(p.name for p in lake.rglob("*") if p.is_file())


def test_a_lake_write_refused_leaves_nothing_behind(small_disk: SmallDisk) -> None:
    """The writer on its own: a roll that does not fit raises ENOSPC and leaves no file."""
    if small_disk.kind != "tmpfs":
        pytest.skip("needs a real small file system (mount not permitted here)")
    lake = Lake(small_disk.lake)
    batch = readings(20_000, trucks=200)
    assert lake.write_roll(0, 0, 999, batch[:1_000])
    before = lake_files(small_disk.lake)
    small_disk.fill(8 * 1024)
    with pytest.raises(LakeWriteError) as refused:
        lake.write_roll(0, 1_000, 19_999, batch[1_000:])
    assert refused.value.errno == errno.ENOSPC
    assert refused.value.errno_name == "ENOSPC"
    assert str(small_disk.lake) in str(refused.value.filename)
    assert lake_files(small_disk.lake) == before, "nothing left behind"
    small_disk.free()
    assert len(lake.write_roll(0, 1_000, 19_999, batch[1_000:])) == 2, "two dates, two parts"
    assert lake.resume_offset(0) == 20_000


def run_archive(
    namespace: Namespace, disk: SmallDisk, logs: Path, args: list[str] | None = None
) -> FlowProcess:
    env = namespace.env(
        FLEET_LAKE_DIR=str(disk.lake),
        FLEET_KAFKA_TAIL="false",
        FLEET_LAKE_ROLL_MB="0.3",
        **disk.env(),
    )
    return FlowProcess("dataflows.archive", env, logs / "archive.log", args or []).start()


def test_disk_full_stops_the_archive_cleanly_and_a_restart_completes_the_lake(
    namespace: Namespace,
    small_disk: SmallDisk,
    logs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch = readings(READINGS, trucks=200)
    produced = {r.event_id for r in batch}
    publish(namespace, batch)
    small_disk.lake.mkdir()
    small_disk.fill(ROOM_BYTES)

    # A reader polls the lake the whole time: it must never meet a partial file.
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for path in list(small_disk.lake.rglob("*.parquet")):
                try:
                    pl.read_parquet(path)
                    reads += 1
                except FileNotFoundError:
                    continue
                except Exception as exc:
                    failures.append(f"{path.name}: {exc}")

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        started = time.monotonic()
        archive = run_archive(namespace, small_disk, logs, ["-w", "2"])
        code = archive.wait(timeout_s=120)
        exited = time.time()
        run_s = time.monotonic() - started
        events = archive.log_events()
        log_text = (logs / "archive.log").read_text(errors="replace")
        rolls_before = len({f.roll for f in Lake(small_disk.lake).files()})
        at_fault = lake_frame(small_disk.lake)
        rolls_complete = complete_rolls_only(small_disk.lake)
        temporaries = [p.name for p in small_disk.lake.rglob("*.tmp")]

        small_disk.free()
        restarted = time.monotonic()
        again = run_archive(namespace, small_disk, logs)
        assert again.wait(timeout_s=180) == 0, again.log_tail()
        restart_s = time.monotonic() - restarted
    finally:
        stop.set()
        watcher.join()

    failed = [e for e in events if e.get("event") == "lake_write_failed"]
    assert code == EXIT_LAKE_WRITE_FAILED, log_text[-3000:]
    assert len(failed) == 1, "one error line"
    line = failed[0]
    assert line["level"] == "error"
    assert line["errno"] == "ENOSPC"
    assert line["error"] == "No space left on device"
    assert str(line["path"]).startswith(str(small_disk.lake))
    assert "free space" in str(line["action"])
    assert line["exit_code"] == EXIT_LAKE_WRITE_FAILED
    assert "Traceback" not in log_text
    assert "panicked" not in log_text
    assert rolls_before > 0, "some rolls were written before the disk filled"
    assert 0 < at_fault.height < len(batch), "the disk filled mid-run"
    assert at_fault["event_id"].n_unique() == at_fault.height, "no reading twice at the fault"
    assert rolls_complete, "no part of a failed roll visible"
    assert not temporaries, temporaries

    final = lake_frame(small_disk.lake)
    counts = final.group_by("event_id").len()
    stored = set(final["event_id"])
    figures: dict[str, object] = {
        "filesystem": small_disk.kind,
        "disk_bytes": DISK_BYTES if small_disk.kind == "tmpfs" else None,
        "room_bytes": ROOM_BYTES,
        "workers": 2,
        "readings": len(batch),
        "readings_in_lake_at_fault": at_fault.height,
        "rolls_in_lake_at_fault": rolls_before,
        "exit_code": code,
        "run_until_stop_s": round(run_s, 2),
        "fault_to_exit_s": round(
            exited
            - datetime.fromisoformat(str(line["timestamp"])).timestamp()
            + float(str(line["waited_s"])),
            3,
        ),
        "restart_to_complete_s": round(restart_s, 2),
        "readings_in_lake_after_restart": final.height,
        "missing": len(produced - stored),
        "stored_twice": counts.filter(pl.col("len") > 1).height,
        "reader_file_reads": reads,
        "reader_failures": len(failures),
    }
    report("drill-disk-full", figures, capsys)
    assert stored == produced, "no reading missing"
    assert final.height == len(batch), "none stored twice"
    assert not failures, failures[:3]
    assert reads > 0
    assert not list(small_disk.lake.rglob("*.tmp"))
    assert json.loads(json.dumps(figures)) == figures


def test_the_injected_enospc_stops_the_archive_as_a_full_disk_does(
    namespace: Namespace, tmp_path: Path, logs: Path
) -> None:
    """The fallback hook itself, so that CI without mount rights runs a drill that works."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_ENOSPC_HOOK)
    disk = SmallDisk(tmp_path / "disk", "injected", hook_dir)
    disk.root.mkdir()
    disk.lake.mkdir()
    publish(namespace, readings(30_000, trucks=50))
    disk.fill(40 * 1024)
    archive = run_archive(namespace, disk, logs)
    assert archive.wait(timeout_s=120) == EXIT_LAKE_WRITE_FAILED, archive.log_tail()
    with contextlib.suppress(FileNotFoundError):
        assert not list(disk.lake.rglob("*.tmp"))
    assert complete_rolls_only(disk.lake)
    disk.free()
    assert run_archive(namespace, disk, logs).wait(timeout_s=120) == 0
    frame = lake_frame(disk.lake)
    assert frame.height == frame["event_id"].n_unique() == 30_000


def test_disk_full_in_a_two_process_cluster(
    namespace: Namespace, small_disk: SmallDisk, logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As Kubernetes runs it (k8s/base/archive.yaml: one Bytewax cluster of two pods, one
    lake): the process whose write is refused exits 74 with the error line; its peer loses
    the cluster and exits too (Bytewax's own error, code 1, unless its write was refused as
    well). Restarting both completes the lake exactly once."""
    batch = readings(READINGS, trucks=200)
    publish(namespace, batch)
    small_disk.lake.mkdir()
    small_disk.fill(ROOM_BYTES)

    def cluster(name: str) -> list[int]:
        addresses = cluster_addresses(2)
        env = namespace.env(
            FLEET_LAKE_DIR=str(small_disk.lake),
            FLEET_KAFKA_TAIL="false",
            FLEET_LAKE_ROLL_MB="0.3",
            **small_disk.env(),
        )
        processes = [
            FlowProcess(
                "dataflows.archive", env, logs / f"{name}-{i}.log", cluster_args(i, addresses)
            ).start()
            for i in range(2)
        ]
        return [p.wait(timeout_s=120) for p in processes]

    codes = cluster("full")
    lines = [
        json.loads(line)
        for i in range(2)
        for line in (logs / f"full-{i}.log").read_text(errors="replace").splitlines()
        if '"lake_write_failed"' in line
    ]
    at_fault = lake_frame(small_disk.lake)
    small_disk.free()
    restarted = cluster("again")
    final = lake_frame(small_disk.lake)
    figures: dict[str, object] = {
        "filesystem": small_disk.kind,
        "processes": 2,
        "readings": len(batch),
        "exit_codes": sorted(codes),
        "error_lines": len(lines),
        "readings_in_lake_at_fault": at_fault.height,
        "restart_exit_codes": restarted,
        "readings_in_lake_after_restart": final.height,
        "distinct_after_restart": final["event_id"].n_unique(),
    }
    report("drill-disk-full-cluster", figures, capsys)
    assert EXIT_LAKE_WRITE_FAILED in codes
    assert all(code in (EXIT_LAKE_WRITE_FAILED, 1) for code in codes), codes
    assert 1 <= len(lines) <= 2, "one line per process whose write was refused"
    assert {line["errno"] for line in lines} == {"ENOSPC"}
    assert at_fault["event_id"].n_unique() == at_fault.height
    assert restarted == [0, 0]
    assert set(final["event_id"]) == {r.event_id for r in batch}
    assert final.height == len(batch), "none stored twice"
    assert not list(small_disk.lake.rglob("*.tmp"))
