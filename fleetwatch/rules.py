"""``python -m fleetwatch.rules check DIR [--zones FILE]``: validate a rule catalogue directory.

Reads the directory as the flows would (CONTRACT.md section 9; connectors/catalogue.py: every
``*.yaml`` / ``*.yml`` directly in it, not dot-files) with the strict load of the backfill and
``fleetwatch.whatif``, with the zones of ``--zones`` (default: FLEET_ZONES; none when unset),
which the ``zone_over`` rules must name.

Valid: prints each version (``Catalogue.describe()``: number, effective_from, file, rules)
and ``ok`` on stdout, exit 0. Invalid: every problem on stderr, one line each (``file: rule
'x': field 'y': message``; rule and field when the problem has them), then a count; exit 1.
Every problem means every file's problems and also the clashes between the files that are
valid on their own (two files with the same ``version`` or ``effective_from``), so one run
lists everything to fix.

Exit codes: 0 valid; 1 invalid (or the directory or zones file cannot be read); 2 bad
arguments or settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from connectors.catalogue import catalogue_files, load_catalogue, load_zones, read_version
from domain.catalogue import Catalogue, CatalogueError, CatalogueVersion, Problem
from domain.zones import ZonesError
from runtime.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def check(directory: Path, zones_path: Path | None = None) -> Catalogue:
    """The catalogue of ``directory``, exactly as ``connectors.catalogue.load_catalogue``
    gives it, or ``CatalogueError`` with every problem: those of the strict load, and the
    clashes among the files that are valid on their own (the strict load stops at the
    files' own problems before it looks for clashes)."""
    try:
        return load_catalogue(directory, zones_path)
    except CatalogueError as error:
        problems = list(error.problems)
    problems += [p for p in clashes_among_valid(directory, zones_path) if p not in problems]
    raise CatalogueError(problems)


def clashes_among_valid(directory: Path, zones_path: Path | None) -> list[Problem]:
    """Clashes (the same version or effective_from) between the files that parse on their
    own; none when the directory or the zones cannot be read (already a problem)."""
    try:
        zones = load_zones(zones_path)
        files = catalogue_files(directory)
    except (ZonesError, OSError):
        return []
    valid: list[CatalogueVersion] = []
    for path in files:
        try:
            valid.append(read_version(path, zones))
        except CatalogueError:
            continue
    try:
        Catalogue(valid)
    except CatalogueError as error:
        return list(error.problems)
    return []


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.rules",
        description="Work with rule catalogue directories (FLEET_RULES, CONTRACT.md section 9).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checking = commands.add_parser(
        "check",
        help="validate a catalogue directory: every version, or every problem",
        description=(
            "Validate every catalogue file of DIR, and the files together. Prints each "
            "version and 'ok' (exit 0), or every problem on stderr (exit 1)."
        ),
    )
    checking.add_argument("directory", metavar="DIR", type=Path, help="the catalogue directory")
    checking.add_argument(
        "--zones",
        metavar="FILE",
        type=Path,
        help="the GeoJSON zones its zone_over rules name (default: FLEET_ZONES; none if unset)",
    )
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    settings_from_env: Callable[[], Settings] = Settings.from_env,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> int:
    args = parse_args(argv)
    zones: Path | None = args.zones
    if zones is None:
        try:
            zones = settings_from_env().rules.zones
        except SettingsError as error:
            err(f"rules check: {error}")
            return EXIT_USAGE
    try:
        catalogue = check(args.directory, zones)
    except CatalogueError as error:
        for problem in error.problems:
            err(str(problem))
        count = len(error.problems)
        err(f"rules check: {args.directory}: {count} problem{'s' if count != 1 else ''}")
        return EXIT_INVALID
    for line in catalogue.describe():
        out(line)
    out("ok")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
