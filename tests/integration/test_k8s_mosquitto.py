"""The production Mosquitto config from k8s/base/mosquitto, run by a real Mosquitto (paths
and ports moved to a temporary directory): a truck with its own client certificate may
publish only to its own topic, and only the bridge user reads telemetry."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleetwatch.localbrokers import BrokerProcess, current_user, free_port
from tests.kube import K8S

pytestmark = pytest.mark.integration

BRIDGE_PASSWORD = "bridge-secret"


@dataclass
class Broker:
    devices_port: int
    services_port: int
    pki: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(pki: Path, name: str, *extensions: str) -> None:
    """A key and a certificate for CN=name, signed by the test CA."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / f"{name}.key"),
            "-out", str(pki / f"{name}.csr"), "-subj", f"/CN={name}")  # fmt: skip
    extfile = pki / f"{name}.ext"
    extfile.write_text("\n".join(extensions) + "\n")
    openssl("x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / "ca.crt"),
            "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "1",
            "-out", str(pki / f"{name}.crt"), "-extfile", str(extfile))  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    pki = tmp_path / "pki"
    pki.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
            "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))  # fmt: skip
    issue(pki, "tls", "subjectAltName=IP:127.0.0.1")
    for truck in ("T00001", "T00002"):
        issue(pki, truck)
    passwd = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run(
        [tool, "-c", "-b", str(passwd), "fleetwatch-bridge", BRIDGE_PASSWORD], check=True
    )
    (tmp_path / "data").mkdir()
    devices, services = free_port(), free_port()
    conf = (K8S / "base" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (
        conf.replace("listener 8883", f"listener {devices} 127.0.0.1")
        .replace("listener 8884", f"listener {services} 127.0.0.1")
        .replace("/mosquitto/certs/tls.", f"{pki}/tls.")
        .replace("/mosquitto/certs/ca.crt", f"{pki}/ca.crt")
        .replace("/mosquitto/passwords/passwd", str(passwd))
        .replace("/mosquitto/config/acl", str(K8S / "base" / "mosquitto" / "acl"))
        .replace("/mosquitto/data/", f"{tmp_path / 'data'}/")
    )
    assert not [
        line for line in conf.splitlines() if line.split(" ")[-1].startswith("/mosquitto/")
    ], "every path of the config was moved"
    conf_path = tmp_path / "mosquitto.conf"
    conf_path.write_text(f"user {current_user()}\n{conf}")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = BrokerProcess("mosquitto-prod", [binary, "-c", str(conf_path)], services, tmp_path)
    process.start()
    try:
        yield Broker(devices, services, pki)
    finally:
        process.stop()


def connect(broker: Broker, port: int, client_id: str, cert: str | None = None,
            password: str | None = None) -> mqtt.Client:  # fmt: skip
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    client.tls_set(
        ca_certs=str(broker.pki / "ca.crt"),
        certfile=str(broker.pki / f"{cert}.crt") if cert else None,
        keyfile=str(broker.pki / f"{cert}.key") if cert else None,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    if password is not None:
        client.username_pw_set("fleetwatch-bridge", password)
    connected = threading.Event()
    refused: list[ReasonCode] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode,
                   _p: Properties | None) -> None:  # fmt: skip
        if reason.is_failure:
            refused.append(reason)
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(5):
        client.loop_stop()
        raise ConnectionRefusedError("no CONNACK: the broker ended the TLS handshake")
    if refused:
        client.loop_stop()
        raise ConnectionRefusedError(str(refused[0]))
    return client


def publish_outcome(client: mqtt.Client, topic: str) -> ReasonCode:
    """The broker's PUBACK reason code for one QoS 1 publish."""
    outcome: list[ReasonCode] = []
    done = threading.Event()

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, reason: ReasonCode,
                   _p: Properties | None) -> None:  # fmt: skip
        outcome.append(reason)
        done.set()

    client.on_publish = on_publish
    client.publish(topic, b'{"event_id": "e"}', qos=1)
    assert done.wait(10), "no PUBACK"
    return outcome[0]


def test_a_truck_publishes_only_to_its_own_topic(broker: Broker) -> None:
    received: list[str] = []
    bridge = connect(broker, broker.services_port, "fleetwatch-bridge-0", password=BRIDGE_PASSWORD)
    bridge.on_message = lambda _c, _u, message: received.append(message.topic)
    bridge.subscribe("$share/fleetwatch-bridge/fleet/+/telemetry", qos=1)
    truck = connect(broker, broker.devices_port, "T00001", cert="T00001")
    try:
        time.sleep(0.5)  # the subscription is in place
        own = publish_outcome(truck, "fleet/T00001/telemetry")
        other = publish_outcome(truck, "fleet/T00002/telemetry")
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time for a wrongly allowed message to arrive too
    finally:
        truck.loop_stop()
        bridge.loop_stop()
    assert not own.is_failure
    assert other.is_failure
    assert other.getName() == "Not authorized"
    assert received == ["fleet/T00001/telemetry"]


def test_devices_need_a_certificate_and_services_a_password(broker: Broker) -> None:
    connect(broker, broker.devices_port, "T00002", cert="T00002").loop_stop()  # the control
    with pytest.raises((ConnectionRefusedError, ssl.SSLError, OSError)):
        connect(broker, broker.devices_port, "anonymous")  # no client certificate
    with pytest.raises(ConnectionRefusedError):
        connect(broker, broker.services_port, "intruder", password="wrong")
