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
from runtime.logs import configure_logging
from runtime.settings import Settings


def prepare(
    flow_name: str, settings: Settings, sections: Iterable[str], topics: Iterable[str]
) -> None:
    """Before a flow is built: validate the settings sections it needs (``sections`` names
    ``Settings`` fields; each section that can be incomplete checks itself), log the
    effective settings, fail fast on bad Kafka properties, create its missing topics."""
    configure_logging()
    for name in sections:
        section = getattr(settings, name)  # an unknown name is a bug: AttributeError
        validate = getattr(section, "validate", None)
        if validate is not None:
            validate()
    log = structlog.get_logger(f"dataflows.{flow_name}")
    log.info("starting", flow=flow_name, settings=settings.redacted())
    check_kafka_properties(settings.kafka)
    topics = list(topics)
    if not topics:
        return  # e.g. a backfill to a file: no broker needed
    ensure_configured_topics(settings.kafka, topics)


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
