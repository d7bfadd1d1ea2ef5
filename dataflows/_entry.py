"""What every flow module shares: the start-up prelude and the lazily built ``flow``.

``python -m bytewax.run dataflows.<name>`` looks up the module's ``flow``. Building it on
first access (a module ``__getattr__``) keeps importing a flow module free of environment
reads and network calls, so tests can import ``build_flow`` and plug in their own parts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import structlog
from bytewax.dataflow import Dataflow

from connectors.kafka import check_kafka_properties, ensure_configured_topics
from fleetwatch.logs import configure_logging
from fleetwatch.settings import Settings


def start(flow_name: str, settings: Settings, topics: Iterable[str]) -> None:
    """Log the effective settings, fail fast on bad Kafka properties, create missing topics."""
    configure_logging()
    log = structlog.get_logger(f"dataflows.{flow_name}")
    log.info("starting", flow=flow_name, settings=settings.redacted())
    check_kafka_properties(settings)
    topics = list(topics)
    if not topics:
        return  # e.g. a backfill to a file: no broker needed
    ensure_configured_topics(settings, topics)


def lazy_flow(flow_from_settings: Callable[[Settings], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__`` that builds ``flow`` from the environment once, on demand."""

    @functools.cache
    def build() -> Dataflow:
        return flow_from_settings(Settings.from_env())

    def module_getattr(name: str) -> Dataflow:
        if name == "flow":
            return build()
        raise AttributeError(name)

    return module_getattr
