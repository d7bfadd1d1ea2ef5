"""The rule catalogue (CONTRACT.md section 9): versions of rules as data, in event time.

A version is one YAML file: ``version``, ``effective_from`` and ``rules``. ``parse_version``
reads one (text in, ``CatalogueVersion`` or ``CatalogueError`` out: every problem, each
naming the file, the rule and the field); ``Catalogue`` puts versions in event-time order and
answers which version judges a reading (the latest ``effective_from`` <= its ts).

State across versions. A rule's state for a truck carries on from one reading to the next
only if the rule's *definition* (everything but ``severity``, defaults filled in, scope lists
as sets) is the same in every version from the one to the other. ``Catalogue`` gives each
(version, rule) its *lineage*, a text naming the rule and its definition (a digest of a
canonical form: the same in every process and after every restart), and the *run start*:
the ``effective_from`` of the first version of the unbroken run of versions with that
definition. A state remembers its lineage and the ts of the last reading that reached it;
it carries on only if the lineage is the same and the run started at or before that ts,
i.e. every version from that reading's to this one has the definition. Both are plain
data, so recovery snapshots hold them, and the check is against the catalogue in force
now: a restart with a changed directory, or a version added or removed in the past, resets
exactly what judging all the readings with the new catalogue would have reset.

The built-in catalogue (``builtin_catalogue``) is section 4's two rules from the FLEET_*
knobs, as version 0 in force from the beginning of time, with today's alert ids and
``details`` ``{}``.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeGuard

import yaml

from domain.readings import Reading
from domain.rule_kinds import (
    CountOver,
    Covered,
    Deceleration,
    DurationOver,
    InstantOver,
    Kind,
    PostedLimitOver,
    ZoneOver,
)
from domain.timestamps import BadTimestamp, format_rfc3339_ms, parse_rfc3339_ms
from domain.zones import Zones

BUILTIN_VERSION = 0
BEGINNING_MS = -(2**62)  # before any reading: the built-in catalogue is always in force
MAX_FILE_BYTES = 1_000_000
MAX_RULES = 1_000
MAX_VERSION = 2**31 - 1
RULE_ID = re.compile(r"[a-z0-9_]{1,64}", re.ASCII)
VEHICLE_CLASSES = frozenset({"heavy", "medium", "light"})
SEVERITIES = ("warning", "critical")
MAX_SPEED_KMH = 400.0  # readings stop there (section 2)
# Held readings are bounded by these: a count, or the readings of one run or window.
MAX_COUNT = 10_000
MAX_WINDOW_S = 86_400.0  # within_s of count_over and deceleration
MAX_FOR_S = 3_600.0  # duration_over: an hour over the limit is an alert long before
MAX_GAP_S = 3_600.0
MAX_COOLDOWN_S = 30 * 86_400.0
DEFAULT_COOLDOWN_S = 600.0
DEFAULT_MAX_GAP_S = 30.0
MAX_OVER_PCT = 1_000.0  # posted_limit_over: 11 times the limit is no longer "speeding"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a catalogue file."""

    file: str
    rule: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.rule is not None:
            where.append(f"rule {self.rule!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{': '.join(where)}: {self.message}"


class CatalogueError(ValueError):
    """A catalogue file (or directory) that cannot be used, with every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Scope:
    """Which trucks a rule judges: shell-style patterns on truck_id (case-sensitive) and
    vehicle classes (trucks.parquet); None is "any"; both given, both must match."""

    trucks: frozenset[str] | None = None
    vehicle_classes: frozenset[str] | None = None

    def __repr__(self) -> str:
        # Sorted: a frozenset's order depends on the process's hash seed, and this text is
        # hashed into lineages, which must be the same after a restart.
        trucks = None if self.trucks is None else sorted(self.trucks)
        classes = None if self.vehicle_classes is None else sorted(self.vehicle_classes)
        return f"Scope(trucks={trucks!r}, vehicle_classes={classes!r})"

    def matches(self, truck_id: str, vehicle_class: str | None) -> bool:
        if self.vehicle_classes is not None and vehicle_class not in self.vehicle_classes:
            return False
        if self.trucks is None:
            return True
        return any(fnmatch.fnmatchcase(truck_id, pattern) for pattern in self.trucks)

    @property
    def everyone(self) -> bool:
        return self.trucks is None and self.vehicle_classes is None


@dataclass(frozen=True, slots=True)
class Definition:
    """What decides a rule's state: all but its severity (compared for state continuity)."""

    kind: Kind
    cooldown_ms: int
    scope: Scope


@dataclass(frozen=True, slots=True)
class Detection:
    """A rule fired: the covered readings in event-time order and what the alert needs.
    ``critical`` None: section 4's rule says (``instant_overspeed`` is critical)."""

    rule: str
    truck_id: str
    readings: Covered
    threshold_kmh: float
    rule_version: int = BUILTIN_VERSION
    critical: bool | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_critical(self) -> bool:
        if self.critical is not None:
            return self.critical
        return self.rule == "instant_overspeed"


class RuleState:
    """One rule's state for one truck: its lineage, its cooldown, the readings its kind
    holds. Plain and small: it is part of the truck's recovery snapshot."""

    __slots__ = ("cooldown_until", "held", "last_ts", "lineage")

    def __init__(
        self,
        lineage: str,
        cooldown_until: int | None = None,
        held: list[Reading] | None = None,
        last_ts: int | None = None,
    ) -> None:
        self.lineage = lineage
        self.cooldown_until = cooldown_until
        self.held: list[Reading] = [] if held is None else held
        # The ts of the last reading that reached this state (None: none yet).
        self.last_ts = last_ts

    def copy(self) -> RuleState:
        return RuleState(self.lineage, self.cooldown_until, list(self.held), self.last_ts)

    def __getstate__(self) -> tuple[str, int | None, list[Reading], int | None]:
        return (self.lineage, self.cooldown_until, self.held, self.last_ts)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.lineage, self.cooldown_until, self.held, self.last_ts = state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleState):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    __hash__ = None  # type: ignore[assignment]  # mutable: equal by value, never a key

    def __repr__(self) -> str:
        return (
            f"RuleState({self.lineage!r}, {self.cooldown_until!r}, {self.held!r}, {self.last_ts!r})"
        )


@dataclass(frozen=True, slots=True, eq=False)
class CatalogueRule:
    id: str
    definition: Definition
    critical: bool
    # Section 4's rules keep today's alerts: no details, and severity as section 4 says.
    builtin: bool = False
    floor: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "floor", self.definition.kind.speed_floor_kmh)

    def judge(self, state: RuleState, reading: Reading, version: int) -> Detection | None:
        """Cooldown first, the same for every kind (section 9), then the kind. (The hot loop,
        ``domain.rules.judge``, does the same inline.)"""
        until = state.cooldown_until
        if until is not None:
            if reading.ts_ms < until:
                return None  # cooling down: not counted
            state.cooldown_until = None  # counting restarts empty
            state.held.clear()
        covered = self.definition.kind.judge(state.held, reading)
        return None if covered is None else self.fired(state, covered, version)

    def fired(self, state: RuleState, covered: Covered, version: int) -> Detection:
        """The kind fired at the newest of ``covered``: the cooldown starts, the detection."""
        kind = self.definition.kind
        cooldown = self.definition.cooldown_ms
        newest = covered[-1]
        if cooldown:
            state.cooldown_until = newest.ts_ms + cooldown  # the alert's window_end + cooldown
        return Detection(
            self.id,
            newest.truck_id,
            covered,
            kind.threshold_of(covered),
            version,
            None if self.builtin else self.critical,
            {} if self.builtin else kind.details(covered),
        )


@dataclass(frozen=True, eq=False)
class CatalogueVersion:
    """One version as its file gave it (``source``: the file's name)."""

    version: int
    effective_from_ms: int
    rules: tuple[CatalogueRule, ...]
    source: str

    def same_as(self, other: CatalogueVersion) -> bool:
        """The same rules, for a reload that must know whether anything changed."""
        return (
            self.version == other.version
            and self.effective_from_ms == other.effective_from_ms
            and [(r.id, r.definition, r.critical) for r in self.rules]
            == [(r.id, r.definition, r.critical) for r in other.rules]
        )


# (rule, lineage, run start), in the file's order
Judged = tuple[tuple[CatalogueRule, str, int], ...]


class VersionInForce:
    """A version as the catalogue judges with it: each rule with its lineage, the speed at or
    below which no rule can change (``floor``), and which rules apply to which truck."""

    __slots__ = ("_by_truck", "_scoped", "floor", "judged", "version")

    def __init__(self, version: CatalogueVersion, judged: Judged) -> None:
        self.version = version
        self.judged = judged
        kinds = [rule.definition.kind for rule, _, _ in judged]
        self.floor = min((k.speed_floor_kmh for k in kinds), default=math.inf)
        self._scoped = any(not rule.definition.scope.everyone for rule, _, _ in judged)
        # (truck_id, vehicle class) -> the rules that judge it; bounded, rebuilt as needed.
        self._by_truck: dict[tuple[str, str | None], Judged] = {}

    def rules_for(self, truck_id: str, vehicle_class: str | None) -> Judged:
        if not self._scoped:
            return self.judged
        key = (truck_id, vehicle_class)
        found = self._by_truck.get(key)
        if found is None:
            if len(self._by_truck) >= 100_000:
                self._by_truck.clear()
            found = tuple(
                judged
                for judged in self.judged
                if judged[0].definition.scope.matches(truck_id, vehicle_class)
            )
            self._by_truck[key] = found
        return found


@dataclass(frozen=True)
class Prefilter:
    """Which readings a bounded replay must keep; it may drop the rest before any
    per-reading Python (the backfill does it in Polars, on each truck's deduplicated
    readings in event-time order). A reading is kept when one of these holds:

    - its speed is over ``over_kmh`` (the lowest limit of the rules that skip slower
      readings, zone rules apart);
    - ``successors_over_kmh`` is set (a duration_over or deceleration rule exists) and the
      reading or the one before it (of its truck) is over it;
    - for a zone rule ``(limit, (min_lon, min_lat, max_lon, max_lat))`` of ``zones``: it is
      over the limit and its position lies in the zone's bounding box.

    Exact: a dropped reading changes no rule of the catalogue (domain/rule_kinds.py says why
    for each kind). A bare limit (the built-in rules) is ``Prefilter(limit)``."""

    over_kmh: float
    successors_over_kmh: float | None = None
    zones: tuple[tuple[float, tuple[float, float, float, float]], ...] = ()

    @classmethod
    def of(cls, kinds: Iterable[Kind]) -> Prefilter:
        over, successors = math.inf, math.inf
        zones: set[tuple[float, tuple[float, float, float, float]]] = set()
        for kind in kinds:
            if isinstance(kind, ZoneOver):
                zones.add((kind.prefilter_floor_kmh, kind.zone.bounds))
            elif kind.successor_matters:
                successors = min(successors, kind.prefilter_floor_kmh)
            else:
                over = min(over, kind.prefilter_floor_kmh)
        return cls(over, None if successors == math.inf else successors, tuple(sorted(zones)))


class Catalogue:
    """Versions in event-time order; ``at(ts)`` is the version that judges a reading at ts."""

    def __init__(self, versions: Iterable[CatalogueVersion]) -> None:
        ordered = sorted(versions, key=lambda v: v.effective_from_ms)
        _refuse_clashes(ordered)
        self.versions = tuple(ordered)
        self._starts = [v.effective_from_ms for v in ordered]
        self._in_force = tuple(_lineages(ordered))
        floors = [v.floor for v in self._in_force]
        # No rule is changed by a reading at or below this: the stream's skip.
        self.lowest_relevant_kmh = min(floors, default=math.inf)
        self.prefilter = Prefilter.of(r.definition.kind for v in self.versions for r in v.rules)

    def at(self, ts_ms: int) -> VersionInForce | None:
        index = bisect.bisect_right(self._starts, ts_ms) - 1
        return self._in_force[index] if index >= 0 else None

    def span(self, ts_ms: int) -> tuple[VersionInForce | None, int, int]:
        """The version in force at ts and the ts range [low, high) it is in force over."""
        starts = self._starts
        index = bisect.bisect_right(starts, ts_ms) - 1
        high = starts[index + 1] if index + 1 < len(starts) else 2**63
        if index < 0:
            return None, -(2**63), high
        return self._in_force[index], starts[index], high

    def same_as(self, other: Catalogue) -> bool:
        return len(self.versions) == len(other.versions) and all(
            a.same_as(b) for a, b in zip(self.versions, other.versions, strict=True)
        )

    def describe(self) -> list[str]:
        """One line per version, for logs and ``fleetwatch.rules check``."""
        return [
            f"version {v.version} from {_shown_ms(v.effective_from_ms)} ({v.source}): "
            + (", ".join(f"{r.id} ({r.definition.kind.name})" for r in v.rules) or "no rules")
            for v in self.versions
        ]


def _shown_ms(ms: int) -> str:
    return "the beginning" if ms <= BEGINNING_MS else format_rfc3339_ms(ms)


def _refuse_clashes(ordered: Sequence[CatalogueVersion]) -> None:
    problems: list[Problem] = []
    seen: dict[int, str] = {}
    for earlier, later in itertools.pairwise(ordered):
        if earlier.effective_from_ms == later.effective_from_ms:
            problems.append(
                Problem(later.source, None, "effective_from", f"the same as {earlier.source}'s")
            )
    for v in ordered:
        if v.version in seen:
            problems.append(Problem(v.source, None, "version", f"also in {seen[v.version]}"))
        seen.setdefault(v.version, v.source)
    if problems:
        raise CatalogueError(problems)


def _lineages(ordered: Sequence[CatalogueVersion]) -> Iterable[VersionInForce]:
    """Each rule's lineage (its id and definition) and where its unbroken run of versions
    with that definition began."""
    previous: dict[str, tuple[str, int]] = {}
    for v in ordered:
        current: dict[str, tuple[str, int]] = {}
        judged: list[tuple[CatalogueRule, str, int]] = []
        for rule in v.rules:
            lineage = lineage_of(rule)
            before = previous.get(rule.id)
            unbroken = before is not None and before[0] == lineage
            start = before[1] if before is not None and unbroken else v.effective_from_ms
            current[rule.id] = (lineage, start)
            judged.append((rule, lineage, start))
        previous = current
        yield VersionInForce(v, tuple(judged))


def lineage_of(rule: CatalogueRule) -> str:
    """The rule's id and a digest of its definition's canonical text (the same in every
    process: no set order, no object ids)."""
    digest = hashlib.sha256(repr(rule.definition).encode()).hexdigest()[:16]
    return f"{rule.id}:{digest}"


@dataclass(frozen=True)
class RuleBook:
    """What judges readings: the catalogue in force and each truck's vehicle class."""

    catalogue: Catalogue
    vehicle_classes: Mapping[str, str] = field(default_factory=dict)


# --- Built-in catalogue ------------------------------------------------------------------


def builtin_catalogue(
    threshold_kmh: float,
    violations: int,
    window_ms: int,
    critical_kmh: float,
    cooldown_ms: int,
) -> Catalogue:
    """Section 4's rules as version 0: instant_overspeed first, as the alerts always came."""
    everyone = Scope()
    rules = (
        CatalogueRule(
            "instant_overspeed",
            Definition(InstantOver(critical_kmh), cooldown_ms, everyone),
            critical=True,
            builtin=True,
        ),
        CatalogueRule(
            "sustained_speeding",
            Definition(CountOver(threshold_kmh, violations, window_ms), cooldown_ms, everyone),
            critical=False,
            builtin=True,
        ),
    )
    return Catalogue([CatalogueVersion(BUILTIN_VERSION, BEGINNING_MS, rules, "built-in")])


# --- Parsing -----------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader whose mappings say which keys were repeated (PyYAML keeps the
    last, which would hide a slip like two ``speed_over_kmh``): the parser refuses them."""


class _Keyed(dict[Any, Any]):
    """A YAML mapping that remembers the keys it was given more than once (PyYAML keeps the
    last), so the parser can name the rule and the field of a repeated key."""

    repeated: tuple[tuple[str, int], ...] = ()  # (key, line)


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    repeated: list[tuple[str, int]] = []
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool):
            if key in seen:
                repeated.append((str(key), key_node.start_mark.line + 1))
            seen.add(key)
    mapping = _Keyed(loader.construct_mapping(node, deep=deep))
    mapping.repeated = tuple(repeated)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

_TOP_KEYS = frozenset({"version", "effective_from", "rules"})
# Times are whole milliseconds, as readings' are: a finer value would be rounded somewhere,
# and a boundary moved by a fraction of a millisecond is a boundary nobody can test.
_WHOLE_MS = "must be a whole number of milliseconds"
_FRACTION = re.compile(r":\d\d\.(\d+)", re.ASCII)
_TIME_FIELDS = frozenset({"within_s", "for_s", "max_gap_s", "cooldown_s"})
_COMMON_KEYS = frozenset({"id", "kind", "severity", "cooldown_s", "scope"})
_KIND_KEYS = {
    "instant_over": frozenset({"speed_over_kmh"}),
    "count_over": frozenset({"speed_over_kmh", "count", "within_s"}),
    "duration_over": frozenset({"speed_over_kmh", "for_s", "max_gap_s"}),
    "deceleration": frozenset({"drop_kmh", "within_s"}),
    "zone_over": frozenset({"zone", "speed_over_kmh"}),
    "posted_limit_over": frozenset({"over_kmh", "over_pct", "for_s", "max_gap_s"}),
}
KINDS = tuple(_KIND_KEYS)


def parse_version(text: str | bytes, source: str, zones: Zones | None = None) -> CatalogueVersion:
    """One catalogue file; ``CatalogueError`` lists every problem, each naming ``source``,
    the rule and the field. ``zones``: FLEET_ZONES (None: no zones are defined)."""
    if len(text) > MAX_FILE_BYTES:
        raise CatalogueError([Problem(source, None, None, f"larger than {MAX_FILE_BYTES} bytes")])
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError, ValueError) as exc:
        message = " ".join(str(exc).split())[:300] if not isinstance(exc, RecursionError) else ""
        raise CatalogueError(
            [Problem(source, None, None, f"not YAML: {message or 'nested too deeply'}")]
        ) from None
    parser = _Parser(source, zones or Zones.none())
    version = parser.version(document)
    if parser.problems or version is None:
        raise CatalogueError(parser.problems)
    return version


class _Parser:
    def __init__(self, source: str, zones: Zones) -> None:
        self.source = source
        self.zones = zones
        self.problems: list[Problem] = []

    def fail(self, rule: str | None, name: str | None, message: str) -> None:
        self.problems.append(Problem(self.source, rule, name, message))

    def version(self, document: Any) -> CatalogueVersion | None:
        if not isinstance(document, dict):
            self.fail(None, None, "must be a mapping with version, effective_from and rules")
            return None
        for key in sorted(set(document) - _TOP_KEYS, key=str):
            self.fail(None, str(key), "unknown field (expected version, effective_from, rules)")
        self.repeated(None, document)
        number = document.get("version")
        if not _is_int(number) or not 1 <= number <= MAX_VERSION:
            self.fail(None, "version", f"must be an integer from 1 to {MAX_VERSION}")
            number = 0
        effective = self.effective_from(document.get("effective_from"))
        rules = document.get("rules")
        parsed: list[CatalogueRule] = []
        if not isinstance(rules, list):
            self.fail(None, "rules", "must be a list of rules (an empty list: no rules)")
        elif len(rules) > MAX_RULES:
            self.fail(None, "rules", f"more than {MAX_RULES} rules")
        else:
            ids: set[str] = set()
            for position, entry in enumerate(rules):
                rule_id = entry.get("id") if isinstance(entry, dict) else None
                if isinstance(rule_id, str) and RULE_ID.fullmatch(rule_id):
                    if rule_id in ids:  # named even when a rule of that id is invalid
                        self.fail(rule_id, "id", "not unique in this version")
                    ids.add(rule_id)
                rule = self.rule(entry, position)
                if rule is not None:
                    parsed.append(rule)
        if self.problems or effective is None:
            return None
        return CatalogueVersion(number, effective, tuple(parsed), self.source)

    def repeated(self, rule: str | None, mapping: Any, prefix: str = "") -> None:
        for key, line in getattr(mapping, "repeated", ()):
            self.fail(rule, prefix + key, f"duplicate key: given again on line {line}")

    def effective_from(self, value: Any) -> int | None:
        # YAML reads an unquoted timestamp as a datetime; quoted, it is RFC 3339 text.
        if isinstance(value, datetime):
            if value.tzinfo is None:
                self.fail(None, "effective_from", "needs an offset, e.g. 2026-12-01T00:00:00Z")
                return None
            if value.microsecond % 1000:
                self.fail(None, "effective_from", _WHOLE_MS)
                return None
            value = value.isoformat()
        if isinstance(value, date) and not isinstance(value, datetime):
            self.fail(None, "effective_from", "needs a time and offset: 2026-12-01T00:00:00Z")
            return None
        if not isinstance(value, str):
            self.fail(None, "effective_from", "must be an RFC 3339 date-time with offset")
            return None
        fraction = _FRACTION.search(value)
        if fraction is not None and fraction.group(1)[3:].strip("0"):
            self.fail(None, "effective_from", _WHOLE_MS)
            return None
        try:
            return parse_rfc3339_ms(value)
        except BadTimestamp as exc:
            self.fail(None, "effective_from", str(exc))
            return None

    def rule(self, entry: Any, position: int) -> CatalogueRule | None:
        if not isinstance(entry, dict):
            self.fail(f"#{position + 1}", None, "must be a mapping")
            return None
        rule_id = entry.get("id")
        if not isinstance(rule_id, str) or not RULE_ID.fullmatch(rule_id):
            self.fail(f"#{position + 1}", "id", "must be 1-64 chars of [a-z0-9_]")
            return None
        kind_name = entry.get("kind")
        if not isinstance(kind_name, str):
            self.fail(rule_id, "kind", f"must be one of {', '.join(KINDS)}")
            return None
        if kind_name not in _KIND_KEYS:
            self.fail(rule_id, "kind", f"must be one of {', '.join(KINDS)}")
            return None
        allowed = _COMMON_KEYS | _KIND_KEYS[kind_name]
        for key in sorted(set(entry) - allowed, key=str):
            self.fail(rule_id, str(key), f"unknown field for {kind_name}")
        self.repeated(rule_id, entry)
        fields = _Fields(self, rule_id, entry)
        kind = self.kind(kind_name, fields)
        severity = entry.get("severity", "warning")
        if severity not in SEVERITIES:
            self.fail(rule_id, "severity", "must be warning or critical")
        cooldown_s = fields.number("cooldown_s", 0.0, MAX_COOLDOWN_S, DEFAULT_COOLDOWN_S)
        scope = self.scope(rule_id, entry.get("scope"))
        if kind is None or cooldown_s is None or scope is None or severity not in SEVERITIES:
            return None
        definition = Definition(kind, round(cooldown_s * 1000), scope)
        return CatalogueRule(rule_id, definition, critical=severity == "critical")

    def kind(self, name: str, fields: _Fields) -> Kind | None:
        if name == "deceleration":
            drop = fields.number("drop_kmh", 0.0, MAX_SPEED_KMH, exclusive_low=True)
            within = fields.number("within_s", 0.0, MAX_WINDOW_S, exclusive_low=True)
            if drop is None or within is None:
                return None
            return Deceleration(drop, round(within * 1000))
        if name == "posted_limit_over":
            over = fields.number("over_kmh", 0.0, MAX_SPEED_KMH, 0.0)
            pct = fields.number("over_pct", 0.0, MAX_OVER_PCT, 0.0)
            for_s = fields.number("for_s", 0.0, MAX_FOR_S, 0.0)
            gap = fields.number("max_gap_s", 0.0, MAX_GAP_S, DEFAULT_MAX_GAP_S, exclusive_low=True)
            if over is None or pct is None or for_s is None or gap is None:
                return None
            return PostedLimitOver(over, pct, round(for_s * 1000), round(gap * 1000))
        speed = fields.number("speed_over_kmh", 0.0, MAX_SPEED_KMH)
        if name == "instant_over":
            return None if speed is None else InstantOver(speed)
        if name == "count_over":
            count = fields.integer("count", 1, MAX_COUNT)
            within = fields.number("within_s", 0.0, MAX_WINDOW_S)
            if speed is None or count is None or within is None:
                return None
            return CountOver(speed, count, round(within * 1000))
        if name == "duration_over":
            for_s = fields.number("for_s", 0.0, MAX_FOR_S)
            gap = fields.number("max_gap_s", 0.0, MAX_GAP_S, DEFAULT_MAX_GAP_S, exclusive_low=True)
            if speed is None or for_s is None or gap is None:
                return None
            return DurationOver(speed, round(for_s * 1000), round(gap * 1000))
        zone_name = fields.entry.get("zone")
        zone = None
        if not isinstance(zone_name, str):
            self.fail(fields.rule_id, "zone", "must name a zone of FLEET_ZONES")
        elif zone_name not in self.zones:
            known = ", ".join(self.zones.names()[:20]) or "none: FLEET_ZONES is unset or empty"
            self.fail(fields.rule_id, "zone", f"no zone named {zone_name!r} (zones: {known})")
        else:
            zone = self.zones[zone_name]
        if speed is None or zone is None or not isinstance(zone_name, str):
            return None
        return ZoneOver(zone_name, speed, zone)

    def scope(self, rule_id: str, value: Any) -> Scope | None:
        if value is None:
            return Scope()
        if not isinstance(value, dict) or not value:
            self.fail(rule_id, "scope", "must be a mapping with trucks and/or vehicle_classes")
            return None
        for key in sorted(set(value) - {"trucks", "vehicle_classes"}, key=str):
            self.fail(rule_id, f"scope.{key}", "unknown field (expected trucks, vehicle_classes)")
        self.repeated(rule_id, value, "scope.")
        before = len(self.problems)
        trucks = self.texts(rule_id, "scope.trucks", value.get("trucks"), None)
        classes = self.texts(
            rule_id, "scope.vehicle_classes", value.get("vehicle_classes"), VEHICLE_CLASSES
        )
        if len(self.problems) > before:
            return None
        return Scope(trucks, classes)

    def texts(
        self, rule_id: str, name: str, value: Any, allowed: frozenset[str] | None
    ) -> frozenset[str] | None:
        """A list of non-empty texts as a set; None when absent (or wrong: a problem)."""
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.fail(rule_id, name, "must be a non-empty list (leave it out for every truck)")
            return None
        if not all(isinstance(v, str) and 1 <= len(v) <= 128 for v in value):
            self.fail(rule_id, name, "must hold texts of 1-128 chars")
            return None
        if allowed is not None and not set(value) <= allowed:
            unknown = ", ".join(sorted(set(value) - allowed))
            self.fail(rule_id, name, f"unknown {unknown} (expected {', '.join(sorted(allowed))})")
            return None
        return frozenset(value)


@dataclass
class _Fields:
    parser: _Parser
    rule_id: str
    entry: dict[Any, Any]

    def number(
        self,
        name: str,
        low: float,
        high: float,
        default: float | None = None,
        *,
        exclusive_low: bool = False,
    ) -> float | None:
        value = self.entry.get(name, default)
        if value is None:
            self.parser.fail(self.rule_id, name, "is required")
            return None
        above = f"over {low:g}" if exclusive_low else f"from {low:g}"
        if not _is_number(value) or not _finite(value):
            self.parser.fail(self.rule_id, name, f"must be a number {above} to {high:g}")
            return None
        if value > high or value < low or (exclusive_low and value == low):
            self.parser.fail(self.rule_id, name, f"{value} is not {above} to {high:g}")
            return None
        if name in _TIME_FIELDS and abs(value * 1000 - round(value * 1000)) > 1e-6:
            self.parser.fail(self.rule_id, name, _WHOLE_MS)
            return None
        if name in _TIME_FIELDS and exclusive_low and round(value * 1000) == 0:
            self.parser.fail(self.rule_id, name, "must be at least 1 ms")
            return None
        return float(value)

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.entry.get(name)
        if value is None:
            self.parser.fail(self.rule_id, name, "is required")
            return None
        if not _is_int(value) or not low <= value <= high:
            self.parser.fail(self.rule_id, name, f"must be an integer from {low} to {high}")
            return None
        return int(value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
