"""Where a clustered flow's Bytewax recovery partitions live: one local volume per process.

Bytewax needs the cluster *as a whole* to hold every recovery partition (SQLite files
``part-<i>.sqlite3``), each exactly once; a process may hold any number, none included.
SQLite files must not sit on a network filesystem shared by pods, so on Kubernetes each
pod of a StatefulSet gets its own volume, and this module decides what goes on which:

* The partition count P is fixed when the flow is first deployed: the largest number of
  processes it will ever run (``FLEET_RECOVERY_PARTITIONS``). It cannot change later.
* ``init`` (the pods' init container) prepares one pod's volume. A volume it has prepared
  carries a marker and is never touched again. On a fresh volume it creates that ordinal's
  partitions for the *initial* replica count R0 (``FLEET_RECOVERY_INITIAL_REPLICAS``),
  none when the ordinal is R0 or more: pods added by scaling up start empty. Each pod only
  ever writes its own volume, so pods starting in parallel cannot race.
* Scaling up needs no file moves: state is routed to workers by key whatever holds the
  partitions. Scaling down does: ``rebalance`` (with the flow stopped) moves the
  partitions of the removed ordinals onto the least loaded remaining volumes (nothing
  else moves), checking that the set is complete and that no partition is held twice.

Run ``python -m fleetwatch.recovery_layout --help``; the README's "Scaling" section gives
the whole procedure.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bytewax.recovery import init_db_dir

MARKER = "fleetwatch-recovery.json"
_SIDE_FILES = ("-wal", "-shm")


class LayoutError(Exception):
    """The volumes do not hold a usable set of partitions; the message says why."""


def home_partitions(ordinal: int, replicas: int, partitions: int) -> list[int]:
    """The partitions that belong on ``ordinal``'s volume when ``replicas`` pods run."""
    if replicas < 1 or partitions < 1 or ordinal < 0:
        raise LayoutError("replicas and partitions must be at least 1, ordinal at least 0")
    return [i for i in range(partitions) if i % replicas == ordinal]


def ordinal_of(pod_name: str, statefulset: str) -> int:
    """``fleetwatch-alerts-2`` of StatefulSet ``fleetwatch-alerts`` -> 2."""
    prefix = statefulset + "-"
    suffix = pod_name.removeprefix(prefix)
    if not pod_name.startswith(prefix) or not suffix.isdigit():
        raise LayoutError(f"pod {pod_name!r} is not a member of StatefulSet {statefulset!r}")
    return int(suffix)


@dataclass(frozen=True)
class Partition:
    """One recovery partition file, as it describes itself."""

    path: Path
    index: int
    count: int


def partition_file(directory: Path, index: int) -> Path:
    return directory / f"part-{index}.sqlite3"


def read_partition(path: Path) -> Partition:
    """Open a partition, fold its write-ahead log into it, and read its index and count."""
    try:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = connection.execute("SELECT part_index, part_count FROM parts").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise LayoutError(f"{path} is not a Bytewax recovery partition: {error}") from error
    if row is None:
        raise LayoutError(f"{path} is not a Bytewax recovery partition: no parts row")
    return Partition(path, int(row[0]), int(row[1]))


def partitions_in(directory: Path) -> list[Partition]:
    return [read_partition(path) for path in sorted(directory.glob("part-*.sqlite3"))]


def read_marker(directory: Path) -> int | None:
    """The partition count a prepared volume was prepared for; None if not prepared."""
    marker = directory / MARKER
    if not marker.exists():
        return None
    try:
        return int(json.loads(marker.read_text())["partitions"])
    except (ValueError, KeyError, TypeError) as error:
        raise LayoutError(f"{marker} is damaged: {error}") from error


def write_marker(directory: Path, partitions: int) -> None:
    _write_atomically(directory / MARKER, json.dumps({"partitions": partitions}).encode())


def init_volume(directory: Path, ordinal: int, initial_replicas: int, partitions: int) -> str:
    """Prepare one pod's volume (idempotent); returns what it did, for the log."""
    directory.mkdir(parents=True, exist_ok=True)
    prepared_for = read_marker(directory)
    if prepared_for is not None:
        if prepared_for != partitions:
            raise LayoutError(
                f"{directory} holds partitions of a {prepared_for}-partition layout, but "
                f"FLEET_RECOVERY_PARTITIONS is {partitions}; the count cannot change"
            )
        # Only the names: opening the files would write to them (a WAL checkpoint).
        held = sorted(path.name for path in directory.glob("part-*.sqlite3"))
        return f"already prepared; holds {', '.join(held) or 'no partitions'}"
    # Ordinals from R0 on were added by scaling up: they start empty.
    wanted = home_partitions(ordinal, initial_replicas, partitions)
    present = {p.index for p in partitions_in(directory)}  # a crash mid-way left some
    missing = [i for i in wanted if i not in present]
    if missing:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".init-") as scratch:
            init_db_dir(Path(scratch), partitions)  # type: ignore[no-untyped-call]
            for index in missing:
                os.replace(partition_file(Path(scratch), index), partition_file(directory, index))
    _fsync_directory(directory)
    write_marker(directory, partitions)
    return f"prepared; created partitions {missing} of {partitions}"


@dataclass(frozen=True)
class Move:
    index: int
    source: Path
    target: Path


@dataclass(frozen=True)
class RebalancePlan:
    partitions: int
    moves: list[Move]
    redundant: list[Path]


def plan_rebalance(volumes: Sequence[Path], replicas: int) -> RebalancePlan:
    """Moves that empty the volumes of ordinals ``replicas`` and above onto the least
    loaded remaining ones, and redundant copies to delete (byte-identical duplicates left
    by an interrupted move). Raises LayoutError when the set is incomplete, held twice with
    different contents, or mixes layouts."""
    if not 1 <= replicas <= len(volumes):
        raise LayoutError(f"replicas must be between 1 and {len(volumes)} (the volumes given)")
    found: dict[int, list[Partition]] = {}
    counts: set[int] = set()
    for volume in volumes:
        for partition in partitions_in(volume):
            found.setdefault(partition.index, []).append(partition)
            counts.add(partition.count)
    if not found:
        raise LayoutError("no recovery partitions on any volume")
    if len(counts) != 1:
        raise LayoutError(f"partitions of different layouts mixed: counts {sorted(counts)}")
    (count,) = counts
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise LayoutError(f"partitions {missing} of {count} are on none of the volumes")
    remaining = list(volumes[:replicas])
    keep: dict[int, Partition] = {}
    redundant: list[Path] = []
    for index, copies in sorted(found.items()):
        kept = next((p for p in copies if p.path.parent in remaining), copies[0])
        for other in copies:
            if other is kept:
                continue
            if not filecmp.cmp(kept.path, other.path, shallow=False):
                raise LayoutError(
                    f"partition {index} is held twice with different contents: "
                    f"{kept.path} and {other.path}; keep the right one by hand"
                )
            redundant.append(other.path)
        keep[index] = kept
    load = dict.fromkeys(remaining, 0)
    for partition in keep.values():
        if partition.path.parent in load:
            load[partition.path.parent] += 1
    moves: list[Move] = []
    for index, partition in sorted(keep.items()):
        if partition.path.parent not in load:
            target = min(remaining, key=lambda volume: load[volume])  # first among equals
            load[target] += 1
            moves.append(Move(index, partition.path, partition_file(target, index)))
    return RebalancePlan(count, moves, redundant)


def rebalance(volumes: Sequence[Path], replicas: int) -> list[Move]:
    """Carry out ``plan_rebalance``: copy, fsync and rename into place, then delete the
    source, so a crash at any point leaves every partition whole somewhere (a rerun
    finishes the job). Every volume is marked prepared afterwards."""
    plan = plan_rebalance(volumes, replicas)
    for path in plan.redundant:
        _remove_partition(path)
    for move in plan.moves:
        with tempfile.NamedTemporaryFile(dir=move.target.parent, delete=False) as scratch:
            with move.source.open("rb") as source:
                shutil.copyfileobj(source, scratch)
            scratch.flush()
            os.fsync(scratch.fileno())
        os.replace(scratch.name, move.target)
        _fsync_directory(move.target.parent)
        _remove_partition(move.source)
    for volume in volumes:
        write_marker(volume, plan.partitions)
    return plan.moves


def _remove_partition(path: Path) -> None:
    for side in _SIDE_FILES:
        Path(f"{path}{side}").unlink(missing_ok=True)
    path.unlink()
    _fsync_directory(path.parent)


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as scratch:
        scratch.write(data)
        scratch.flush()
        os.fsync(scratch.fileno())
    os.replace(scratch.name, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# The environment this command reads (the pod spec sets it; k8s/base/*.yaml), all here: each
# is the default of the option beside it.
_ENVIRONMENT = {
    "dir": "BYTEWAX_RECOVERY_DIRECTORY",
    "partitions": "FLEET_RECOVERY_PARTITIONS",
    "initial_replicas": "FLEET_RECOVERY_INITIAL_REPLICAS",
    "pod_name": "BYTEWAX_POD_NAME",
    "statefulset_name": "BYTEWAX_STATEFULSET_NAME",
}


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    def env(option: str) -> str | None:
        return environ.get(_ENVIRONMENT[option]) or None

    def env_int(option: str) -> int | None:
        value = env(option)
        try:
            return None if value is None else int(value)
        except ValueError:
            raise LayoutError(f"{_ENVIRONMENT[option]}={value!r} is not an integer") from None

    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.recovery_layout",
        description="Lay out a clustered flow's recovery partitions on per-pod volumes.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="prepare this pod's volume (init container)")
    init.add_argument("--dir", type=Path, default=env("dir"))
    init.add_argument("--partitions", type=int, default=env_int("partitions"))
    init.add_argument("--initial-replicas", type=int, default=env_int("initial_replicas"))
    init.add_argument("--ordinal", type=int, default=None, help="default: from BYTEWAX_POD_NAME")
    init.set_defaults(pod_name=env("pod_name"), statefulset_name=env("statefulset_name"))
    move = commands.add_parser("rebalance", help="move partitions for a new replica count")
    move.add_argument("--replicas", type=int, required=True)
    move.add_argument("volumes", type=Path, nargs="+", help="every volume, in ordinal order")
    show = commands.add_parser("status", help="which partitions each volume holds")
    show.add_argument("volumes", type=Path, nargs="+")
    return parser


def _init(args: argparse.Namespace) -> str:
    ordinal = args.ordinal
    if ordinal is None:
        if not args.pod_name or not args.statefulset_name:
            raise LayoutError("give --ordinal, or BYTEWAX_POD_NAME and BYTEWAX_STATEFULSET_NAME")
        ordinal = ordinal_of(args.pod_name, args.statefulset_name)
    for name, value in (
        ("--dir / BYTEWAX_RECOVERY_DIRECTORY", args.dir),
        ("--partitions / FLEET_RECOVERY_PARTITIONS", args.partitions),
        ("--initial-replicas / FLEET_RECOVERY_INITIAL_REPLICAS", args.initial_replicas),
    ):
        if value is None:
            raise LayoutError(f"{name} is required")
    if args.initial_replicas > args.partitions:
        raise LayoutError("FLEET_RECOVERY_INITIAL_REPLICAS cannot exceed the partition count")
    return f"ordinal {ordinal}: " + init_volume(
        args.dir, ordinal, args.initial_replicas, args.partitions
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The command line; ``environ`` (default: this process's environment) gives the
    defaults of ``init``'s options, the only place this module reads the environment."""
    try:
        args = _parser(os.environ if environ is None else environ).parse_args(argv)
        if args.command == "init":
            print(_init(args))
        elif args.command == "rebalance":
            for move in rebalance(args.volumes, args.replicas):
                print(f"moved partition {move.index}: {move.source} -> {move.target}")
            print(f"laid out for {args.replicas} replicas")
        else:
            for volume in args.volumes:
                print(volume, sorted(p.index for p in partitions_in(volume)))
    except LayoutError as error:
        print(f"recovery layout: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
