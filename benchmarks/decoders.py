"""Telemetry decoding: json vs orjson vs msgspec, and the full validation on top.

``python -m benchmarks.decoders``. Prints decodes per second and the ratio to ``json``.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

import msgspec
import orjson

from domain.readings import Reading, decode_reading, encode_canonical

PAYLOAD = (
    b'{"event_id":"T00042-000001234","truck_id":"T00042","ts":"2026-11-24T10:15:03.120Z",'
    b'"speed_kmh":93.4,"lat":52.5123,"lon":13.4012,"fw":"2.4.1"}'
)


def _canonical() -> bytes:
    reading = decode_reading(PAYLOAD)
    assert isinstance(reading, Reading)
    return encode_canonical(reading)


CANONICAL = _canonical()


def rate(function: Callable[[], object], number: int = 100_000) -> float:
    best = min(timeit.repeat(function, number=number, repeat=5))
    return number / best


def main() -> dict[str, float]:
    decoder = msgspec.json.Decoder()
    results = {
        "json.loads": rate(lambda: json.loads(PAYLOAD)),
        "orjson.loads": rate(lambda: orjson.loads(PAYLOAD)),
        "msgspec decode": rate(lambda: decoder.decode(PAYLOAD)),
        "decode_reading, a device's payload (msgspec + validation)": rate(
            lambda: decode_reading(PAYLOAD, topic_truck_id="T00042")
        ),
        "decode_reading, canonical (fleet.telemetry fast path)": rate(
            lambda: decode_reading(CANONICAL)
        ),
    }
    baseline = results["json.loads"]
    for name, per_second in results.items():
        print(f"{name:58s} {per_second / 1e6:6.2f} M/s   {per_second / baseline:5.2f}x json")
    return results


if __name__ == "__main__":
    main()
