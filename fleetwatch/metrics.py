"""fleetwatch's own Prometheus metrics, next to Bytewax's (same registry, same endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

HISTORY_RELOADS = Counter(
    "fleetwatch_history_reloads",
    "Driver-history loads, by outcome (ok, failed).",
    ["source", "outcome"],
)
HISTORY_LOADED_AT = Gauge(
    "fleetwatch_history_loaded_timestamp_seconds",
    "When the driver history in use was loaded (Unix time).",
    ["source"],
)
