"""Settings: contract defaults, validation naming the variable, Kafka pass-through, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.kafka import check_kafka_properties
from fleetwatch.settings import SAMPLE_HISTORY_DIR, MqttUrl, Settings, SettingsError


def test_contract_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.mqtt_url == MqttUrl("127.0.0.1", 1883, tls=False)
    assert settings.mqtt_topic == "fleet/+/telemetry"
    assert settings.kafka_brokers == ("127.0.0.1:9092",)
    assert (
        settings.topic_telemetry,
        settings.topic_alerts,
        settings.topic_dlq,
        settings.topic_late,
    ) == (
        "fleet.telemetry",
        "fleet.alerts",
        "fleet.dlq",
        "fleet.telemetry.late",
    )
    assert settings.kafka_tail is True
    assert settings.history_dir == SAMPLE_HISTORY_DIR
    assert (settings.threshold_kmh, settings.violations, settings.window_s) == (90, 5, 600)
    assert (settings.critical_kmh, settings.cooldown_s, settings.allowed_lateness_s) == (
        130,
        600,
        10,
    )
    assert settings.lake_dir is None
    assert settings.kafka_properties == {}


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
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_secret_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLEET_MQTT_URL": "ftp://u:hunter2@host"})
    assert "FLEET_MQTT_URL" in str(caught.value)


def test_kafka_passthrough_maps_variable_to_property() -> None:
    settings = Settings.from_env(
        {
            "FLEET_KAFKA_BROKERS": "a:1,b:2",
            "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FLEET_KAFKA_SASL_PASSWORD": "hunter2",
        }
    )
    assert settings.kafka_config() == {
        "bootstrap.servers": "a:1,b:2",
        "security.protocol": "SASL_SSL",
        "sasl.password": "hunter2",
    }


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


def test_bad_kafka_property_value_names_the_variable() -> None:
    settings = Settings.from_env({"FLEET_KAFKA_SECURITY_PROTOCOL": "carrier_pigeon"})
    with pytest.raises(SettingsError, match="FLEET_KAFKA_SECURITY_PROTOCOL"):
        check_kafka_properties(settings)


def test_unknown_kafka_property_names_the_variable() -> None:
    settings = Settings.from_env({"FLEET_KAFKA_NO_SUCH_THING": "1"})
    with pytest.raises(SettingsError, match="FLEET_KAFKA_NO_SUCH_THING"):
        check_kafka_properties(settings)


def test_valid_kafka_property_passes() -> None:
    check_kafka_properties(Settings.from_env({"FLEET_KAFKA_COMPRESSION_TYPE": "lz4"}))


def test_optional_paths() -> None:
    settings = Settings.from_env(
        {"FLEET_LAKE_DIR": "/data/lake", "FLEET_ALERTS_OUT": "out/a.jsonl"}
    )
    assert settings.lake_dir == Path("/data/lake")
    assert settings.alerts_out == "out/a.jsonl"
