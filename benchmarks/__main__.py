"""``python -m benchmarks`` (``make bench``): every benchmark, results in build/bench/."""

from __future__ import annotations

from benchmarks import alerts, bridge, decoders, history, lake, notify


def main() -> None:
    print("== decoders")
    decoders.main()
    print("\n== bridge vs a bare paho -> confluent-kafka forwarder")
    bridge.main([])
    print("\n== alerts flow vs a plain confluent-kafka loop")
    alerts.main([])
    print("\n== driver history: lookups, load, reload pause")
    history.main([])
    print("\n== lake: backfill vs pure Polars, archive throughput")
    lake.main([])
    print("\n== notifier against a fast local receiver")
    notify.main([])


if __name__ == "__main__":
    main()
