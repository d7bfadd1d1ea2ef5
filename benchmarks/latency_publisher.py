"""The offered load of benchmarks.latency: readings over MQTT at a fixed rate, stamped.

``python -m benchmarks.latency_publisher URL PROTOCOL TEMPLATE RATE SECONDS TRUCKS OUT``.
Each reading's ``ts`` is its publish time (epoch ms), so event time moves with wall time.
A share of readings is critical (over every threshold); their publish times (time.time())
go to OUT as JSON, with the achieved rate. Runs in its own process so that publishing does
not share a GIL with the side that timestamps the alerts.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
from pathlib import Path

from devtools.mqtt_publisher import MqttPublisher
from runtime.settings import MqttUrl

CRITICAL_SHARE = 0.01


def main(argv: list[str]) -> None:
    url, protocol, template, rate, seconds, trucks, out = argv
    publisher = MqttPublisher(MqttUrl.parse(url), protocol)
    rng = random.Random(11)
    names = [f"T{t:05d}" for t in range(int(trucks))]
    critical: dict[str, float] = {}
    started = time.monotonic()
    ends = started + float(seconds)  # time-bound: an overloaded pipeline shows a lower rate
    total = 0
    for n in itertools.count():
        if time.monotonic() >= ends:
            break
        total = n + 1
        delay = started + n / float(rate) - time.monotonic()
        if delay > 0.0005:
            time.sleep(delay)
        truck = names[n % len(names)]
        speed = 140.0 if rng.random() < CRITICAL_SHARE else round(rng.uniform(55, 85), 1)
        event_id = f"{truck}-{n}"
        now = time.time()
        payload = (
            f'{{"event_id":"{event_id}","truck_id":"{truck}","ts":{int(now * 1000)},'
            f'"speed_kmh":{speed}}}'
        ).encode()
        publisher.publish(template.format(truck_id=truck), payload)
        if speed > 130:
            critical[event_id] = now
    elapsed = time.monotonic() - started
    publisher.wait_for_acks(total, timeout_s=300)
    publisher.close()
    Path(out).write_text(
        json.dumps({"published": total, "achieved_rate": total / elapsed, "critical": critical})
    )


if __name__ == "__main__":
    main(sys.argv[1:])
