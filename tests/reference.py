"""Plain references for CONTRACT.md section 4 and for section 9's rule catalogue, written from
the text and sharing no code with the product's rules: dedupe, sort, then walk each truck's
readings with lists. Slow and obvious on purpose."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs installed; safe_load gives Any anyway

from domain.readings import Reading
from domain.rules import RuleConfig

AlertKey = tuple[str, str, tuple[str, ...]]  # (rule, truck_id, covered event_ids)


def reference_alerts(readings: Iterable[Reading], config: RuleConfig) -> set[AlertKey]:
    by_truck: dict[str, dict[str, Reading]] = defaultdict(dict)
    for r in readings:
        by_truck[r.truck_id].setdefault(r.event_id, r)  # a duplicate is ignored
    alerts: set[AlertKey] = set()
    for truck, unique in by_truck.items():
        ordered = sorted(unique.values(), key=lambda r: (r.ts_ms, r.event_id))
        alerts |= _sustained(truck, ordered, config) | _instant(truck, ordered, config)
    return alerts


def _sustained(truck: str, ordered: list[Reading], config: RuleConfig) -> set[AlertKey]:
    alerts: set[AlertKey] = set()
    kept: list[Reading] = []
    cooldown_until = None
    for r in ordered:
        if cooldown_until is not None and r.ts_ms < cooldown_until:
            continue
        if cooldown_until is not None:
            cooldown_until, kept = None, []
        if not r.speed_kmh > config.threshold_kmh:
            continue
        kept = [v for v in kept if v.ts_ms >= r.ts_ms - config.window_ms] + [r]
        if len(kept) == config.violations:
            alerts.add(("sustained_speeding", truck, tuple(v.event_id for v in kept)))
            kept, cooldown_until = [], r.ts_ms + config.cooldown_ms
    return alerts


def _instant(truck: str, ordered: list[Reading], config: RuleConfig) -> set[AlertKey]:
    alerts: set[AlertKey] = set()
    cooldown_until = None
    for r in ordered:
        if r.speed_kmh > config.critical_kmh and (
            cooldown_until is None or r.ts_ms >= cooldown_until
        ):
            alerts.add(("instant_overspeed", truck, (r.event_id,)))
            cooldown_until = r.ts_ms + config.cooldown_ms
    return alerts


# --- The rule catalogue (CONTRACT.md section 9) ------------------------------------------
#
# Written from the contract's text, sharing no code with the product (domain/catalogue and
# shapely are not used): parse each YAML version, dedupe, sort each truck's readings by
# (ts_ms, event_id), then walk them once per rule with lists. Where the contract leaves room,
# these are the team's choices:
# - a rule judges a reading when the reading's version (the latest effective_from <= ts) holds
#   the rule and the truck is in the rule's scope; any other reading does not exist for that
#   rule ("consecutive" in duration_over and deceleration means adjacent among judged readings);
# - a reading in cooldown is not counted at all: it joins no set and no run, and it is no
#   deceleration's previous reading;
# - an alert consumes what it covers: the set, the run or the pair starts empty afterwards
#   (after a deceleration alert the next reading has no previous one), cooldown_s 0 included;
# - two readings with equal ts are never a deceleration pair, but the later one becomes the
#   previous reading of the next; a gap of 0 keeps a duration_over run;
# - times in seconds are converted to ms exactly (Fraction of the YAML literal), and an
#   effective_from with sub-millisecond digits applies from the next whole millisecond;
# - a zone_over naming a zone that FLEET_ZONES lacks never matches; a scope key with an empty
#   list matches no truck, an absent or null one every truck;
# - one function returns every alert with its details (reference_catalogue_details), the other
#   only the keys (reference_catalogue_alerts);
# - posted_limit_over (section 10): ``roads`` maps (truck_id, event_id) to the raw tags of the way
#   its reading was matched to (the project's road index may make that table; the limits
#   are parsed here, from the contract's text): the heavy-vehicle value for a heavy truck
#   when it parses, else maxspeed; a run as duration_over's, over = speed > limit +
#   max(over_kmh, limit * over_pct / 100); no way, or no limit: not over.

CatalogueAlertKey = tuple[str, int, str, tuple[str, ...], str]
"""(rule id, rule_version, truck_id, covered event_ids in event-time order, the rule's severity
in the version that judged the firing reading, ignoring the driver's risk tier)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "instant_over": ("speed_over_kmh",),
    "count_over": ("speed_over_kmh", "count", "within_s"),
    "duration_over": ("speed_over_kmh", "for_s", "max_gap_s"),
    "deceleration": ("drop_kmh", "within_s"),
    "zone_over": ("zone", "speed_over_kmh"),
    "posted_limit_over": ("over_kmh", "over_pct", "for_s", "max_gap_s"),
}
_DEFAULTS: dict[str, Any] = {"max_gap_s": 30, "over_kmh": 0, "over_pct": 0, "for_s": 0}


@dataclass(frozen=True)
class RoadTags:
    """The way a reading was matched to, as the extract tags it (section 10)."""

    osm_way_id: int
    name: str | None
    maxspeed: str | None
    maxspeed_hgv: str | None = None


# Section 10's table of country values, at least the contract's five (the product's table
# may hold more; tests use these).
_COUNTRY_KMH = {"FI:urban": 50, "FI:rural": 80, "FI:motorway": 120, "DE:urban": 50, "DE:rural": 100}

_Point = tuple[Fraction, Fraction]  # (x = lon, y = lat), exact
_Ring = list[_Point]
_Polygon = list[_Ring]  # the exterior ring, then the holes


@dataclass(frozen=True)
class _CatalogueRule:
    # Every field but severity, defaults filled in, scope lists as sets: two versions hold
    # "the same" rule exactly when these dicts are equal.
    definition: dict[str, Any]
    severity: str


@dataclass(frozen=True)
class _Version:
    number: int
    effective_ms: int
    rules: dict[str, _CatalogueRule]


@dataclass
class _RuleState:
    """One rule's state for one truck; a fresh one is the "empty" state of section 9."""

    cooldown_until: Fraction | None = None
    violations: list[Reading] = field(default_factory=list)  # count_over
    run: list[Reading] = field(default_factory=list)  # duration_over
    previous: Reading | None = None  # deceleration


def reference_catalogue_alerts(
    readings: Iterable[Reading],
    version_texts: Sequence[str],
    zones: Mapping[str, Any] | None = None,
    vehicle_classes: Mapping[str, str] | None = None,
    roads: Mapping[tuple[str, str], RoadTags] | None = None,
) -> set[CatalogueAlertKey]:
    """The alerts of section 9's catalogue (``version_texts``: one YAML file's text each)
    over ``readings``; ``zones`` is FLEET_ZONES' FeatureCollection, ``vehicle_classes`` maps
    truck_id to trucks.parquet's vehicle_class, ``roads`` a reading's (truck_id, event_id) to
    its matched way."""
    return set(reference_catalogue_details(readings, version_texts, zones, vehicle_classes, roads))


def reference_catalogue_details(
    readings: Iterable[Reading],
    version_texts: Sequence[str],
    zones: Mapping[str, Any] | None = None,
    vehicle_classes: Mapping[str, str] | None = None,
    roads: Mapping[tuple[str, str], RoadTags] | None = None,
) -> dict[CatalogueAlertKey, dict[str, Any]]:
    """The same alerts as ``reference_catalogue_alerts``, each with its kind's details:
    ``{"drop_kmh", "deceleration_ms2"}`` for deceleration (unrounded: compare with a
    tolerance), ``{"posted_limit_kmh", "road_name", "osm_way_id", "limit_source"}`` for
    posted_limit_over, ``{}`` for every other kind."""
    versions = sorted((_parse_version(text) for text in version_texts), key=_effective)
    if len({v.effective_ms for v in versions}) != len(versions):
        raise ValueError("two catalogue versions share an effective_from")
    if len({v.number for v in versions}) != len(versions):
        raise ValueError("two catalogue versions share a version number")
    shapes = _parse_zones(zones or {})
    classes = vehicle_classes or {}
    ways = roads or {}
    rule_ids = sorted({rule_id for v in versions for rule_id in v.rules})

    by_truck: dict[str, dict[str, Reading]] = defaultdict(dict)
    for r in readings:
        by_truck[r.truck_id].setdefault(r.event_id, r)  # a duplicate is ignored
    alerts: dict[CatalogueAlertKey, dict[str, float]] = {}
    for truck, unique in by_truck.items():
        ordered = sorted(unique.values(), key=lambda r: (r.ts_ms, r.event_id))
        for rule_id in rule_ids:
            limits = {
                r.event_id: _limit_of(ways.get((truck, r.event_id)), classes.get(truck) == "heavy")
                for r in ordered
            }
            alerts.update(_walk(rule_id, truck, ordered, versions, shapes, classes, limits))
    return alerts


def _effective(version: _Version) -> int:
    return version.effective_ms


def _walk(
    rule_id: str,
    truck: str,
    ordered: list[Reading],
    versions: list[_Version],
    shapes: dict[str, list[_Polygon]],
    classes: Mapping[str, str],
    limits: Mapping[str, _Limit | None],
) -> dict[CatalogueAlertKey, dict[str, Any]]:
    alerts: dict[CatalogueAlertKey, dict[str, Any]] = {}
    state = _RuleState()
    judged_by: int | None = None  # index (by effective_from) of the last judging version
    for r in ordered:
        index = _version_at(versions, r.ts_ms)
        if index is None:
            continue  # before the first version: no rule applies
        rule = versions[index].rules.get(rule_id)
        if rule is None or not _in_scope(rule.definition, truck, classes):
            continue  # not judged: as if this reading did not exist for this rule
        if judged_by is not None and not _unchanged(versions, rule_id, judged_by, index):
            state = _RuleState()  # a changed, removed or re-added rule starts empty
        judged_by = index
        covered = _judge(rule.definition, r, state, shapes, limits)
        if covered is None:
            continue
        key = (
            rule_id,
            versions[index].number,
            truck,
            tuple(c.event_id for c in covered),
            rule.severity,
        )
        alerts[key] = _details(rule.definition, covered, limits)
    return alerts


def _version_at(versions: list[_Version], ts_ms: int) -> int | None:
    found = None
    for index, version in enumerate(versions):
        if version.effective_ms <= ts_ms:
            found = index
    return found


def _unchanged(versions: list[_Version], rule_id: str, first: int, last: int) -> bool:
    """Is the rule's definition the same in every version from ``first`` to ``last``?"""
    definition = versions[first].rules[rule_id].definition
    for version in versions[first : last + 1]:
        rule = version.rules.get(rule_id)
        if rule is None or rule.definition != definition:
            return False
    return True


def _in_scope(definition: dict[str, Any], truck: str, classes: Mapping[str, str]) -> bool:
    patterns = definition["trucks"]
    if patterns is not None and not any(fnmatch.fnmatchcase(truck, p) for p in patterns):
        return False
    wanted = definition["vehicle_classes"]
    return wanted is None or classes.get(truck) in wanted


def _judge(
    definition: dict[str, Any],
    r: Reading,
    state: _RuleState,
    shapes: dict[str, list[_Polygon]],
    limits: Mapping[str, _Limit | None],
) -> list[Reading] | None:
    """Feed one judged reading to the rule; the covered readings when it fires."""
    if state.cooldown_until is not None and r.ts_ms < state.cooldown_until:
        return None  # in cooldown: not counted at all
    kind = definition["kind"]
    covered: list[Reading] | None = None
    if kind == "instant_over":
        if r.speed_kmh > definition["speed_over_kmh"]:
            covered = [r]
    elif kind == "zone_over":
        if (
            r.lat is not None
            and r.lon is not None
            and r.speed_kmh > definition["speed_over_kmh"]
            and _in_zone(shapes.get(definition["zone"], []), r.lon, r.lat)
        ):
            covered = [r]
    elif kind == "count_over":
        if r.speed_kmh > definition["speed_over_kmh"]:
            oldest_kept = r.ts_ms - _ms(definition["within_s"])
            state.violations = [v for v in state.violations if v.ts_ms >= oldest_kept] + [r]
            if len(state.violations) == definition["count"]:
                covered = state.violations
    elif kind in ("duration_over", "posted_limit_over"):
        if kind == "duration_over":
            over = r.speed_kmh > definition["speed_over_kmh"]
        else:
            limit = limits.get(r.event_id)
            over = limit is not None and r.speed_kmh > limit.kmh + max(
                definition["over_kmh"], limit.kmh * definition["over_pct"] / 100
            )
        if not over:
            state.run = []
        else:
            if state.run and r.ts_ms - state.run[-1].ts_ms > _ms(definition["max_gap_s"]):
                state.run = []
            state.run = [*state.run, r]
            if r.ts_ms - state.run[0].ts_ms >= _ms(definition["for_s"]):
                covered = state.run
    elif kind == "deceleration":
        previous, state.previous = state.previous, r
        if (
            previous is not None
            and 0 < r.ts_ms - previous.ts_ms <= _ms(definition["within_s"])
            and previous.speed_kmh - r.speed_kmh >= definition["drop_kmh"]
        ):
            covered = [previous, r]
    if covered is not None:
        # The alert consumes what it covers; then cooldown from its window_end.
        state.violations, state.run, state.previous = [], [], None
        state.cooldown_until = r.ts_ms + _ms(definition["cooldown_s"])
    return covered


def _details(
    definition: dict[str, Any], covered: list[Reading], limits: Mapping[str, _Limit | None]
) -> dict[str, Any]:
    if definition["kind"] == "posted_limit_over":
        limit = limits[covered[-1].event_id]
        assert limit is not None
        return {
            "posted_limit_kmh": limit.kmh,
            "road_name": limit.road.name,
            "osm_way_id": limit.road.osm_way_id,
            "limit_source": limit.source,
        }
    if definition["kind"] != "deceleration":
        return {}
    r1, r2 = covered
    drop = r1.speed_kmh - r2.speed_kmh
    return {"drop_kmh": drop, "deceleration_ms2": (drop / 3.6) / ((r2.ts_ms - r1.ts_ms) / 1000)}


@dataclass(frozen=True)
class _Limit:
    kmh: float
    source: str
    road: RoadTags


def _limit_of(road: RoadTags | None, heavy: bool) -> _Limit | None:
    """Section 10: the hgv value for a heavy truck when it parses, else maxspeed."""
    if road is None:
        return None
    if heavy:
        hgv = _kmh(road.maxspeed_hgv)
        if hgv is not None:
            return _Limit(hgv[0], "hgv", road)
    general = _kmh(road.maxspeed)
    return None if general is None else _Limit(general[0], general[1], road)


def _kmh(value: str | None) -> tuple[float, str] | None:
    """A maxspeed value in km/h and its source (maxspeed or implicit), or None."""
    if value is None:
        return None
    text = value.strip()
    if text in _COUNTRY_KMH:
        return float(_COUNTRY_KMH[text]), "implicit"
    unit = 1.0
    for suffix, factor in (("km/h", 1.0), ("mph", 1.609344)):
        if text.endswith(suffix):
            text, unit = text[: -len(suffix)].strip(), factor
            break
    if not text or not all(c.isdigit() or c == "." for c in text) or text.count(".") > 1:
        return None
    if text.startswith(".") or text.endswith("."):
        return None
    kmh = float(text) * unit
    return (kmh, "maxspeed") if kmh > 0 else None


def _ms(seconds: Any) -> Fraction:
    """Seconds as written in the YAML, in exact milliseconds (0.1 s is 100 ms, not 100.000...01)."""
    return Fraction(str(seconds)) * 1000


# --- Parsing the catalogue and the zones ----------------------------------------------------


def _parse_version(text: str) -> _Version:
    document = yaml.safe_load(text)
    rules: dict[str, _CatalogueRule] = {}
    for raw in document.get("rules") or []:
        rule = _parse_rule(raw)
        if rule.definition["id"] in rules:
            raise ValueError(f"rule {rule.definition['id']!r} twice in one version")
        rules[rule.definition["id"]] = rule
    return _Version(int(document["version"]), _epoch_ms(document["effective_from"]), rules)


def _parse_rule(raw: Mapping[str, Any]) -> _CatalogueRule:
    kind = raw["kind"]
    if kind not in _PARAMETERS:
        raise ValueError(f"the reference does not implement kind {kind!r}")
    definition: dict[str, Any] = {
        "id": raw["id"],
        "kind": kind,
        "cooldown_s": raw.get("cooldown_s", 600),
    }
    for name in _PARAMETERS[kind]:
        if name not in raw and name not in _DEFAULTS:
            raise ValueError(f"rule {raw['id']!r} lacks {name!r}")
        definition[name] = raw.get(name, _DEFAULTS.get(name))
    scope = raw.get("scope") or {}
    for key in ("trucks", "vehicle_classes"):
        definition[key] = None if scope.get(key) is None else frozenset(scope[key])
    return _CatalogueRule(definition, raw.get("severity", "warning"))


def _epoch_ms(value: Any) -> int:
    """effective_from as YAML gives it (aware or naive-UTC datetime, date, RFC 3339 string) in
    epoch ms, rounded up: the first whole millisecond at or after it."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        raise ValueError(f"effective_from {value!r} is not a date-time")
    return -((_EPOCH - moment) // timedelta(milliseconds=1))


def _parse_zones(collection: Mapping[str, Any]) -> dict[str, list[_Polygon]]:
    shapes: dict[str, list[_Polygon]] = {}
    for feature in collection.get("features", []):
        name = feature["properties"]["name"]
        geometry = feature["geometry"]
        if name in shapes:
            raise ValueError(f"zone {name!r} twice")
        if geometry["type"] == "Polygon":
            polygons = [geometry["coordinates"]]
        elif geometry["type"] == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            raise ValueError(f"zone {name!r} is a {geometry['type']}")
        shapes[name] = [
            [[(Fraction(x), Fraction(y)) for x, y, *_ in ring] for ring in polygon]
            for polygon in polygons
        ]
    return shapes


# --- Point in polygon, exactly (Fractions of the given floats) ----------------------------


def _in_zone(polygons: list[_Polygon], lon: float, lat: float) -> bool:
    point = (Fraction(lon), Fraction(lat))
    return any(_in_polygon(polygon, point) for polygon in polygons)


def _in_polygon(polygon: _Polygon, point: _Point) -> bool:
    """Inside the exterior ring and in no hole; any ring's boundary (a hole's too) is inside."""
    if any(_on_ring(ring, point) for ring in polygon):
        return True
    exterior, holes = polygon[0], polygon[1:]
    return _inside_ring(exterior, point) and not any(_inside_ring(h, point) for h in holes)


def _edges(ring: _Ring) -> list[tuple[_Point, _Point]]:
    # GeoJSON rings repeat their first point at the end; the closing edge is then empty.
    return [(ring[i], ring[(i + 1) % len(ring)]) for i in range(len(ring))]


def _on_ring(ring: _Ring, point: _Point) -> bool:
    px, py = point
    for (ax, ay), (bx, by) in _edges(ring):
        collinear = (bx - ax) * (py - ay) - (by - ay) * (px - ax) == 0
        if collinear and min(ax, bx) <= px <= max(ax, bx) and min(ay, by) <= py <= max(ay, by):
            return True
    return False


def _inside_ring(ring: _Ring, point: _Point) -> bool:
    """Even-odd rule, a ray from the point towards +x (the point is not on the ring)."""
    px, py = point
    inside = False
    for (ax, ay), (bx, by) in _edges(ring):
        if (ay > py) != (by > py):
            crossing_x = ax + (py - ay) * (bx - ax) / (by - ay)
            if px < crossing_x:
                inside = not inside
    return inside
