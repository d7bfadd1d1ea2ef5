"""Zones for ``zone_over`` rules (CONTRACT.md section 9): a GeoJSON FeatureCollection of
Polygons and MultiPolygons, each feature with a unique ``name`` property.

Point-in-polygon is shapely's (GEOS), on prepared geometries: ``intersects`` of a point and
a polygon is true inside and on the boundary (the contract: a point on the boundary is
inside), false in a hole. GeoJSON positions are ``[lon, lat]``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

# shapely (and numpy under it) is imported when zones are read, not when this module is:
# most flows have no zones, and the import costs ~0.2 s of every start.

MAX_ZONES = 10_000
_POLYGONAL = ("Polygon", "MultiPolygon")


class ZonesError(ValueError):
    """A zones document that is not what section 9 describes; the message names the feature."""


@dataclass(frozen=True, eq=False)
class Zone:
    name: str
    geometry: BaseGeometry
    _intersects_xy: Callable[..., Any]  # shapely.intersects_xy
    # (min lon, min lat, max lon, max lat): a point outside it is outside the zone. This test
    # costs ~0.1 us where shapely's ufunc costs ~3 us even for a far point (measured).
    bounds: tuple[float, float, float, float]

    # GEOS is not safe for concurrent first use of one geometry (libgeos/geos#825), and
    # shapely releases the GIL in the call: Bytewax's worker threads share a zone, so its
    # queries take turns (measured: two threads on fresh zones crashed 3 runs of 3 without).
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def contains(self, lat: float, lon: float) -> bool:
        """Inside or on the boundary."""
        min_lon, min_lat, max_lon, max_lat = self.bounds
        if lon < min_lon or lon > max_lon or lat < min_lat or lat > max_lat:
            return False
        with self._lock:
            return bool(self._intersects_xy(self.geometry, lon, lat))


@dataclass(frozen=True)
class Zones:
    by_name: Mapping[str, Zone]

    @classmethod
    def none(cls) -> Zones:
        return cls({})

    @classmethod
    def from_geojson(cls, document: Any) -> Zones:
        """Zones from a parsed GeoJSON document; ``ZonesError`` names what is wrong."""
        if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
            raise ZonesError("not a GeoJSON FeatureCollection")
        features = document.get("features")
        if not isinstance(features, list):
            raise ZonesError("'features' must be a list")
        if len(features) > MAX_ZONES:
            raise ZonesError(f"more than {MAX_ZONES} zones")
        zones: dict[str, Zone] = {}
        for position, feature in enumerate(features):
            zone = _zone(feature, position)
            if zone.name in zones:
                raise ZonesError(f"feature {position}: zone name {zone.name!r} is not unique")
            zones[zone.name] = zone
        return cls(zones)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Zone:
        return self.by_name[name]

    def names(self) -> list[str]:
        return sorted(self.by_name)

    def same_shapes(self, other: Zones) -> bool:
        """The same names with the same geometries (exactly: same coordinates)."""
        return self.by_name.keys() == other.by_name.keys() and all(
            zone.geometry.equals_exact(other.by_name[name].geometry, 0.0)
            for name, zone in self.by_name.items()
        )


def _zone(feature: Any, position: int) -> Zone:
    import shapely
    from shapely.geometry import shape

    where = f"feature {position}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ZonesError(f"{where}: not a GeoJSON Feature")
    properties = feature.get("properties")
    name = properties.get("name") if isinstance(properties, dict) else None
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise ZonesError(f"{where}: property 'name' must be a string of 1-128 chars")
    where = f"zone {name!r}"
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGONAL:
        raise ZonesError(f"{where}: geometry must be a Polygon or MultiPolygon")
    if not _finite_positions(geometry.get("coordinates")):
        raise ZonesError(f"{where}: coordinates must be finite [lon, lat] positions")
    try:
        polygon = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        raise ZonesError(f"{where}: {exc}") from None
    if polygon.is_empty or not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        raise ZonesError(f"{where}: not a valid polygon ({reason})")
    shapely.prepare(polygon)
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    return Zone(name, polygon, shapely.intersects_xy, (min_lon, min_lat, max_lon, max_lat))


def _finite_positions(coordinates: Any, depth: int = 0) -> bool:
    """Nested lists down to ``[lon, lat]`` pairs of finite numbers within range."""
    if not isinstance(coordinates, list) or not coordinates or depth > 3:
        return False
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in coordinates):
        try:  # an integer too large for a float overflows: no position either
            if len(coordinates) < 2 or not all(math.isfinite(c) for c in coordinates):
                return False
        except OverflowError:
            return False
        lon, lat = coordinates[0], coordinates[1]
        return bool(-180 <= lon <= 180 and -90 <= lat <= 90)
    return all(_finite_positions(c, depth + 1) for c in coordinates)
