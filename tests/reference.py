"""A plain reference for CONTRACT.md section 4, written from the text and sharing no code
with domain/rules.py: dedupe, sort, then walk each truck's readings with lists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from domain.readings import Reading
from domain.rules import RuleConfig

AlertKey = tuple[str, str, tuple[str, ...]]  # (rule, truck_id, covered event_ids)


def reference_alerts(readings: Iterable[Reading], config: RuleConfig) -> set[AlertKey]:
    by_truck: dict[str, dict[str, Reading]] = defaultdict(dict)
    for r in readings:
        by_truck[r.truck_id].setdefault(r.event_id, r)  # a duplicate is ignored
    alerts: set[AlertKey] = set()
    for truck, unique in by_truck.items():
        ordered = sorted(unique.values(), key=lambda r: (r.ts_ms, r.event_id))
        alerts |= _sustained(truck, ordered, config) | _instant(truck, ordered, config)
    return alerts


def _sustained(truck: str, ordered: list[Reading], config: RuleConfig) -> set[AlertKey]:
    alerts: set[AlertKey] = set()
    kept: list[Reading] = []
    cooldown_until = None
    for r in ordered:
        if cooldown_until is not None and r.ts_ms < cooldown_until:
            continue
        if cooldown_until is not None:
            cooldown_until, kept = None, []
        if not r.speed_kmh > config.threshold_kmh:
            continue
        kept = [v for v in kept if v.ts_ms >= r.ts_ms - config.window_ms] + [r]
        if len(kept) == config.violations:
            alerts.add(("sustained_speeding", truck, tuple(v.event_id for v in kept)))
            kept, cooldown_until = [], r.ts_ms + config.cooldown_ms
    return alerts


def _instant(truck: str, ordered: list[Reading], config: RuleConfig) -> set[AlertKey]:
    alerts: set[AlertKey] = set()
    cooldown_until = None
    for r in ordered:
        if r.speed_kmh > config.critical_kmh and (
            cooldown_until is None or r.ts_ms >= cooldown_until
        ):
            alerts.add(("instant_overspeed", truck, (r.event_id,)))
            cooldown_until = r.ts_ms + config.cooldown_ms
    return alerts
