"""The road fleet (devtools/road_fleet.py) drives on the roads of the Helsinki extract, at the
speeds its model gives, and is the same for the same seed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np
import pytest
from pyproj import Geod

from connectors.roads import RoadIndex, RoadWay, default_extract, load_road_index
from devtools.road_fleet import (
    DEFAULT_LIMIT_KMH,
    GPS_CUT_SIGMAS,
    GPS_SIGMA_M,
    Habit,
    RoadFleetOptions,
    RoadFleetSimulator,
    RoadNetwork,
    Truth,
    metres_per_degree,
)
from devtools.simulator import FleetConfig, SimulatedMessage
from domain.dead_letters import Reason
from domain.readings import Reading, Rejection, _validate_payload, truck_id_from_topic
from domain.timestamps import to_epoch_ms

START_MS = to_epoch_ms(datetime(2026, 12, 1, 9, tzinfo=UTC))
TRUCKS = 30
DRIVE_S = 900  # each truck's readings: 15 minutes at 1 Hz
GPS_BOUND_M = GPS_CUT_SIGMAS * GPS_SIGMA_M  # 10 m
GEOD = Geod(ellps="WGS84")
Row = tuple[Reading, Truth]


@pytest.fixture(scope="module")
def network() -> RoadNetwork:
    return RoadNetwork.load()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> RoadIndex:
    return load_road_index(default_extract(), tmp_path_factory.mktemp("roads-cache"))


def config(
    seed: int = 3,
    bad_share: float = 0.0,
    resend_share: float = 0.0,
    disorder_s: float = 0.0,
    spike_chance: float = 0.0002,
) -> FleetConfig:
    return FleetConfig(
        trucks=TRUCKS,
        seed=seed,
        start_ms=START_MS,
        interval_s=1.0,
        bad_share=bad_share,
        resend_share=resend_share,
        disorder_s=disorder_s,
        spike_chance=spike_chance,
    )


def simulate(
    network: RoadNetwork, fleet_config: FleetConfig, count: int = TRUCKS * DRIVE_S
) -> tuple[RoadFleetSimulator, list[SimulatedMessage]]:
    fleet = RoadFleetSimulator(fleet_config, RoadFleetOptions(keep_truth=True), network)
    return fleet, list(fleet.messages(count))


@pytest.fixture(scope="module")
def drive(network: RoadNetwork) -> tuple[RoadFleetSimulator, dict[str, list[Row]]]:
    """A fault-free fleet without glitches: each truck's readings in ts order, with what it
    really did."""
    fleet, messages = simulate(network, config(spike_chance=0.0))
    by_truck: dict[str, list[Row]] = defaultdict(list)
    for message in messages:
        assert message.reading is not None
        reading = message.reading
        by_truck[reading.truck_id].append((reading, fleet.truth[reading.event_id]))
    for rows in by_truck.values():
        rows.sort(key=lambda row: row[0].ts_ms)
    return fleet, by_truck


def rows_of(drive: dict[str, list[Row]], keep: Callable[[Truth], bool]) -> list[Row]:
    return [row for rows in drive.values() for row in rows if keep(row[1])]


def limit(way: RoadWay) -> float:
    posted = way.limit_for(None)
    return posted.kmh if posted is not None else DEFAULT_LIMIT_KMH


def metres(lat0: float, lon0: float, lat1: float, lon1: float) -> float:
    return float(GEOD.inv(lon0, lat0, lon1, lat1)[2])


# --- Determinism and faults --------------------------------------------------------------


def test_same_seed_same_messages(network: RoadNetwork) -> None:
    _, first = simulate(network, config(3, 0.03, 0.02, 2.0), 3_000)
    _, again = simulate(network, config(3, 0.03, 0.02, 2.0), 3_000)
    _, other = simulate(network, config(4, 0.03, 0.02, 2.0), 3_000)
    assert first == again
    assert [m.payload for m in other] != [m.payload for m in first]


def test_the_faults_are_the_simulators_and_validate_as_it_says(network: RoadNetwork) -> None:
    _, messages = simulate(network, config(bad_share=0.05, resend_share=0.03), 6_000)
    reasons = set()
    for message in messages:
        topic_truck = truck_id_from_topic(message.topic, "fleet/+/telemetry")
        outcome: Reading | Rejection = _validate_payload(message.payload, topic_truck, None)
        if message.reading is None:
            assert isinstance(outcome, Rejection)
            reasons.add(outcome.reason)
        else:
            assert outcome == message.reading
    assert Reason.SCHEMA in reasons
    assert sum(m.is_resend for m in messages) > 50


def test_a_trucks_drive_does_not_depend_on_the_faults_around_it(network: RoadNetwork) -> None:
    """The motion has its own generator per truck: bad payloads elsewhere move nobody."""
    fleet, _ = simulate(network, config(spike_chance=0.0), 3_000)
    faulty, _ = simulate(network, config(bad_share=0.1, spike_chance=0.0), 3_000)
    assert fleet.habits() == faulty.habits()
    speeds = {
        (t.lat, t.lon, t.speed_kmh) for e, t in fleet.truth.items() if e.startswith("T00001-")
    }
    faulty_speeds = {
        (t.lat, t.lon, t.speed_kmh) for e, t in faulty.truth.items() if e.startswith("T00001-")
    }
    # T00001's readings in the faulty run (a few rounds were bad payloads) are ones it had.
    assert faulty_speeds
    assert len(faulty_speeds - speeds) <= len(faulty_speeds) // 10


# --- On the roads ------------------------------------------------------------------------


def test_every_position_is_within_gps_noise_of_a_road(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]], index: RoadIndex
) -> None:
    rows = [row for rows in drive[1].values() for row in rows if row[0].lat is not None]
    lats = np.array([r.lat for r, _ in rows], dtype=np.float64)
    lons = np.array([r.lon for r, _ in rows], dtype=np.float64)
    way, distance = index.match(lats, lons, max_m=15.0)
    assert (way >= 0).all(), "a position more than 15 m from every road"
    assert float(distance.max()) <= GPS_BOUND_M + 0.5  # + rounding to 6 decimals
    # And mostly on the way the truck was really on: not always, as at a crossing, where a
    # street's next way begins, or beside the other carriageway, another way can be nearer.
    # Nearly always one with the same limit, which is what the posted-limit rules read.
    matched = [index.ways[w] for w in way]
    truths = [t for _, t in rows]
    assert (
        np.mean([m.osm_way_id == t.way.osm_way_id for m, t in zip(matched, truths, strict=True)])
        > 0.75
    )
    assert (
        np.mean([m.road_name == t.way.road_name for m, t in zip(matched, truths, strict=True)])
        > 0.88
    )
    assert np.mean([limit(m) == t.limit_kmh for m, t in zip(matched, truths, strict=True)]) > 0.93


def test_gps_noise_is_a_few_metres_in_both_directions(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]],
) -> None:
    """Metres become degrees at the latitude: east is as noisy as north (a degree of
    longitude is half as long at 60 N)."""
    rows = [row for rows in drive[1].values() for row in rows if row[0].lat is not None]
    north = [(r.lat - t.lat) * metres_per_degree(t.lat)[0] for r, t in rows if r.lat]
    east = [(r.lon - t.lon) * metres_per_degree(t.lat)[1] for r, t in rows if r.lon]
    for offsets in (north, east):
        assert 0.8 * GPS_SIGMA_M < float(np.std(offsets)) < 1.2 * GPS_SIGMA_M
        assert abs(float(np.mean(offsets))) < 0.2
    assert sum(r.lat is None for rows in drive[1].values() for r, _ in rows) > 0  # no fix


def test_metres_per_degree_is_the_ellipsoids() -> None:
    for lat in (0.0, 45.0, 60.17):
        per_lat, per_lon = metres_per_degree(lat)
        assert per_lat == pytest.approx(metres(lat - 0.005, 24.9, lat + 0.005, 24.9) * 100, 1e-4)
        assert per_lon == pytest.approx(metres(lat, 24.895, lat, 24.905) * 100, 1e-4)


def test_trucks_move_as_fast_as_they_report(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]],
) -> None:
    """Between two readings a truck covers about its mean speed times the second, and the
    noisy positions are never further apart than that and the noise allow."""
    driven = reported = 0.0
    for rows in drive[1].values():
        for (r0, t0), (r1, t1) in pairwise(rows):
            step = metres(t0.lat, t0.lon, t1.lat, t1.lon)
            driven += step
            reported += (t0.speed_kmh + t1.speed_kmh) / 2 / 3.6
            assert step <= max(t0.speed_kmh, t1.speed_kmh) / 3.6 + 0.5
            if r0.lat is not None and r1.lat is not None:
                assert r0.lon is not None
                assert r1.lon is not None
                noisy = metres(r0.lat, r0.lon, r1.lat, r1.lon)
                assert noisy <= step + 2 * GPS_BOUND_M + 0.5
    assert driven > TRUCKS * 3_000  # they do drive: over 3 km each in 15 minutes
    # Chords cut corners, so a little less than the speeds say.
    assert 0.95 < driven / reported <= 1.0 + 1e-6


def test_trucks_leave_their_depot_visit_customers_and_come_back(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]],
) -> None:
    fleet, by_truck = drive
    depots = set(fleet.depots())
    back = 0
    for rows in by_truck.values():
        first = (rows[0][1].lat, rows[0][1].lon)
        assert first in depots
        stops = {
            (t.lat, t.lon)
            for (_, t), (_, later) in zip(rows, rows[5:], strict=False)
            if t.speed_kmh == 0
            and later.speed_kmh == 0
            and (t.lat, t.lon) == (later.lat, later.lon)
        }
        assert len(stops - depots) >= 2  # waited at two customers at least
        left = next(i for i, (_, t) in enumerate(rows) if (t.lat, t.lon) != first)
        back += any((t.lat, t.lon) == first for _, t in rows[left:])
    assert back > TRUCKS // 2


# --- The speed model ---------------------------------------------------------------------


def moving(habit: Habit) -> Callable[[Truth], bool]:
    return lambda t: t.habit is habit and t.speed_kmh > 0


def test_careful_drivers_never_exceed_the_limit(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]],
) -> None:
    rows = rows_of(drive[1], moving(Habit.CAREFUL))
    assert len(rows) > 1_000
    assert all(t.speed_kmh <= t.limit_kmh + 0.05 for _, t in rows)
    assert all(r.speed_kmh == t.speed_kmh for r, t in rows)  # no glitch in this fleet


@pytest.mark.parametrize(
    ("habit", "speeds_on", "others_at_least"),
    [
        (Habit.FAST_ROAD_SPEEDER, lambda limit: limit >= 40, 200),
        # Town streets are nearly every road of central Helsinki (one way is limited to 50).
        (Habit.TOWN_SPEEDER, lambda limit: limit <= 40, 0),
    ],
)
def test_speeders_speed_on_their_roads_only(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]],
    habit: Habit,
    speeds_on: Callable[[float], bool],
    others_at_least: int,
) -> None:
    rows = rows_of(drive[1], moving(habit))
    theirs = [t for _, t in rows if speeds_on(t.limit_kmh)]
    others = [t for _, t in rows if not speeds_on(t.limit_kmh)]
    assert len(theirs) > 200
    assert len(others) >= others_at_least
    # 20-60 % over, where they drive at cruising speed (not pulling away or stopping).
    fast = [t for t in theirs if t.speed_kmh > t.limit_kmh * 1.15]
    assert len(fast) > len(theirs) / 4
    assert max(t.speed_kmh / t.limit_kmh for t in theirs) > 1.4
    assert all(t.speed_kmh <= t.limit_kmh + 0.05 for t in others)


def speed_drops(rows: list[Row], within: int) -> list[float]:
    """The largest drop of speed over ``within`` seconds at each reading."""
    speeds = [t.speed_kmh for _, t in rows]
    return [speeds[i] - min(speeds[i + 1 : i + 1 + within]) for i in range(len(speeds) - within)]


def test_harsh_brakers_brake_hard_and_nobody_else_does(
    drive: tuple[RoadFleetSimulator, dict[str, list[Row]]],
) -> None:
    fleet, by_truck = drive
    habits = fleet.habits()
    hard = {truck: sum(d >= 25 for d in speed_drops(rows, 2)) for truck, rows in by_truck.items()}
    brakers = [truck for truck in by_truck if habits[truck] is Habit.HARSH_BRAKER]
    assert brakers
    assert sum(hard[truck] for truck in brakers) >= 3
    assert all(hard[truck] == 0 for truck in by_truck if truck not in brakers)
    flagged = [t for _, t in rows_of(by_truck, lambda t: t.harsh_braking)]
    assert flagged
    assert all(t.habit is Habit.HARSH_BRAKER for t in flagged)


def test_reckless_drivers_burst_over_90_and_glitches_over_130(network: RoadNetwork) -> None:
    fleet, messages = simulate(network, config(seed=11, spike_chance=0.002), TRUCKS * 1_200)
    readings = [m.reading for m in messages if m.reading is not None]
    truths = [fleet.truth[r.event_id] for r in readings]
    bursts = [t for t in truths if t.speed_kmh > 90]
    assert bursts
    # Only reckless drivers, who floor it (and then slow down over a few seconds).
    assert all(t.habit is Habit.RECKLESS for t in bursts)
    assert sum(t.burst for t in bursts) > len(bursts) / 2
    # A burst ends in firm braking, not harsh: the rule of harsh braking stays the brakers'.
    by_truck: dict[str, list[Row]] = defaultdict(list)
    for reading, truth in zip(readings, truths, strict=True):
        if truth.habit is Habit.RECKLESS:
            by_truck[reading.truck_id].append((reading, truth))
    assert max(d for rows in by_truck.values() for d in speed_drops(rows, 2)) < 25
    glitches = [r for r, t in zip(readings, truths, strict=True) if t.glitch]
    assert glitches
    assert all(r.speed_kmh > 130 for r in glitches)
