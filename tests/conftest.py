"""Shared test set-up. Hypothesis runs without deadlines: speed is measured in benchmarks/."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fleetwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("fleetwatch")
