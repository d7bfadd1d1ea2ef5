"""fleetwatch.replay: which dead letters are replayed, where, with which key, and what is
refused (no broker: the plan and the arguments)."""

from __future__ import annotations

import base64
import json

import pytest

from domain.dead_letters import Reason, Stage, dead_letter
from fleetwatch.replay import (
    EXIT_USAGE,
    Plan,
    Selection,
    main,
    original_key,
    parse_args,
    plan,
    selection_from,
)
from runtime.settings import Settings
from tests.builders import BEGINNING_MS

ALERT = json.dumps({"alert_id": "a" * 32, "truck_id": "T7", "rule": "instant_overspeed"}).encode()
READING = b'{"event_id":"e1","truck_id":"T1","ts":"2026-11-24T10:00:00.000Z","speed_kmh":50}'
NOTIFY_UNDELIVERABLE = Selection(frozenset({"notify"}), frozenset({"undeliverable"}))


def letter(
    stage: Stage = Stage.NOTIFY,
    reason: str = "undeliverable",
    raw: bytes = ALERT,
    source_topic: str = "fleet.alerts",
    at_ms: int = BEGINNING_MS,
) -> bytes:
    return dead_letter(stage, reason, "after 6 attempts: HTTP 503", source_topic, raw, at_ms)


def test_selected_records_go_back_to_their_source_topic_whole_and_keyed_by_truck() -> None:
    result = plan([letter(), letter(raw=ALERT.replace(b"T7", b"T8"))], NOTIFY_UNDELIVERABLE)
    assert [(r.topic, r.key, r.value) for r in result.records] == [
        ("fleet.alerts", b"T7", ALERT),
        ("fleet.alerts", b"T8", ALERT.replace(b"T7", b"T8")),
    ]
    assert result.by_topic == {"fleet.alerts": 2}
    assert (result.read, result.not_selected, sum(result.refused.values())) == (2, 0, 0)


@pytest.mark.parametrize(
    ("record", "selected"),
    [
        pytest.param(letter(), True, id="notify undeliverable"),
        pytest.param(letter(reason="rejected"), False, id="another reason"),
        pytest.param(
            letter(Stage.ALERTS, "undeliverable", source_topic="fleet.telemetry"),
            False,
            id="another stage",
        ),
        pytest.param(
            letter(Stage.ARCHIVE, Reason.SCHEMA, READING, "fleet.telemetry"),
            False,
            id="a reading",
        ),
    ],
)
def test_stage_and_reason_select(record: bytes, selected: bool) -> None:
    result = plan([record], NOTIFY_UNDELIVERABLE)
    assert len(result.records) == int(selected)
    assert result.not_selected == int(not selected)


def test_several_stages_and_reasons() -> None:
    selection = Selection(
        frozenset({"notify", "archive"}), frozenset({"undeliverable", "rejected", "schema"})
    )
    records = [
        letter(),
        letter(reason="rejected"),
        letter(Stage.ARCHIVE, Reason.SCHEMA, READING, "fleet.telemetry"),
        letter(reason="unprocessable"),
    ]
    result = plan(records, selection)
    assert [r.topic for r in result.records] == ["fleet.alerts", "fleet.alerts", "fleet.telemetry"]
    assert result.records[2].key == b"T1"
    assert result.not_selected == 1


def test_since_keeps_what_was_received_at_or_after_it() -> None:
    records = [letter(at_ms=BEGINNING_MS + n * 60_000) for n in range(5)]
    since = BEGINNING_MS + 2 * 60_000
    result = plan(records, Selection(frozenset({"notify"}), frozenset({"undeliverable"}), since))
    assert len(result.records) == 3
    assert result.not_selected == 2


def test_to_overrides_the_source_topic() -> None:
    result = plan([letter(), letter()], NOTIFY_UNDELIVERABLE, to="fleet.alerts.replay")
    assert {r.topic for r in result.records} == {"fleet.alerts.replay"}
    assert result.by_topic == {"fleet.alerts.replay": 2}


def test_truncated_originals_are_refused_and_counted() -> None:
    huge = b"x" * 2_000_000
    cut = letter(raw=huge)
    assert json.loads(cut)["raw_truncated"] is True
    result = plan([cut, letter()], NOTIFY_UNDELIVERABLE)
    assert len(result.records) == 1
    assert result.refused == {"truncated": 1}


def test_an_mqtt_source_topic_is_refused_unless_to_names_a_kafka_topic() -> None:
    bridge = letter(Stage.BRIDGE, Reason.SCHEMA, READING, "fleet/T1/telemetry")
    selection = Selection(frozenset({"bridge"}), frozenset({"schema"}))
    assert plan([bridge], selection).refused == {"not_a_kafka_topic": 1}
    result = plan([bridge], selection, to="fleet.telemetry")
    assert [(r.topic, r.key, r.value) for r in result.records] == [
        ("fleet.telemetry", b"T1", READING)
    ]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"not json", id="not json"),
        pytest.param(b'{"stage": "notify"}', id="fields missing"),
        pytest.param(
            json.dumps({**json.loads(letter()), "received_at": "yesterday"}).encode(),
            id="bad received_at",
        ),
        pytest.param(
            json.dumps({**json.loads(letter()), "raw": "!!not base64!!"}).encode(),
            id="raw not base64",
        ),
    ],
)
def test_records_not_in_the_dlq_format_are_refused(value: bytes) -> None:
    result = plan([value], NOTIFY_UNDELIVERABLE)
    assert not result.records
    assert result.refused == {"not_a_dead_letter": 1}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (ALERT, b"T7"),
        (READING, b"T1"),
        (b"\xff\xfe", None),
        (b"[1, 2]", None),
        (b'{"truck_id": 7}', None),
    ],
)
def test_key_is_the_originals_truck_id(raw: bytes, key: bytes | None) -> None:
    assert original_key(raw) == key


def test_an_empty_original_is_replayed_as_it_was() -> None:
    result = plan([letter(raw=b"")], NOTIFY_UNDELIVERABLE)
    assert [(r.key, r.value) for r in result.records] == [(None, b"")]
    assert base64.b64decode(json.loads(letter(raw=b""))["raw"]) == b""


def test_summary_line() -> None:
    result = plan(
        [letter(), letter(raw=b"x" * 2_000_000), letter(reason="rejected")],
        NOTIFY_UNDELIVERABLE,
    )
    assert result.summary(dry_run=False) == (
        "replay: 3 dead letters read, 1 selected, replayed 1 (fleet.alerts: 1); "
        "refused: 1 truncated; not selected: 1"
    )
    assert Plan().summary(dry_run=True) == (
        "replay: 0 dead letters read, 0 selected, would replay 0 (none); refused: none; "
        "not selected: 0"
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ["--stage", "notify", "--reason", "undeliverable", "--since", "yesterday"],
            id="since not RFC 3339",
        ),
        pytest.param(
            ["--stage", "notify", "--reason", "undeliverable", "--since", "2026-11-24T10:00:00"],
            id="since without offset",
        ),
        pytest.param(
            ["--stage", "notify", "--reason", "undeliverable", "--to", "fleet/alerts"],
            id="to not a Kafka topic",
        ),
    ],
)
def test_bad_arguments_exit_2_before_any_kafka_call(argv: list[str]) -> None:
    def no_settings() -> Settings:
        raise AssertionError("settings read although the arguments are bad")

    assert main(argv, settings_from_env=no_settings, out=lambda _line: None) == EXIT_USAGE


def test_settings_errors_exit_2() -> None:
    def bad() -> Settings:
        return Settings.from_env({"FLEET_KAFKA_BROKERS": ""})

    argv = ["--stage", "notify", "--reason", "undeliverable"]
    assert main(argv, settings_from_env=bad, out=lambda _line: None) == EXIT_USAGE


@pytest.mark.parametrize(
    "argv", [["--reason", "undeliverable"], ["--stage", "notify"], ["--stage", "notify", "-x"]]
)
def test_stage_and_reason_are_required(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == EXIT_USAGE


def test_reasons_may_be_comma_separated() -> None:
    args = parse_args(
        ["--stage", "notify", "--reason", "undeliverable,rejected", "--reason", "unprocessable"]
    )
    assert selection_from(args).reasons == {"undeliverable", "rejected", "unprocessable"}
    since = selection_from(
        parse_args(["--stage", "a", "--reason", "b", "--since", "2026-11-24T11:00:00+01:00"])
    ).since_ms
    assert since == BEGINNING_MS
