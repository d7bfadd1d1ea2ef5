"""``python -m fleetwatch.replay``: send dead letters back to where they came from.

Reads ``FLEET_TOPIC_DLQ`` from the beginning to its end (the end as it is when the command
reaches it; records dead-lettered meanwhile wait for the next run), keeps the dead letters
(CONTRACT.md section 3) whose ``stage`` and ``reason`` were asked for, and, with
``--since``, whose ``received_at`` is at or after that instant. Each kept record's original
bytes (``raw``, base64) are produced again to its ``source_topic``, or to ``--to TOPIC``,
with the original's ``truck_id`` (when it has one) as the key, as the contract's topics are
keyed. Kafka confirms every record before the command reports success. Prints one summary
line on stdout; ``--dry-run`` prints it without producing anything.

Refused, and counted (never replayed): records cut to fit the DLQ (``raw_truncated``: the
original is not whole), records that are not dead letters in the contract's format, and
records whose ``source_topic`` is not a Kafka topic name (the bridge's originals come from
MQTT topics; give ``--to``). A target topic that does not exist is an error (nothing is
produced), unless it is the one ``--to`` names: that one is created like the flows' topics.

Running it twice produces the records twice: the consumers' own guarantees make that safe
(README, Operations, "Replaying dead letters": the notifier and alert_ids, the readings'
event_ids). The selected records are held in memory until they are produced.

Exit codes: 0 done (also when nothing matched); 1 Kafka failed (the DLQ could not be read,
a target topic is missing, a record was not confirmed); 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from connectors.kafka import (
    ConfirmedProducer,
    KafkaDeliveryError,
    KafkaUnreachable,
    OutboundRecord,
    check_kafka_properties,
    ensure_configured_topics,
)
from connectors.kafka_source import KafkaBatchSource
from domain.dead_letters import DeadLetterRecord
from domain.timestamps import BadTimestamp, parse_rfc3339_ms
from runtime.logs import configure_logging
from runtime.settings import Settings, SettingsError

log = structlog.get_logger("fleetwatch.replay")

EXIT_OK = 0
EXIT_KAFKA = 1
EXIT_USAGE = 2

# Kafka's rule for topic names (legal characters, at most 249 of them; not "." or "..").
_KAFKA_TOPIC = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$")
_DECODER = msgspec.json.Decoder(DeadLetterRecord)


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: every one of ``stages`` x ``reasons``, received at or
    after ``since_ms`` (None: any time)."""

    stages: frozenset[str]
    reasons: frozenset[str]
    since_ms: int | None = None


@dataclass
class Plan:
    """What a run replays, and the tally the summary line reports."""

    records: list[OutboundRecord] = field(default_factory=list)
    read: int = 0
    not_selected: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # why -> how many
    by_topic: Counter[str] = field(default_factory=Counter)  # target -> how many

    def summary(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        topics = ", ".join(f"{t}: {n}" for t, n in sorted(self.by_topic.items())) or "none"
        refused = ", ".join(f"{n} {why}" for why, n in sorted(self.refused.items())) or "none"
        return (
            f"replay: {self.read} dead letters read, {len(self.records)} selected, "
            f"{verb} {len(self.records)} ({topics}); refused: {refused}; "
            f"not selected: {self.not_selected}"
        )


def plan(values: Iterable[bytes], selection: Selection, to: str | None = None) -> Plan:
    """Decide, record by record, what to replay where (no I/O)."""
    result = Plan()
    for value in values:
        result.read += 1
        try:
            letter = _DECODER.decode(value)
            received_ms = parse_rfc3339_ms(letter.received_at)
        except (msgspec.DecodeError, BadTimestamp):
            result.refused["not_a_dead_letter"] += 1
            continue
        if (
            letter.stage not in selection.stages
            or letter.reason not in selection.reasons
            or (selection.since_ms is not None and received_ms < selection.since_ms)
        ):
            result.not_selected += 1
            continue
        if letter.raw_truncated:
            result.refused["truncated"] += 1
            continue
        try:
            raw = base64.b64decode(letter.raw, validate=True)
        except (binascii.Error, ValueError):
            result.refused["not_a_dead_letter"] += 1
            continue
        target = to if to is not None else letter.source_topic
        if not _KAFKA_TOPIC.match(target):
            result.refused["not_a_kafka_topic"] += 1
            continue
        result.records.append(OutboundRecord(target, original_key(raw), raw))
        result.by_topic[target] += 1
    return result


def original_key(raw: bytes) -> bytes | None:
    """The key the contract's topics use: the original's ``truck_id``, when it has one."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    truck_id = document.get("truck_id") if isinstance(document, dict) else None
    return truck_id.encode("utf-8", "surrogatepass") if isinstance(truck_id, str) else None


def read_topic(config: dict[str, str], topic: str) -> Iterator[bytes]:
    """Every record value of ``topic``, each partition from its beginning to its end."""
    source = KafkaBatchSource(config, topic, tail=False)
    partitions = [source.build_part("replay", part, None) for part in source.list_parts()]
    reading = list(partitions)  # side by side: each waits for its broker's answers
    try:
        while reading:
            for partition in list(reading):
                try:
                    batch = partition.next_batch()
                except StopIteration:
                    reading.remove(partition)
                    continue
                for fetch in batch:
                    yield from fetch.values
    finally:
        for partition in partitions:
            partition.close()


def topic_exists(config: dict[str, str], topic: str) -> bool:
    # Asking for one topic's metadata lets a broker create it (a producer-type client's
    # default): a check must not make what it checks for.
    asking = {**config, "allow.auto.create.topics": "false"}
    try:
        return bool(KafkaBatchSource(asking, topic).list_parts())
    except (RuntimeError, KeyError):
        return False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.replay",
        description=(
            "Produce the originals of selected dead letters (FLEET_TOPIC_DLQ) again, to "
            "their source topic or to --to. Brokers and topics come from the FLEET_* "
            "environment."
        ),
    )
    parser.add_argument(
        "--stage",
        action="append",
        required=True,
        help="the stage that dead-lettered them (notify, alerts, archive, ...); repeatable",
    )
    parser.add_argument(
        "--reason",
        action="append",
        required=True,
        help="their reason (undeliverable, rejected, unprocessable, ...); repeatable or "
        "comma-separated",
    )
    parser.add_argument(
        "--since",
        metavar="RFC3339",
        help="only those received at or after this instant, e.g. 2026-11-24T10:00:00Z",
    )
    parser.add_argument(
        "--to", metavar="TOPIC", help="produce to this topic instead of each source_topic"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; produce nothing"
    )
    return parser.parse_args(argv)


def _split(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip() for value in values for v in value.split(",") if v.strip())


def selection_from(args: argparse.Namespace) -> Selection:
    """The arguments as a Selection; ``ValueError`` names a bad one."""
    since_ms = None
    if args.since is not None:
        try:
            since_ms = parse_rfc3339_ms(args.since)
        except BadTimestamp as error:
            raise ValueError(f"--since: {error}") from None
    if args.to is not None and not _KAFKA_TOPIC.match(args.to):
        raise ValueError(f"--to: {args.to!r} is not a Kafka topic name")
    return Selection(_split(args.stage), _split(args.reason), since_ms)


def main(
    argv: Sequence[str] | None = None,
    *,
    settings_from_env: Callable[[], Settings] = Settings.from_env,
    out: Callable[[str], None] = print,
) -> int:
    configure_logging()
    args = parse_args(argv)
    try:
        selection = selection_from(args)
        settings = settings_from_env()
        check_kafka_properties(settings.kafka)
    except (ValueError, SettingsError) as error:  # SettingsError is a ValueError
        log.error("replay_refused", error=str(error))
        return EXIT_USAGE
    config = settings.kafka.config()
    try:
        if not topic_exists(config, settings.topics.dlq):
            log.error("replay_failed", error=f"no Kafka topic {settings.topics.dlq!r} (the DLQ)")
            return EXIT_KAFKA
        result = plan(read_topic(config, settings.topics.dlq), selection, args.to)
        if not args.dry_run and result.records:
            if args.to is not None:
                ensure_configured_topics(settings.kafka, [args.to])
            missing = sorted(t for t in result.by_topic if not topic_exists(config, t))
            if missing:
                log.error(
                    "replay_failed",
                    error=f"target topics do not exist: {missing}; nothing was produced "
                    "(name an existing topic with --to)",
                )
                return EXIT_KAFKA
            ConfirmedProducer(config).send_all(result.records)
    except (KafkaDeliveryError, KafkaUnreachable, RuntimeError) as error:
        log.error("replay_failed", error=str(error))
        return EXIT_KAFKA
    out(result.summary(args.dry_run))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
