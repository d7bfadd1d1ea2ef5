"""The road index (CONTRACT.md section 10): the Helsinki extract read and matched against
with GPS noise, distances in true metres, the match distance inclusive, ties by way id, the
cache on disk, and the errors that name the extract. Small extracts are written with
pyosmium's SimpleWriter."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import osmium
import pytest
import shapely
from pyproj import Geod, Transformer

from connectors import roads
from connectors.roads import (
    RoadIndex,
    RoadsError,
    RoadWay,
    WayLines,
    cache_path,
    default_extract,
    load_road_index,
    read_ways,
)
from domain.speed_limits import PostedLimit

GEOD = Geod(ellps="WGS84")
NOISE_M = 3.0  # per axis: a GPS fix is typically within 3-5 m
SAMPLES = 20_000
D = 2.0**-10  # degrees; binary-exact, so a midpoint is exactly in the middle


@pytest.fixture(scope="session")
def helsinki_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roads-cache")


@pytest.fixture(scope="session")
def helsinki(helsinki_cache: Path) -> RoadIndex:
    return load_road_index(default_extract(), helsinki_cache)


@pytest.fixture(scope="session")
def helsinki_ways() -> list[tuple[RoadWay, WayLines]]:
    return read_ways(default_extract())


def write_extract(
    path: Path,
    nodes: dict[int, tuple[float, float]],
    ways: Sequence[tuple[int, list[int], dict[str, str]]],
) -> Path:
    """An extract with these nodes (id: (lat, lon)) and ways (id, node ids, tags)."""
    with osmium.SimpleWriter(str(path)) as writer:
        for node_id, (lat, lon) in sorted(nodes.items()):
            writer.add_node(osmium.osm.mutable.Node(id=node_id, location=(lon, lat)))
        for way_id, refs, tags in sorted(ways, key=lambda w: w[0]):
            writer.add_way(osmium.osm.mutable.Way(id=way_id, nodes=refs, tags=tags))
    return path


def two_parallel_ways(path: Path, west_id: int, east_id: int) -> Path:
    """Two north-south ways 2*D of longitude apart, symmetric about lon 25 (the centre of
    the projection, so the two are exactly as far from a point on it)."""
    nodes = {1: (60.0, 25 - D), 2: (60.001, 25 - D), 3: (60.0, 25 + D), 4: (60.001, 25 + D)}
    ways = [
        (west_id, [1, 2], {"highway": "primary", "name": "West", "maxspeed": "FI:urban"}),
        (east_id, [3, 4], {"highway": "residential", "maxspeed": "30", "maxspeed:hgv": "20"}),
    ]
    return write_extract(path, nodes, ways)


def match_one(index: RoadIndex, lat: float, lon: float, max_m: float) -> tuple[int, float]:
    way, distance = index.match(np.array([lat]), np.array([lon]), max_m)
    return int(way[0]), float(distance[0])


# -- the Helsinki extract -------------------------------------------------------------------


def test_the_helsinki_extract_has_roads_with_limits(helsinki: RoadIndex) -> None:
    assert len(helsinki.ways) > 900
    assert len(helsinki) > 2000
    ids = [w.osm_way_id for w in helsinki.ways]
    assert len(set(ids)) == len(ids)
    assert sum(w.limit is not None for w in helsinki.ways) > 700
    assert {w.limit.kmh for w in helsinki.ways if w.limit} >= {30.0, 40.0}
    assert any(w.road_name for w in helsinki.ways)


def sample_along_ways(
    ways: list[tuple[RoadWay, WayLines]], n: int, seed: int, noise_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` positions on segments of the ways (each segment as likely as its length), moved
    by GPS noise: (lats, lons, the way ids they were taken from)."""
    starts, ends, owner = [], [], []
    for way, lines in ways:
        for line in lines:
            for a, b in itertools.pairwise(line):
                starts.append(a)
                ends.append(b)
                owner.append(way.osm_way_id)
    start, end = np.array(starts), np.array(ends)
    lengths = GEOD.inv(start[:, 1], start[:, 0], end[:, 1], end[:, 0])[2]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(start), size=n, p=lengths / lengths.sum())
    along = rng.random(n)[:, None]
    true = start[chosen] + along * (end[chosen] - start[chosen])  # (lat, lon)
    east, north = rng.normal(0, noise_m, n), rng.normal(0, noise_m, n)
    azimuth = np.degrees(np.arctan2(east, north))
    lons, lats, _ = GEOD.fwd(true[:, 1], true[:, 0], azimuth, np.hypot(east, north))
    return np.asarray(lats), np.asarray(lons), np.array(owner)[chosen]


def clearance_m(
    ways: list[tuple[RoadWay, WayLines]], lats: np.ndarray, lons: np.ndarray, source: np.ndarray
) -> np.ndarray:
    """How far each position is from the nearest way other than its source, up to 40 m, in
    UTM zone 35N (independent of the index's projection)."""
    utm = Transformer.from_crs("EPSG:4326", "EPSG:32635", always_xy=True)
    lines, owner = [], []
    for way, runs in ways:
        for run in runs:
            if len(run) >= 2:
                lat, lon = np.array(run).T
                lines.append(shapely.linestrings(np.column_stack(utm.transform(lon, lat))))
                owner.append(way.osm_way_id)
    points = shapely.points(np.column_stack(utm.transform(lons, lats)))
    at, near = shapely.STRtree(lines).query(points, predicate="dwithin", distance=40.0)
    other = np.array(owner)[near] != source[at]
    clearance = np.full(len(points), 40.0)
    np.minimum.at(
        clearance, at[other], shapely.distance(points[at[other]], np.array(lines)[near[other]])
    )
    return clearance


def test_noisy_positions_along_ways_map_back_to_their_way(
    helsinki: RoadIndex, helsinki_ways: list[tuple[RoadWay, WayLines]]
) -> None:
    """Nearest-segment matching of single positions, in a dense city centre: the figures of
    docs/roads.md. Without noise every position maps back to its way; with 3 m per axis a
    position near a junction or beside a service road is often nearer another way (that is
    what it measured), so the 99 % holds for positions 8 m or more from any other way."""
    ids = np.array([w.osm_way_id for w in helsinki.ways])
    exact_lats, exact_lons, source = sample_along_ways(helsinki_ways, SAMPLES, 18, noise_m=0.0)
    way, _ = helsinki.match(exact_lats, exact_lons, 20.0)
    assert np.mean(ids[way] == source) >= 0.999

    lats, lons, noisy_source = sample_along_ways(helsinki_ways, SAMPLES, 18, noise_m=NOISE_M)
    assert (noisy_source == source).all()
    way, distance = helsinki.match(lats, lons, 20.0)
    assert np.all(way >= 0)
    assert np.all(distance <= 20.0)
    right = ids[way] == source
    clear = clearance_m(helsinki_ways, exact_lats, exact_lons, source) >= 8.0
    assert clear.mean() > 0.3
    assert right[clear].mean() >= 0.99, f"{right[clear].mean():.2%} with 8 m of clearance"
    assert right.mean() >= 0.78, f"{right.mean():.2%} of all positions"


def test_the_match_distance_is_inclusive(helsinki: RoadIndex) -> None:
    lat, lon = 60.1700, 24.9400
    way, distance = match_one(helsinki, lat, lon, 500.0)
    assert way >= 0
    assert match_one(helsinki, lat, lon, distance) == (way, distance)
    assert match_one(helsinki, lat, lon, distance * 0.999) == (
        -1,
        pytest.approx(np.nan, nan_ok=True),
    )


def test_far_and_missing_positions_have_no_road(helsinki: RoadIndex) -> None:
    lats = np.array([59.0, 60.17, np.nan, 60.17, np.inf])
    lons = np.array([24.9, 25.9, 24.94, np.nan, 24.94])
    way, distance = helsinki.match(lats, lons, 20.0)
    assert way.tolist() == [-1] * 5
    assert np.isnan(distance).all()
    empty_way, empty_distance = helsinki.match(np.array([]), np.array([]), 20.0)
    assert len(empty_way) == len(empty_distance) == 0


@pytest.mark.parametrize("max_m", [0.0, -1.0, float("nan"), float("inf")])
def test_the_match_distance_must_be_positive(helsinki: RoadIndex, max_m: float) -> None:
    with pytest.raises(ValueError, match="max_m"):
        helsinki.match(np.array([60.17]), np.array([24.94]), max_m)


# -- metres, ties, geometry ---------------------------------------------------------------


def test_distances_are_true_metres_away_from_the_centre() -> None:
    """Two ways 0.8 degrees of longitude apart (~45 km): the projection's centre is between
    them; a point 15 m east of each (on the ellipsoid) is 15 m from it in the index too (Web
    Mercator would say ~30 m at this latitude)."""
    west = RoadWay.of(1)
    east = RoadWay.of(2)
    index = RoadIndex.from_ways(
        [(west, [[(60.0, 24.5), (60.01, 24.5)]]), (east, [[(60.0, 25.3), (60.01, 25.3)]])]
    )
    for way, lon in ((0, 24.5), (1, 25.3)):
        east_lon, east_lat, _ = GEOD.fwd(lon, 60.005, 90.0, 15.0)
        assert match_one(index, east_lat, east_lon, 20.0) == (way, pytest.approx(15.0, abs=0.01))


@pytest.mark.parametrize(("west_id", "east_id"), [(3, 7), (7, 3)])
def test_a_tie_goes_to_the_smaller_way_id(tmp_path: Path, west_id: int, east_id: int) -> None:
    index = load_road_index(two_parallel_ways(tmp_path / "two.osm.pbf", west_id, east_id), None)
    assert index.centre[1] == 25.0
    way, distance = index.match(np.full(3, 60.0005), np.full(3, 25.0), 60.0)
    assert index.ways[way[0]].osm_way_id == 3
    assert way.tolist() == [way[0]] * 3
    assert distance[0] == pytest.approx(54.5, abs=0.1)
    # A true tie: a hair (1e-9 degrees, 0.06 mm) towards the larger id, and that one wins.
    larger = next(i for i, w in enumerate(index.ways) if w.osm_way_id == 7)
    towards = 1e-9 if east_id == 7 else -1e-9
    assert match_one(index, 60.0005, 25.0 + towards, 60.0)[0] == larger


def test_tags_and_limits_of_a_matched_way(tmp_path: Path) -> None:
    index = load_road_index(two_parallel_ways(tmp_path / "two.osm.pbf", 3, 7), None)
    west, _ = match_one(index, 60.0005, 25 - D, 1.0)
    east, _ = match_one(index, 60.0005, 25 + D, 1.0)
    assert index.ways[west] == RoadWay(
        3, "West", "FI:urban", None, PostedLimit(50.0, "implicit"), PostedLimit(50.0, "implicit")
    )
    assert index.ways[east].road_name is None
    assert index.ways[east].limit_for("light") == PostedLimit(30.0, "maxspeed")
    assert index.ways[east].limit_for("heavy") == PostedLimit(20.0, "hgv")


def test_a_way_is_broken_where_a_node_is_missing(tmp_path: Path) -> None:
    """Node 3 is not in the extract: no segment from node 2 to node 4 stands in for it."""
    nodes = {1: (60.0, 25.0), 2: (60.001, 25.0), 4: (60.003, 25.0), 5: (60.004, 25.0)}
    extract = write_extract(
        tmp_path / "gap.osm.pbf", nodes, [(9, [1, 2, 3, 4, 5], {"highway": "road"})]
    )
    index = load_road_index(extract, None)
    assert len(index) == 2
    assert match_one(index, 60.0005, 25.0, 5.0)[0] == 0
    assert match_one(index, 60.002, 25.0, 5.0)[0] == -1  # ~111 m from both pieces


def test_only_drivable_ways_are_kept(tmp_path: Path) -> None:
    nodes = {i: (60.0 + i * 0.001, 25.0 + (i % 2) * 0.001) for i in range(1, 9)}
    ways = [
        (1, [1, 2], {"highway": "service"}),
        (2, [3, 4], {"highway": "footway", "maxspeed": "10"}),
        (3, [5, 6, 7, 5], {"highway": "service", "area": "yes"}),
        (4, [7, 8], {"building": "yes"}),
    ]
    index = load_road_index(write_extract(tmp_path / "mixed.osm.pbf", nodes, ways), None)
    assert [w.osm_way_id for w in index.ways] == [1]


# -- the cache ------------------------------------------------------------------------------


def test_the_cache_is_used_on_the_next_load(
    helsinki: RoadIndex, helsinki_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = cache_path(default_extract(), helsinki_cache)
    assert cached.is_file()
    assert not list(helsinki_cache.glob("*.tmp"))

    def no_reading(extract: Path) -> list[tuple[RoadWay, WayLines]]:
        raise AssertionError("the extract was read again")

    monkeypatch.setattr(roads, "read_ways", no_reading)
    started = time.perf_counter()
    again = load_road_index(default_extract(), helsinki_cache)
    loaded_s = time.perf_counter() - started
    assert again.ways == helsinki.ways
    assert again.centre == helsinki.centre
    lats, lons = np.linspace(60.15, 60.19, 500), np.linspace(24.90, 24.98, 500)
    for got, want in zip(
        again.match(lats, lons, 50.0), helsinki.match(lats, lons, 50.0), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert loaded_s < 0.5, f"the cached load took {loaded_s:.2f} s"


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a zip", b"PK\x03\x04 truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_a_corrupt_cache_is_rebuilt(tmp_path: Path, damage: bytes) -> None:
    extract = two_parallel_ways(tmp_path / "two.osm.pbf", 3, 7)
    cached = cache_path(extract, tmp_path / "cache")
    first = load_road_index(extract, tmp_path / "cache")
    cached.write_bytes(damage)
    rebuilt = load_road_index(extract, tmp_path / "cache")
    assert rebuilt.ways == first.ways
    assert cached.stat().st_size > 100
    assert load_road_index(extract, tmp_path / "cache").ways == first.ways


def test_a_cache_of_another_format_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extract = two_parallel_ways(tmp_path / "two.osm.pbf", 3, 7)
    load_road_index(extract, tmp_path)
    monkeypatch.setattr(roads, "CACHE_FORMAT", roads.CACHE_FORMAT + 1)
    old = tmp_path / f"{roads.extract_digest(extract)}-v{roads.CACHE_FORMAT - 1}.npz"
    old.rename(cache_path(extract, tmp_path))  # an old file where the new one is looked for
    assert len(load_road_index(extract, tmp_path).ways) == 2


def test_a_cache_directory_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    extract = two_parallel_ways(tmp_path / "two.osm.pbf", 3, 7)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert len(load_road_index(extract, blocker / "cache").ways) == 2


# -- errors ---------------------------------------------------------------------------------


@pytest.fixture
def errors_name(tmp_path: Path) -> Path:
    return tmp_path / "region.osm.pbf"


def test_a_missing_extract_is_named(errors_name: Path) -> None:
    with pytest.raises(RoadsError, match=str(errors_name)):
        load_road_index(errors_name, errors_name.parent)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a protobuf", bytes(range(256)) * 10],
    ids=["empty", "text", "bytes"],
)
def test_a_corrupt_extract_is_named(errors_name: Path, content: bytes) -> None:
    errors_name.write_bytes(content)
    with pytest.raises(RoadsError, match=str(errors_name)):
        load_road_index(errors_name, None)


def test_an_extract_without_roads_is_named(errors_name: Path) -> None:
    nodes = {1: (60.0, 25.0), 2: (60.001, 25.0)}
    write_extract(errors_name, nodes, [(1, [1, 2], {"highway": "footway"})])
    with pytest.raises(RoadsError, match=f"{errors_name} has no drivable ways"):
        load_road_index(errors_name, None)
