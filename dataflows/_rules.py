"""Which rules judge the readings, for the alerts flow and the backfill alike: the catalogue
of FLEET_RULES (or section 4's built-in rules from the FLEET_* knobs) with the trucks'
vehicle classes from the driver history (trucks.parquet)."""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog

from connectors.catalogue import CatalogueStore, load_catalogue
from connectors.road_limits import PostedLimits
from connectors.roads import RoadsError, default_cache_dir, default_extract
from domain.catalogue import Catalogue, RuleBook
from domain.history import HistoryIndex
from domain.rules import builtin_book
from runtime.settings import RuleSettings, SettingsError

log = structlog.get_logger(__name__)


class RuleBooks:
    """The rule book in force, rebuilt only when the catalogue or the history changes (each
    is swapped whole by its store, so identity says whether it changed)."""

    def __init__(
        self,
        catalogue: Callable[[], Catalogue],
        history: Callable[[], HistoryIndex | None],
    ) -> None:
        self._catalogue = catalogue
        self._history = history
        self._book = RuleBook(Catalogue([]))

    def __call__(self) -> RuleBook:
        catalogue = self._catalogue()
        history = self._history()
        classes = history.vehicle_classes if history is not None else {}
        book = self._book
        if book.catalogue is not catalogue or book.vehicle_classes is not classes:
            book = self._book = RuleBook(catalogue, classes)
        return book


def live_catalogue(rules: RuleSettings) -> Callable[[], Catalogue]:
    """The stream's: FLEET_RULES reloaded in the background, or the built-in catalogue."""
    if rules.catalogue_dir is None:
        builtin = builtin_book(rules.config()).catalogue
        return lambda: builtin
    return CatalogueStore(rules.catalogue_dir, rules.zones, rules.refresh_s).start().current


def fixed_catalogue(rules: RuleSettings) -> Catalogue:
    """A bounded run's: read once, every file valid (``CatalogueError`` otherwise)."""
    if rules.catalogue_dir is None:
        return builtin_book(rules.config()).catalogue
    return load_catalogue(rules.catalogue_dir, rules.zones)


def posted_limits(rules: RuleSettings) -> PostedLimits | None:
    """The road network for posted_limit_over (FLEET_ROADS), for a flow that judges a
    catalogue: None when FLEET_RULES is unset (the built-in rules use no limits) or
    FLEET_ROADS is ``none``. Every reading of such a flow is matched whatever the
    catalogue holds now, so a version that brings a posted_limit_over rule judges the
    readings it finds with their limits, in the stream as in the backfill."""
    roads = rules.roads
    if rules.catalogue_dir is None or not roads.enabled:
        return None
    cache_dir = roads.cache_dir or default_cache_dir(os.environ)
    try:
        extract = roads.extract or default_extract()
        limits = PostedLimits.load(extract, cache_dir, roads.match_m)
    except RoadsError as exc:
        raise SettingsError(str(exc)) from None  # it names FLEET_ROADS and the file
    log.info("roads_loaded", extract=str(extract), ways=len(limits.index.ways), max_m=roads.match_m)
    return limits
