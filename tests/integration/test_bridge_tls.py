"""The bridge over TLS with a username and password from FLEET_MQTT_URL, on a real Mosquitto
TLS listener with a password file and no anonymous access."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.localbrokers import (
    BrokerProcess,
    LocalBrokers,
    current_user,
    free_port,
    mosquitto_available,
)
from devtools.mqtt_publisher import MqttPublisher
from runtime.settings import MqttUrl
from tests.builders import payload
from tests.integration.flows import FlowProcess, Namespace, consume_until

PASSWORD = "s3cr:t pass"  # a colon and a space: must survive URL encoding
URL_PASSWORD = "s3cr%3At%20pass"


@dataclass
class TlsBroker:
    port: int
    ca_file: Path


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    if not mosquitto_available() or shutil.which("openssl") is None:
        pytest.skip("needs mosquitto and openssl (.ci/run installs both)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    passwords = tmp_path / "passwd"
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd_tool, "-b", "-c", str(passwords), "bridge", PASSWORD], check=True)
    port = free_port()
    conf = tmp_path / "mosquitto-tls.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nuser {current_user()}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwords}\npersistence false\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = BrokerProcess("mosquitto-tls", [binary, "-c", str(conf)], port, tmp_path)
    broker.start()
    try:
        yield TlsBroker(port, cert)
    finally:
        broker.stop()


def test_bridge_over_tls_with_credentials(
    tls_broker: TlsBroker, brokers: LocalBrokers, namespace: Namespace, logs: Path
) -> None:
    url = f"mqtts://bridge:{URL_PASSWORD}@127.0.0.1:{tls_broker.port}"
    env = namespace.env(
        FLEET_MQTT_URL=url, FLEET_MQTT_CA_FILE=str(tls_broker.ca_file), FLEET_MQTT_PROTOCOL="5"
    )
    bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed")
        publisher = MqttPublisher(MqttUrl.parse(url), "5", ca_file=str(tls_broker.ca_file))
        try:
            publisher.publish(
                namespace.mqtt_topic_template.format(truck_id="T1"), payload(event_id="tls-1")
            )
            publisher.wait_for_acks(1)
        finally:
            publisher.close()
        telemetry = consume_until(
            brokers.kafka_brokers, namespace.topic("telemetry"), lambda r: len(r) >= 1
        )
    finally:
        bridge.stop()
    assert [r.json()["event_id"] for r in telemetry] == ["tls-1"]
    log = (logs / "bridge.log").read_text()
    assert "s3cr" not in log, "the password must never be logged"
    assert f"mqtts://bridge:***@127.0.0.1:{tls_broker.port}" in log


def test_wrong_password_is_refused_and_logged(
    tls_broker: TlsBroker, namespace: Namespace, logs: Path
) -> None:
    url = f"mqtts://bridge:wrong@127.0.0.1:{tls_broker.port}"
    env = namespace.env(
        FLEET_MQTT_URL=url, FLEET_MQTT_CA_FILE=str(tls_broker.ca_file), FLEET_MQTT_PROTOCOL="5"
    )
    bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_connect_refused")
    finally:
        bridge.stop()
