"""What ``python -m fleetwatch.history refresh`` computes (CONTRACT.md section 11), as data.

The refresh recomputes drivers.parquet's 90-day columns as of a day; docs/history.md says
why each choice is what it is. Here are the choices themselves, so that the Polars code
(connectors/history_refresh.py), the tests and the docs share one source:

- the window: ``HISTORY_DAYS`` whole local days (FLEET_TIMEZONE) before the as-of day;
- ``overspeed_events_90d``: the driver's archived alerts of the kinds in ``OVERSPEED_KINDS``
  (a built-in rule's alert, whose ``details`` are ``{}``, has the kind in ``BUILTIN_KINDS``);
- ``risk_tier``: by overspeed events per 1,000 km, the distance taken as at least
  ``RISK_FLOOR_KM`` (``risk_tier``), against the cut-offs ``RISK_CUTOFFS``.
"""

from __future__ import annotations

from datetime import date, timedelta

from domain.rules import Rule

HISTORY_DAYS = 90

# Speed over a limit: every kind of section 9 but ``deceleration`` (harsh braking is unsafe
# driving, not speeding). A kind added later counts only once it is listed here.
OVERSPEED_KINDS = frozenset(
    {"instant_over", "count_over", "duration_over", "zone_over", "posted_limit_over"}
)
# Section 4's rules send ``details`` ``{}``: the kind they behave as (as the notifier reads them).
BUILTIN_KINDS = {Rule.SUSTAINED.value: "count_over", Rule.INSTANT.value: "instant_over"}

# Overspeed events per 1,000 km at or above which a driver is in the tier, highest first;
# below every cut-off: ``low``.
RISK_CUTOFFS = ((0.5, "high"), (0.2, "medium"))
# A driver with fewer km in the window is judged as if they had driven this far: a short
# stint is too little driving to call a rate (one alert in 100 km is not 10 per 1,000 km).
RISK_FLOOR_KM = 1_000.0


def window_days(as_of: date) -> tuple[date, date]:
    """The first and the last local day the history as of ``as_of`` covers (inclusive):
    the ``HISTORY_DAYS`` days before it, not the as-of day itself."""
    return as_of - timedelta(days=HISTORY_DAYS), as_of - timedelta(days=1)


def events_per_1000km(events: int, km: float) -> float:
    """Overspeed events per 1,000 km, the distance floored at ``RISK_FLOOR_KM``."""
    return events * 1000.0 / max(km, RISK_FLOOR_KM)


def risk_tier(events: int, km: float) -> str:
    """``low``, ``medium`` or ``high`` for ``events`` overspeed events in ``km`` km."""
    rate = events_per_1000km(events, km)
    for cutoff, tier in RISK_CUTOFFS:
        if rate >= cutoff:
            return tier
    return "low"
