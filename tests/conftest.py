"""Shared test set-up. Hypothesis runs without deadlines: speed is measured in benchmarks/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fleetwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("fleetwatch")


def _unprocessable_count() -> float:
    from runtime.metrics import DEAD_LETTERS

    return sum(
        sample.value
        for metric in DEAD_LETTERS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("reason") == "unprocessable"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "unprocessable_expected: the test provokes 'unprocessable' dead letters on purpose",
    )


@pytest.fixture(autouse=True)
def _no_unexpected_unprocessable(request: pytest.FixtureRequest) -> Iterator[None]:
    """The last line of defence (dataflows/_guard.py) must not hide bugs from the tests:
    any 'unprocessable' dead letter a test did not ask for fails it, whether the flow ran
    in this process (the counter) or as a process of its own (its log, under tmp_path)."""
    before = _unprocessable_count()
    yield
    if request.node.get_closest_marker("unprocessable_expected") is not None:
        return
    assert _unprocessable_count() == before, "a flow dead-lettered a record as unprocessable"
    tmp = request.node.funcargs.get("tmp_path")
    if isinstance(tmp, Path):
        for log in tmp.rglob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                assert '"event": "unprocessable"' not in line, f"{log.name}: {line[:2000]}"
