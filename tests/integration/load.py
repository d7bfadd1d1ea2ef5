"""Steady simulated load straight into a Kafka topic, for recovery and fault tests."""

from __future__ import annotations

import random
import threading
import time

from confluent_kafka import Producer

from domain.readings import Reading, encode_canonical
from tests.builders import BEGINNING_MS


class SteadyLoad:
    """Trucks report every second of event time, in order; some speed in episodes, some
    spike. Runs in a thread at ``rate`` readings/s of wall time until ``count``."""

    def __init__(
        self, bootstrap: str, topic: str, count: int, rate: float, trucks: int = 40, seed: int = 1
    ) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._topic = topic
        self._count = count
        self._rate = rate
        self._trucks = trucks
        self._rng = random.Random(seed)
        self.readings: list[Reading] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="steady-load")

    def _speed(self, episodes: dict[str, int], truck: str) -> float:
        rng = self._rng
        if episodes.get(truck, 0) == 0 and rng.random() < 0.01:
            episodes[truck] = rng.randint(4, 9)
        if rng.random() < 0.002:
            return 140.0
        if episodes.get(truck, 0):
            episodes[truck] -= 1
            return round(rng.uniform(92, 120), 1)
        return round(rng.uniform(50, 88), 1)

    def _run(self) -> None:
        episodes: dict[str, int] = {}
        started = time.monotonic()
        for n in range(self._count):
            truck = f"T{n % self._trucks:03d}"
            reading = Reading(
                f"{truck}-{n}",
                truck,
                BEGINNING_MS + (n // self._trucks) * 1_000,
                self._speed(episodes, truck),
            )
            self.readings.append(reading)
            self._producer.produce(
                self._topic,
                encode_canonical(reading),
                truck.encode(),
                on_delivery=lambda e, _m: self.failures.append(str(e)) if e else None,
            )
            self._producer.poll(0)
            delay = started + (n + 1) / self._rate - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
        self._producer.flush(30)

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 120) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "load did not finish"
        assert not self.failures, self.failures[:3]

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
