"""The rule catalogue from FLEET_RULES (a directory of YAML versions) and the zones from
FLEET_ZONES (GeoJSON), kept fresh in the background (CONTRACT.md section 9).

Files: every ``*.yaml`` / ``*.yml`` directly in the directory whose name does not start with
a dot. (A Kubernetes ConfigMap volume keeps its data in hidden ``..data`` directories and
links the visible names to them; the visible names are what count.)

Reloading. A daemon thread looks for changes every ``refresh_s`` (names, sizes, mtimes and
inodes of the files and of the zones file) and re-reads the directory off the hot path.
The rules are decided file by file:

- a valid file is used, whether it is new or changed;
- an invalid file is refused: each problem is logged (file, rule, field) and counted, and
  if an earlier content of that file was in force, that content stays in force;
- a removed file's version is gone;
- two files that clash (the same ``version`` or ``effective_from``): what was in force
  stays; among newcomers the first by file name wins, the rest are refused;
- a directory that is empty or unreadable after a reload keeps the catalogue in force
  (a volume mount in flux is not an order to drop every rule).

``strict`` stores (the backfill, ``fleetwatch.whatif``) refuse to start on any problem: a
bounded run is repeated after the fix. A stream starts with the valid files and logs the
rest, unless nothing valid is left, which stops it with the problems listed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

import structlog

from domain.catalogue import (
    Catalogue,
    CatalogueError,
    CatalogueVersion,
    Problem,
    parse_version,
)
from domain.zones import Zones, ZonesError
from runtime.metrics import RULE_FILES_REFUSED, RULE_RELOADS, RULE_VERSION_IN_FORCE

log = structlog.get_logger(__name__)

SUFFIXES = (".yaml", ".yml")
MAX_ZONES_BYTES = 50_000_000


def catalogue_files(directory: Path) -> list[Path]:
    """The version files of ``directory``, by name."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def load_zones(path: Path | None) -> Zones:
    """FLEET_ZONES, or no zones; ``ZonesError`` names the file and what is wrong in it."""
    if path is None:
        return Zones.none()
    try:
        if path.stat().st_size > MAX_ZONES_BYTES:
            raise ZonesError(f"larger than {MAX_ZONES_BYTES} bytes")
        document = json.loads(path.read_bytes())
        return Zones.from_geojson(document)
    except (OSError, ValueError, RecursionError) as exc:
        raise ZonesError(f"{path}: {exc}") from None


def read_version(path: Path, zones: Zones) -> CatalogueVersion:
    """One file; ``CatalogueError`` for anything wrong, reading included."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise CatalogueError([Problem(path.name, None, None, f"cannot be read: {exc}")]) from None
    return parse_version(text, path.name, zones)


def load_catalogue(directory: Path, zones_path: Path | None = None) -> Catalogue:
    """Every file of ``directory``, all valid, or ``CatalogueError`` with every problem (the
    strict load of the backfill, ``fleetwatch.whatif`` and ``fleetwatch.rules check``)."""
    problems: list[Problem] = []
    try:
        zones = load_zones(zones_path)
    except ZonesError as exc:
        raise CatalogueError([Problem(str(zones_path), None, None, str(exc))]) from None
    versions: list[CatalogueVersion] = []
    try:
        files = catalogue_files(directory)
    except OSError as exc:
        raise CatalogueError([Problem(str(directory), None, None, str(exc))]) from None
    if not files:
        raise CatalogueError([Problem(str(directory), None, None, "no *.yaml catalogue files")])
    for path in files:
        try:
            versions.append(read_version(path, zones))
        except CatalogueError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CatalogueError(problems)
    return Catalogue(versions)


def _clashes(
    name: str, version: CatalogueVersion, kept: Iterable[CatalogueVersion]
) -> list[Problem]:
    """Why ``version`` (file ``name``) cannot join ``kept``, each problem naming ``name``:
    the file refused. (``Catalogue``'s own check names whichever of two clashing files
    comes later by effective_from, which can be the file that stays in force.)"""
    problems: list[Problem] = []
    for other in kept:
        if other.version == version.version:
            problems.append(Problem(name, None, "version", f"also in {other.source}"))
        if other.effective_from_ms == version.effective_from_ms:
            problems.append(Problem(name, None, "effective_from", f"the same as {other.source}'s"))
    return problems


class CatalogueStore:
    """The catalogue in force, refreshed by a daemon thread. ``current()`` never blocks."""

    def __init__(
        self,
        directory: Path,
        zones_path: Path | None = None,
        refresh_s: float = 10.0,
    ) -> None:
        self._directory = directory
        self._zones_path = zones_path
        self._refresh_s = refresh_s
        self._catalogue = Catalogue([])
        self._zones = Zones.none()
        # The content in force of each file, by name: what a refused change falls back to.
        self._in_force: dict[str, CatalogueVersion] = {}
        self._seen: Hashable = object()
        # The problems of the last read: one still there at the next read (a file that stays
        # broken while another changes) is not logged or counted again.
        self._reported: frozenset[Problem] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> Catalogue:
        return self._catalogue

    def signature(self) -> Hashable:
        entries: list[tuple[str, int, int, int] | None] = []
        try:
            paths = catalogue_files(self._directory)
        except OSError:
            return None
        if self._zones_path is not None:
            paths.append(self._zones_path)
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                entries.append(None)
            else:
                entries.append((str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns))
        return tuple(entries)

    def refresh(self) -> list[Problem]:
        """Read the directory again if it changed; the problems found (also logged)."""
        signature = self.signature()
        if signature == self._seen:
            return []
        problems = self._read()
        # Only once read: a read that raised is tried again at the next refresh.
        self._seen = signature
        return problems

    def _read(self) -> list[Problem]:
        """Read the directory and the zones; swap in what is valid; the problems."""
        problems: list[Problem] = []
        zones = self._reload_zones(problems)
        try:
            files = catalogue_files(self._directory)
        except OSError as exc:
            files = []
            problems.append(Problem(str(self._directory), None, None, f"cannot be read: {exc}"))
        if not files:
            if not any(p.file == str(self._directory) for p in problems):
                problems.append(Problem(str(self._directory), None, None, "no catalogue files"))
            self._report(problems, kept=bool(self._in_force))
            return problems
        candidates: dict[str, CatalogueVersion] = {}
        for path in files:
            try:
                candidates[path.name] = read_version(path, zones)
            except CatalogueError as exc:
                problems.extend(exc.problems)
                if path.name in self._in_force:  # what was in force stays in force
                    candidates[path.name] = self._in_force[path.name]
        accepted = self._without_clashes(candidates, problems)
        catalogue = Catalogue(accepted.values())
        changed = not catalogue.same_as(self._catalogue)
        self._in_force = accepted
        self._catalogue = catalogue  # one reference assignment: readers see old or new
        self._zones = zones
        self._report(problems, kept=True)
        if changed:
            RULE_RELOADS.labels("ok").inc()
            latest = max((v.version for v in catalogue.versions), default=0)
            RULE_VERSION_IN_FORCE.set(latest)
            log.info("rules_loaded", directory=str(self._directory), versions=catalogue.describe())
        elif not problems:
            RULE_RELOADS.labels("unchanged").inc()
        return problems

    def _reload_zones(self, problems: list[Problem]) -> Zones:
        try:
            zones = load_zones(self._zones_path)
        except ZonesError as exc:
            problems.append(Problem(str(self._zones_path), None, None, str(exc)))
            return self._zones  # the zones in use stay
        if not zones.same_shapes(self._zones):
            # A moved polygon changes no rule's definition (rules name their zone), so the
            # catalogue reads as unchanged: this line says the new shapes are in use.
            log.info("zones_loaded", file=str(self._zones_path), zones=zones.names())
        return zones

    def _without_clashes(
        self, candidates: Mapping[str, CatalogueVersion], problems: list[Problem]
    ) -> dict[str, CatalogueVersion]:
        """What was in force first, then newcomers by file name, each only if it clashes
        with nothing kept so far."""
        kept: dict[str, CatalogueVersion] = {}
        # In force and unchanged: the same content as in force. (Not identity: every file is
        # read again when any file changes, so an unchanged file is a new, equal object; by
        # identity it ranked as a newcomer, and a new file earlier by name that clashed with
        # it replaced the version in force.)
        unchanged = sorted(
            n for n, v in candidates.items() if n in self._in_force and self._in_force[n].same_as(v)
        )
        # Then the files in force whose content changed (each falls back to its earlier
        # content on a clash), then the new files, each group by name.
        changed = sorted(n for n in candidates if n in self._in_force and n not in unchanged)
        newcomers = sorted(n for n in candidates if n not in self._in_force)
        for name in [*unchanged, *changed, *newcomers]:
            version = candidates[name]
            clashes = _clashes(name, version, kept.values())
            if not clashes:
                kept[name] = version
                continue
            problems.extend(clashes)
            # A changed file that now clashes: its earlier content stays if it fits.
            earlier = self._in_force.get(name)
            if (
                earlier is not None
                and earlier is not version
                and not _clashes(name, earlier, kept.values())
            ):
                kept[name] = earlier
        return kept

    def _report(self, problems: list[Problem], *, kept: bool) -> None:
        """Log and count the problems not reported at the last read."""
        fresh = [p for p in problems if p not in self._reported]
        self._reported = frozenset(problems)
        if not fresh:
            return
        RULE_RELOADS.labels("refused").inc()
        files = {p.file for p in fresh}
        RULE_FILES_REFUSED.inc(len(files))
        for problem in fresh:
            log.error(
                "rule_file_refused",
                file=problem.file,
                rule=problem.rule,
                field=problem.field,
                error=problem.message,
                keeping="the versions in force" if kept else "nothing: no valid version",
            )

    def start(self) -> CatalogueStore:
        """Load now; with no valid version at all, ``CatalogueError`` (the flow cannot judge
        anything). Then keep refreshing."""
        problems = self.refresh()
        if not self._catalogue.versions:
            raise CatalogueError(
                problems or [Problem(str(self._directory), None, None, "no valid version")]
            )
        self._thread = threading.Thread(target=self._run, name="rules-refresh", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.refresh()
            except Exception as exc:  # never let the refresher die: the rules would freeze
                log.error("rules_refresh_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
