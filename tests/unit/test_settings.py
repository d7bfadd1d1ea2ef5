"""Settings: contract defaults, validation naming the variable, Kafka pass-through, masking."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from connectors.kafka import check_kafka_properties
from runtime.settings import SAMPLE_HISTORY_DIR, MqttUrl, Settings, SettingsError


def test_contract_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.mqtt.url == MqttUrl("127.0.0.1", 1883, tls=False)
    assert settings.mqtt.topic_filter == "fleet/+/telemetry"
    assert settings.kafka.brokers == ("127.0.0.1:9092",)
    assert (
        settings.topics.telemetry,
        settings.topics.alerts,
        settings.topics.dlq,
        settings.topics.late,
    ) == (
        "fleet.telemetry",
        "fleet.alerts",
        "fleet.dlq",
        "fleet.telemetry.late",
    )
    assert settings.kafka.tail is True
    assert settings.history.dir == SAMPLE_HISTORY_DIR
    assert (settings.rules.threshold_kmh, settings.rules.violations, settings.rules.window_s) == (
        90,
        5,
        600,
    )
    assert (
        settings.rules.critical_kmh,
        settings.rules.cooldown_s,
        settings.rules.allowed_lateness_s,
    ) == (
        130,
        600,
        10,
    )
    assert settings.lake.dir is None
    assert settings.kafka.properties == {}


def test_mqtt_url_forms() -> None:
    assert MqttUrl.parse("mqtts://broker.example") == MqttUrl("broker.example", 8883, tls=True)
    url = MqttUrl.parse("mqtt://user%40x:p%3Ass@host:1999")
    assert (url.host, url.port, url.username, url.password) == ("host", 1999, "user@x", "p:ss")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FLEET_MQTT_URL", "http://host"),
        ("FLEET_MQTT_URL", "mqtt://"),
        ("FLEET_MQTT_TOPIC", "fleet/#/x"),
        ("FLEET_MQTT_TOPIC", "fleet/a+/x"),
        ("FLEET_MQTT_SHARE_GROUP", "a/b"),
        ("FLEET_MQTT_PROTOCOL", "4"),
        ("FLEET_KAFKA_BROKERS", "host-without-port"),
        ("FLEET_KAFKA_BROKERS", " , "),
        ("FLEET_KAFKA_TAIL", "maybe"),
        ("FLEET_TOPIC_ALERTS", "bad topic"),
        ("FLEET_TOPIC_PARTITIONS", "0"),
        ("FLEET_TOPIC_REPLICATION_FACTOR", "0"),
        ("FLEET_THRESHOLD_KMH", "fast"),
        ("FLEET_THRESHOLD_KMH", "nan"),
        ("FLEET_VIOLATIONS", "0"),
        ("FLEET_WINDOW_S", "-1"),
        ("FLEET_ALLOWED_LATENESS_S", "inf"),
        ("FLEET_ALERTS_OUT", "alerts.csv"),
        ("FLEET_NOTIFY_URL", "ftp://x"),
        ("FLEET_NOTIFY_SECRET", "too-short"),
        ("FLEET_NOTIFY_TIMEZONE", "Mars/Olympus"),
        ("FLEET_NOTIFY_MAX_ATTEMPTS", "0"),
        ("FLEET_HISTORY_DSN", "mysql://x"),
        ("FLEET_KAFKA_STARTUP_TIMEOUT_S", "0"),
        ("FLEET_KAFKA_DELIVERY_BUDGET_S", "0"),
        ("FLEET_KAFKA_DELIVERY_BUDGET_S", "90000"),
        ("FLEET_KAFKA_DELIVERY_BUDGET_S", "ten minutes"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(
    ("variable", "value", "secrets", "says"),
    [
        ("FLEET_MQTT_URL", "ftp://u:hunter2@host", ["hunter2"], "scheme must be mqtt"),
        ("FLEET_MQTT_URL", "mqtt://u:hun@ter 2@", ["hun@ter", "ter 2"], "no host"),
        ("FLEET_MQTT_URL", "mqtt://u:hunter2@host:x", ["hunter2"], "port"),
        # urllib reads "hun" as the port of host "u": its own message would quote it
        ("FLEET_MQTT_URL", "mqtt://u:hun/ter2@host", ["hun", "ter2"], "%2F"),
        ("FLEET_MQTT_URL", "u:hunter2@host", ["hunter2"], "scheme"),
        ("FLEET_NOTIFY_URL", "ftp://u:hunter2@x/?api_key=k3y-k3y", ["hunter2", "k3y-k3y"], "http"),
        ("FLEET_DYNAMODB_ENDPOINT_URL", "dynamo:hunter2@x", ["hunter2"], "http"),
        ("FLEET_HISTORY_DSN", "mysql://u:hunter2@x", ["hunter2"], "postgresql://"),
        ("FLEET_HISTORY_DSN", "postgresql://u:p@ss w0rd@db/f", ["p@ss", "w0rd"], "%20"),
        ("FLEET_HISTORY_DSN", "postgresql://u:p@ssw0rd@db/f", ["p@ss", "ssw0rd"], "%40"),
        ("FLEET_HISTORY_DSN", "postgresql://u:pa/ssw0rd@db/f", ["pa/ss", "ssw0rd"], "%2F"),
        ("FLEET_HISTORY_DSN", "postgresql://u:p%zzhunter2@db/f", ["hunter2"], "%XX"),
        ("FLEET_HISTORY_DSN", "host=db password=hunter2 and more", ["hunter2", "more"], "'='"),
        ("FLEET_HISTORY_DSN", "host=db password='hunter2", ["hunter2"], "quoted"),
        ("FLEET_NOTIFY_SECRET", "hunter2-short", ["hunter2"], "24 bytes"),
    ],
)
def test_secret_values_are_not_echoed_in_errors(
    variable: str, value: str, secrets: list[str], says: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}="), "names the variable"
    assert says in message, "says what is wrong"
    for secret in secrets:
        assert secret not in message


def test_a_dsn_libpq_reads_as_meant_is_accepted() -> None:
    for dsn in (
        "postgresql://fleet:p%40ss%20w0rd@db:5432/fleet?sslmode=require",
        "postgresql://fleet:pa?ss@db/fleet",  # libpq reads '?' in the user info as is
        "postgres://db/fleet?user=fleet&password=hunter2",
        "host=db user=fleet password='p@ss w0rd\\' x'",
    ):
        assert Settings.from_env({"FLEET_HISTORY_DSN": dsn}).history.dsn == dsn


def test_mqtt_url_redacted() -> None:
    assert MqttUrl.parse("mqtt://bob:hun%2Fter2@host").redacted() == "mqtt://bob:***@host:1883"
    assert MqttUrl.parse("mqtts://t0ken@host").redacted() == "mqtts://***@host:8883"
    assert MqttUrl.parse("mqtt://bob:x@[::1]:99").redacted() == "mqtt://bob:***@[::1]:99"
    assert MqttUrl.parse("mqtt://user%40corp:p@ss@h").redacted() == "mqtt://user%40corp:***@h:1883"
    assert "p@ss" not in repr(MqttUrl.parse("mqtt://u:p@ss@h"))


def test_kafka_passthrough_maps_variable_to_property() -> None:
    settings = Settings.from_env(
        {
            "FLEET_KAFKA_BROKERS": "a:1,b:2",
            "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FLEET_KAFKA_SASL_PASSWORD": "hunter2",
        }
    )
    assert settings.kafka.config() == {
        "bootstrap.servers": "a:1,b:2",
        "security.protocol": "SASL_SSL",
        "sasl.password": "hunter2",
    }


def test_delivery_budget_is_the_producers_message_timeout() -> None:
    assert Settings.from_env({}).kafka.delivery_budget_s == 600
    settings = Settings.from_env({"FLEET_KAFKA_DELIVERY_BUDGET_S": "42.5"})
    assert settings.kafka.delivery_budget_s == 42.5
    assert "delivery.budget.s" not in settings.kafka.config()  # fleetwatch's own, not passed on
    assert "message.timeout.ms" not in settings.kafka.config()  # consumers would warn
    assert settings.kafka.producer_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "message.timeout.ms": "42500",
    }


@pytest.mark.parametrize(
    "variable", ["FLEET_KAFKA_MESSAGE_TIMEOUT_MS", "FLEET_KAFKA_DELIVERY_TIMEOUT_MS"]
)
def test_librdkafkas_message_timeout_is_set_through_the_budget_only(variable: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}.*FLEET_KAFKA_DELIVERY_BUDGET_S"):
        Settings.from_env({variable: "30000"})


def test_redacted_settings_mask_secrets() -> None:
    settings = Settings.from_env(
        {
            "FLEET_MQTT_URL": "mqtt://bob:hunter2@host",
            "FLEET_KAFKA_SASL_PASSWORD": "hunter2",
            "FLEET_NOTIFY_SECRET": "hunter2-hunter2-hunter2-hunter2",
            "FLEET_HISTORY_DSN": "postgresql://fleet:hunter2@db/fleet",
        }
    )
    shown = repr(settings.redacted())
    assert "hunter2" not in shown
    assert "bob" in shown
    assert "***" in shown


SECRETS = {
    "FLEET_MQTT_URL": "mqtts://bob:S3cr%40t-mqtt@broker.example:8883",
    "FLEET_NOTIFY_URL": "https://mailer:S3cret-notify@mail.example/v1/send?api_key=S3cret-nkey",
    "FLEET_NOTIFY_SECRET": "whsec_UzNjcmV0LXNpZ25pbmctc2VjcmV0LTAxMjM0NQ==",
    "FLEET_DYNAMODB_ENDPOINT_URL": "http://dyn:S3cret-dyn@dynamo:8000/?X-Amz-Signature=S3cret-sig",
    "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "FLEET_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
    "FLEET_KAFKA_SASL_USERNAME": "fleet",
    "FLEET_KAFKA_SASL_PASSWORD": "S3cret-sasl",
    "FLEET_KAFKA_SASL_OAUTHBEARER_CONFIG": "principal=fleet extension_traceId=S3cret-oauth",
    "FLEET_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "S3cret-client",
    "FLEET_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp:S3cret-idp@idp.example/t?k=S3cret-q",
    "FLEET_KAFKA_SSL_KEY_PEM": "-----BEGIN PRIVATE KEY-----S3cret-pem",
    "FLEET_KAFKA_SSL_KEY_PASSWORD": "S3cret-keypass",
}
SECRET_STRINGS = [
    "S3cr%40t-mqtt",
    "S3cr@t-mqtt",
    "S3cret-notify",
    "S3cret-nkey",
    "UzNjcmV0",
    "S3cret-dyn",
    "S3cret-sig",
    "S3cret-sasl",
    "S3cret-oauth",
    "S3cret-client",
    "S3cret-idp",
    "S3cret-q",
    "S3cret-pem",
    "S3cret-keypass",
    "S3cret pg",
    "S3cret-pg",
]


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://fleet:S3cret-pg@ss S3cret pg@db:5432/fleet?sslpassword=S3cret-pg",
        "host=db user=fleet password='S3cret pg\\' S3cret-pg' sslpassword=S3cret-pg dbname=fleet",
    ],
)
def test_redacted_settings_hold_no_secret_anywhere(dsn: str) -> None:
    environ = {**SECRETS, "FLEET_HISTORY_DSN": dsn}
    if dsn.startswith("postgresql://"):  # the '@' and the space: only redacted() sees it raw
        environ.pop("FLEET_HISTORY_DSN")
    settings = Settings.from_env(environ)
    if dsn.startswith("postgresql://"):
        settings = dataclasses.replace(
            settings, history=dataclasses.replace(settings.history, dsn=dsn)
        )
    redacted = settings.redacted()
    for shown in (repr(redacted), json.dumps(redacted), repr(settings), str(settings)):
        for secret in SECRET_STRINGS:
            assert secret not in shown
    # and what is not secret is still there to read
    assert redacted["mqtt"]["url"] == "mqtts://bob:***@broker.example:8883"
    assert redacted["notify"]["url"] == "https://mailer:***@mail.example/v1/send?api_key=***"
    assert redacted["dynamodb"]["endpoint_url"] == "http://dyn:***@dynamo:8000/?X-Amz-Signature=***"
    assert redacted["notify"]["secret"] == "***"
    assert redacted["kafka"]["properties"]["security.protocol"] == "SASL_SSL"
    assert redacted["kafka"]["properties"]["sasl.username"] == "fleet"
    assert redacted["kafka"]["properties"]["sasl.oauthbearer.config"] == "***"
    assert "db" in redacted["history"]["dsn"]
    assert "fleet" in redacted["history"]["dsn"]


def test_bad_kafka_property_value_names_the_variable() -> None:
    settings = Settings.from_env({"FLEET_KAFKA_SECURITY_PROTOCOL": "carrier_pigeon"})
    with pytest.raises(SettingsError, match="FLEET_KAFKA_SECURITY_PROTOCOL"):
        check_kafka_properties(settings.kafka)


def test_unknown_kafka_property_names_the_variable() -> None:
    settings = Settings.from_env({"FLEET_KAFKA_NO_SUCH_THING": "1"})
    with pytest.raises(SettingsError, match="FLEET_KAFKA_NO_SUCH_THING"):
        check_kafka_properties(settings.kafka)


def test_valid_kafka_property_passes() -> None:
    check_kafka_properties(Settings.from_env({"FLEET_KAFKA_COMPRESSION_TYPE": "lz4"}).kafka)


def test_optional_paths() -> None:
    settings = Settings.from_env(
        {"FLEET_LAKE_DIR": "/data/lake", "FLEET_ALERTS_OUT": "out/a.jsonl"}
    )
    assert settings.lake.dir == Path("/data/lake")
    assert settings.backfill.alerts_out == "out/a.jsonl"
