"""Dead letters in every flow: one shape (issue 16).

Steps emit their good output and ``domain.dead_letters.DeadLetter`` items in one stream;
``split_dead_letters`` parts them into ``oks`` and ``errs`` (as bytewax's
``connectors/kafka/operators.py`` parts Kafka errors from messages), and
``output_dead_letters`` counts each one in ``fleetwatch_dead_letters_total``, encodes it
(CONTRACT.md section 3) and writes all of a flow's dead letters to its one DLQ sink.

Two places write dead letters themselves, and say why: the archive (its dead letters must be
confirmed before a roll's files commit its offsets) and the notifier's sink (a delivery
fails only when the API answers, inside the sink), both through ``encode_counted``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bytewax import operators as op
from bytewax.dataflow import Stream, operator
from bytewax.outputs import Sink

from connectors.kafka import OutboundRecord
from domain.dead_letters import DeadLetter
from runtime.metrics import DEAD_LETTERS

X = TypeVar("X")
Y = TypeVar("Y")


@dataclass(frozen=True)
class OksAndErrs(Generic[X]):
    """A stream parted: the good items, and the dead letters."""

    oks: Stream[X]
    errs: Stream[DeadLetter]


def _ok(item: X | DeadLetter) -> X | None:
    return None if isinstance(item, DeadLetter) else item


def _err(item: object) -> DeadLetter | None:
    return item if isinstance(item, DeadLetter) else None


@operator
def split_dead_letters(step_id: str, up: Stream[X | DeadLetter]) -> OksAndErrs[X]:
    """Part ``up`` into its good items and its dead letters."""
    oks: Stream[X] = op.filter_map("oks", up, _ok)
    errs: Stream[DeadLetter] = op.filter_map("errs", up, _err)
    return OksAndErrs(oks, errs)


def encode_counted(letter: DeadLetter) -> bytes:
    """The DLQ value of ``letter``, counted: every dead letter is counted here, once."""
    DEAD_LETTERS.labels(letter.stage, letter.reason).inc()
    return letter.encode()


def to_kafka(dlq_topic: str) -> Callable[[DeadLetter], OutboundRecord]:
    """Dead letters as records of the DLQ topic (``on_delivered`` kept: the bridge's ack)."""

    def record(letter: DeadLetter) -> OutboundRecord:
        return OutboundRecord(dlq_topic, letter.key, encode_counted(letter), letter.on_delivered)

    return record


def to_line(letter: DeadLetter) -> tuple[str, bytes]:
    """Dead letters as lines of a JSONL file (``connectors.jsonl_sink.JsonlSink``)."""
    return "", encode_counted(letter)


@operator
def output_dead_letters(
    step_id: str,
    encode: Callable[[DeadLetter], Y],
    sink: Sink[Y],
    *errs: Stream[DeadLetter],
) -> None:
    """All of a flow's dead letters, counted and encoded, to its one DLQ sink."""
    merged: Stream[DeadLetter] = op.merge("merge", *errs)
    encoded = op.map("encode", merged, encode)
    op.output("dlq", encoded, sink)
