"""The notifier against hostile input (issue 14): alerts at the edges of what Python's types
hold, wrong types in every field, text that breaks lines or cannot be encoded, and an e-mail
API that answers with odd statuses, huge bodies and Retry-After values in any script.

Every record must end in exactly one place, an e-mail or a dead letter with a contract
reason, and nothing may raise."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from connectors.email_api import MAX_ANSWER_BYTES, EmailApi
from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.notify_sink import NotifySink
from dataflows import notify
from dataflows._dead_letters import to_line
from devtools.email_receiver import EmailReceiver, Fail
from domain.alerts import Alert, Severity, build_alert, decode_alert, encode_alert
from domain.dead_letters import DeadLetter
from domain.history import Assignment, Driver, HistoryIndex
from domain.notifications import (
    Email,
    RetryPolicy,
    Routes,
    Verdict,
    classify,
    email_json,
    one_line,
    render,
)
from domain.readings import Reading, Rejection
from domain.rules import Detection, Rule
from runtime.metrics import DEAD_LETTERS
from runtime.settings import Topics
from tests.builders import BEGINNING, BEGINNING_MS

SECRET = b"0123456789abcdef0123456789abcdef"
TOKYO = ZoneInfo("Asia/Tokyo")  # east of UTC: 9999-12-31T23:00Z is already year 10000 there
ROUTES = Routes(("ops@fleet.example",), {Severity.CRITICAL: ("oncall@fleet.example",)})
DECODE_REASONS = {"schema", "out_of_range", "bad_timestamp", "invalid_json"}
# Everything a single-line field must not contain (str.splitlines's boundaries and the
# other control characters).
BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The only markup render writes: the title, the list of facts and the position's map link.
MARKUP = re.compile(r'</?(h2|ul|li)>|<a href="https://www\.openstreetmap\.org/\?[^"<>]*">|</a>')


def lines_of(email: Email) -> int:
    """The lines the text must have: the title and one per fact of the HTML's list (whose
    items a line break in a value cannot add to)."""
    return 1 + email.html.count("<li>")


def built_alert(*, with_driver: bool = True, truck: str = "T7") -> Alert:
    """What dataflows.alerts writes: build_alert's alert."""
    reading = Reading("e-1", truck, BEGINNING_MS, 141.5)
    history = HistoryIndex.build(
        [Driver("D-ana", "Ana Berg", "2019-04-01", 4, 88.5, 9_120.0, "high")],
        [Assignment(truck, "D-ana", 0, None)] if with_driver else [],
    )
    detection = Detection(Rule.INSTANT, truck, (reading,), 130.0)
    return build_alert(detection, 0, history)


def real_alert(*, with_driver: bool = True, truck: str = "T7") -> dict[str, Any]:
    """What dataflows.alerts writes, encoded and read back as JSON (to be mutated)."""
    document: dict[str, Any] = json.loads(
        encode_alert(built_alert(with_driver=with_driver, truck=truck))
    )
    return document


VALID_ALERT = built_alert()
VALID = real_alert()
ALERT_FIELDS = list(VALID)
DRIVER_FIELDS = list(VALID["driver"])
HOLE = "__hole__"


def with_raw(path: str, fragment: str, base: dict[str, Any] | None = None) -> bytes:
    """A valid alert whose field ``path`` (``driver.name``: a field of the driver) holds the
    raw JSON text ``fragment`` (which need not be JSON a Python value can make)."""
    document = json.loads(json.dumps(base or VALID))
    *parents, last = path.split(".")
    target = document
    for parent in parents:
        target = target[parent]
    target[last] = HOLE
    return json.dumps(document).replace(f'"{HOLE}"', fragment).encode()


def with_value(path: str, value: Any) -> bytes:
    return with_raw(path, json.dumps(value))


def without(path: str) -> bytes:
    """A valid alert without the field ``path`` (``driver.name``: a field of the driver)."""
    document = json.loads(json.dumps(VALID))
    *parents, last = path.split(".")
    target = document
    for parent in parents:
        target = target[parent]
    del target[last]
    return json.dumps(document).encode()


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- The adversarial corpus: (name, record, the outcome it must have) ----------------------
# The outcome is a dead-letter reason, or EMAIL (rendered, every single-line field clean;
# "email:UTC": rendered in UTC, the others are rendered in Tokyo). "crashed": the record
# stopped the flow before issue 14.
val, raw = with_value, with_raw
SCHEMA, RANGE, TS, JSON, EMAIL = "schema", "out_of_range", "bad_timestamp", "invalid_json", "email"
LATEST = "9999-12-31T23:59:59.999Z"
LATEST_WEST, FIRST_EAST = "9999-12-31T23:59:59.999-01:00", "0001-01-01T00:00:00+01:00"
DEEP = deep(100_000)
SURROGATE_BYTES = json.dumps(VALID).replace("Ana", "\ud800").encode("utf-8", "surrogatepass")
CORPUS: list[tuple[str, bytes, str]] = [
    ("window_end_9999_west_of_utc", val("window_end", LATEST_WEST), TS),  # crashed
    ("window_start_year_1_east_of_utc", val("window_start", FIRST_EAST), TS),  # crashed
    ("window_end_last_ms_of_9999_in_tokyo", val("window_end", LATEST), TS),  # crashed
    ("window_start_not_a_date", val("window_start", "yesterday"), TS),  # crashed
    ("window_end_february_30", val("window_end", "2026-02-30T10:00:00Z"), TS),  # crashed
    ("window_start_before_1970", val("window_start", "1969-12-31T23:59:59Z"), TS),  # crashed
    ("window_start_arabic_indic_digits", val("window_start", "٢٠٢٦-11-24T10:00:00Z"), TS),
    ("window_start_as_epoch_number", val("window_start", BEGINNING_MS), SCHEMA),
    ("detected_at_garbage", val("detected_at", "now-ish"), TS),
    ("max_speed_beyond_float", raw("max_speed_kmh", "1e400"), RANGE),
    ("max_speed_minus_beyond_float", raw("max_speed_kmh", "-1e400"), RANGE),
    ("max_speed_nan_token", raw("max_speed_kmh", "NaN"), JSON),
    ("mean_speed_infinity_token", raw("mean_speed_kmh", "Infinity"), JSON),
    ("max_speed_5000_digit_int", raw("max_speed_kmh", "9" * 5000), RANGE),
    ("count_4000_digit_int", raw("count", "9" * 4000), RANGE),
    ("count_zero", val("count", 0), RANGE),
    ("threshold_negative", val("threshold_kmh", -1.0), RANGE),
    ("speed_over_baseline_1e300", val("driver.speed_over_baseline_kmh", 1e300), RANGE),
    ("count_as_string", val("count", "5"), SCHEMA),
    ("count_as_float", val("count", 5.5), SCHEMA),
    ("count_as_bool", val("count", True), SCHEMA),
    ("event_ids_not_a_list", val("event_ids", "e-1"), SCHEMA),
    ("event_ids_of_numbers", val("event_ids", [1, 2]), SCHEMA),
    ("driver_as_list", val("driver", ["Ana"]), SCHEMA),  # crashed
    ("driver_as_string", val("driver", "Ana Berg"), SCHEMA),  # crashed
    ("driver_name_as_object", val("driver.name", {"first": "Ana"}), SCHEMA),
    ("repeat_offender_as_string", val("driver.repeat_offender", "yes"), SCHEMA),
    ("severity_as_object", val("severity", {"level": 1}), SCHEMA),
    ("severity_unknown", val("severity", "apocalyptic"), SCHEMA),
    ("truck_id_null", val("truck_id", None), SCHEMA),
    ("truck_id_1mb", val("truck_id", "T" * 1_000_000), SCHEMA),
    ("count_missing", without("count"), SCHEMA),
    ("detected_at_missing", without("detected_at"), SCHEMA),
    ("driver_without_risk_tier", without("driver.risk_tier"), SCHEMA),
    ("position_out_of_range", val("position", {"lat": 91.0, "lon": 0.0}), RANGE),
    ("position_as_list", val("position", [60.1, 24.9]), SCHEMA),
    ("rule_version_negative", val("rule_version", -1), RANGE),
    ("details_not_an_object", val("details", [1]), SCHEMA),
    ("details_nested_100000_deep", raw("details", '{"a":' + DEEP + "}"), SCHEMA),  # crashed
    ("unknown_field_nested_100000_deep", raw("extra", DEEP), SCHEMA),  # crashed
    ("alert_id_non_ascii", val("alert_id", "ä" * 32), SCHEMA),  # crashed
    ("alert_id_with_crlf", val("alert_id", "abc\r\nX-Injected: 1"), SCHEMA),
    ("alert_id_empty", val("alert_id", ""), SCHEMA),
    ("alert_id_lone_surrogate", raw("alert_id", r'"\ud800"'), JSON),  # crashed
    ("driver_name_lone_surrogate", raw("driver.name", r'"Ana \udfff"'), JSON),
    ("surrogate_as_raw_bytes", SURROGATE_BYTES, JSON),
    ("not_utf8", b"\xff\xfe{}", JSON),
    ("empty_record_tombstone", b"", JSON),
    ("top_level_array", b"[]", SCHEMA),
    ("top_level_string", b'"alert"', SCHEMA),
    ("truncated", json.dumps(VALID).encode()[:-5], JSON),
    # Accepted: what the renderer can show, every line break taken out.
    ("truck_id_with_crlf", val("truck_id", "T7\r\nBcc: everyone@example.com"), EMAIL),
    ("driver_name_with_line_separators", val("driver.name", "A\u2028n\u2029a\x85\x0b\x0c"), EMAIL),
    ("rule_with_newline", val("rule", "custom\nrule"), EMAIL),
    ("driver_id_arabic_indic_digits", val("driver_id", "D-١٢٣"), EMAIL),
    ("driver_name_of_1000_chars", val("driver.name", "A" * 1000), EMAIL),  # history: no limit
    ("count_at_its_limit", raw("count", "1000000"), EMAIL),
    ("no_driver", json.dumps(real_alert(with_driver=False)).encode(), EMAIL),
    ("future_fields", val("details", {"road": "Mannerheimintie", "limit": 50}), EMAIL),
    ("position", val("position", {"lat": 60.17, "lon": 24.94}), EMAIL),
    ("unknown_extra_fields", raw("x_extra", '{"anything": [1e300, null, "\\u2028"]}'), EMAIL),
    ("window_end_last_ms_of_9999_in_utc", val("window_end", LATEST), "email:UTC"),
]  # fmt: skip


def outcome(raw: bytes, zone: ZoneInfo) -> str:
    """decode -> render -> the request body, as the notifier runs them: "email" or the
    dead letter's reason. Checks what every e-mail must satisfy on the way."""
    alert = decode_alert(raw, zone)
    if isinstance(alert, Rejection):
        assert alert.reason in DECODE_REASONS
        assert alert.detail
        return str(alert.reason)
    email = render(alert, ROUTES, zone)
    body = json.dumps(email_json(alert, email), allow_nan=False).encode("utf-8")
    document = json.loads(body)
    single_line = [email.subject, *email.to, *[v for v in document["tags"].values() if v]]
    assert not any(BREAKS.search(field) for field in single_line), single_line
    assert len(email.text.splitlines()) == lines_of(email), "no value adds a line to the text"
    assert "<" not in re.sub(MARKUP, "", email.html), "HTML escaped"
    return "email"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [pytest.param(raw, expected, id=name) for name, raw, expected in CORPUS],
)
def test_corpus(raw: bytes, expected: str) -> None:
    zone = ZoneInfo("UTC") if expected == "email:UTC" else TOKYO
    assert outcome(raw, zone) == expected.split(":", maxsplit=1)[0]


def test_the_alerts_flows_output_is_accepted_as_it_is() -> None:
    for alert in (built_alert(), built_alert(with_driver=False)):
        decoded = decode_alert(encode_alert(alert), TOKYO)
        assert decoded == alert
    assert outcome(json.dumps(VALID).encode(), TOKYO) == "email"


def test_a_line_break_in_a_value_cannot_add_a_line_or_a_header() -> None:
    raw = with_value("truck_id", "T7\r\nBcc: everyone@example.com")
    alert = decode_alert(raw, TOKYO)
    assert not isinstance(alert, Rejection)
    email = render(alert, ROUTES, TOKYO)
    assert email.subject == (
        "[CRITICAL] Critical over-speed: truck T7  Bcc: everyone@example.com at 141.5 km/h"
    )
    assert "Truck: T7  Bcc: everyone@example.com\n" in email.text


# --- Fuzzing: any field replaced by any JSON value, or by raw text no value makes ----------

EDGE_TEXT = [
    "\ud800", "\udfff", "a\r\nb", "\r", "\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c",
    "١٢٣", "²", "\U0001d7d7\U0001d7d7", "", " ", "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59.999-01:00",
    "0001-01-01T00:00:00+01:00", "1970-01-01T00:00:00.000Z", "2026-11-24T10:00:00+14:00",
    "2026-11-24T10:00:00.123456789Z", "x" * 300, "critical", "warning",
]  # fmt: skip
EDGE_NUMBERS = [
    0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400, 1e308, -1e308, 5e-324,
    float("nan"), float("inf"), float("-inf"), 0.1, 400.0, 10_000.0, 10_000.5,
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # with NaN and infinities: json.dumps writes them as NaN / Infinity
    st.sampled_from(EDGE_NUMBERS),
    st.text(),
    st.text(st.characters(codec=None, categories=["Cs", "Zl", "Zp", "Cc", "Nd", "No"])),
    st.sampled_from(EDGE_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _encode(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


raw_fragments = st.one_of(
    st.builds(_encode, json_values, st.booleans()),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" + "0" * 5000,
                     r'"\ud800"', r'"\udc00x"', r'"\ud800\udc00"', "[]", "{}", "", "tru"]),
    st.integers(1, 5000).map(deep),
    st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(0, 300_000).map(lambda n: json.dumps("y" * n)),
)  # fmt: skip
paths = st.sampled_from(
    ALERT_FIELDS + [f"driver.{f}" for f in DRIVER_FIELDS] + ["rule_version", "position",
                                                            "details", "unknown_extra"]
)  # fmt: skip
zones = st.sampled_from([TOKYO, ZoneInfo("UTC"), ZoneInfo("Pacific/Kiritimati"),
                         ZoneInfo("Pacific/Pago_Pago"), ZoneInfo("America/St_Johns")])  # fmt: skip


def mutated(mutations: list[tuple[str, str]]) -> bytes:
    """VALID with each (path, raw JSON text) applied; a path under a field an earlier
    mutation replaced is skipped. A raw surrogate in the text becomes invalid UTF-8."""
    document = json.loads(json.dumps(VALID))
    holes: dict[str, str] = {}
    for n, (path, fragment) in enumerate(mutations):
        *parents, last = path.split(".")
        target = document
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if isinstance(target, dict):
            hole = f"__hole{n}__"
            holes[hole] = fragment
            target[last] = hole
    text = json.dumps(document)
    for hole, fragment in holes.items():
        text = text.replace(f'"{hole}"', fragment)
    return text.encode("utf-8", "surrogatepass")


@given(mutations=st.lists(st.tuples(paths, raw_fragments), min_size=1, max_size=3), zone=zones)
def test_fuzz_every_mutated_alert_is_an_email_or_a_dead_letter(
    mutations: list[tuple[str, str]], zone: ZoneInfo
) -> None:
    assert outcome(mutated(mutations), zone) in {"email", *DECODE_REASONS}


@given(
    truck=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    speeds=st.lists(st.floats(0, 400), min_size=3, max_size=3),
    start_ms=st.integers(0, 253_402_300_799_999 - 86_400_000),
    name=st.text(max_size=40),
    zone=zones,
)
def test_fuzz_every_alert_of_the_contract_is_e_mailed(
    truck: str, speeds: list[float], start_ms: int, name: str, zone: ZoneInfo
) -> None:
    """The other side: strictness must not cost an alert the contract allows (any truck id,
    speed, driver name and instant from 1970 until a day before the end of 9999)."""
    reading = Reading("e-1", truck, start_ms, speeds[0])
    history = HistoryIndex.build(
        [Driver("D", name, "2020-01-01", 1, speeds[1], 1.0, "low")],
        [Assignment(truck, "D", 0, None)],
    )
    alert = build_alert(Detection(Rule.INSTANT, truck, (reading,), speeds[2]), start_ms, history)
    assert outcome(encode_alert(alert), zone) == "email"


# --- Retry-After: ASCII delta-seconds or an HTTP-date; anything else is the backoff ---------

NOW = datetime(2026, 11, 24, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=6, base_s=0.5, cap_s=30.0)
BACKOFF = "backoff"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("7", 7.0, id="ascii-digits"),
        pytest.param(" 7\t", 7.0, id="ascii-digits-with-blanks"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("3600", 30.0, id="capped"),
        pytest.param("99999999999999999999", 30.0, id="20-digits"),
        pytest.param("9" * 5000, 30.0, id="5000-digits"),
        pytest.param("١٢٣", BACKOFF, id="arabic-indic-digits"),
        pytest.param("²", BACKOFF, id="superscript-two"),  # crashed: isdigit() but not int()
        pytest.param("\U0001d7d7", BACKOFF, id="mathematical-digit"),
        pytest.param("1e9", BACKOFF, id="exponent"),
        pytest.param("3.5", BACKOFF, id="fraction"),
        pytest.param("-5", BACKOFF, id="negative"),
        pytest.param("+5", BACKOFF, id="plus-sign"),
        pytest.param("nan", BACKOFF, id="nan"),
        pytest.param("inf", BACKOFF, id="inf"),
        pytest.param("", BACKOFF, id="empty"),
        pytest.param("   ", BACKOFF, id="blank"),
        pytest.param("Tue, 24 Nov 2026 00:00:05 GMT", 5.0, id="http-date"),
        pytest.param("Tue, 24 Nov 2026 00:00:05 -0000", 5.0, id="http-date-minus-zero"),
        pytest.param("Mon, 23 Nov 2026 00:00:00 GMT", 0.0, id="http-date-past"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", 30.0, id="http-date-year-9999"),
        pytest.param("Mon, 01 Jan 0001 00:00:00 +0100", 0.0, id="http-date-year-1-east"),
        pytest.param("Tue, 30 Feb 2026 00:00:00 GMT", BACKOFF, id="http-date-february-30"),
        pytest.param("Tue, 24 Nov 10000 00:00:00 GMT", BACKOFF, id="http-date-year-10000"),
        pytest.param("Tue, 24 Nov 2026 25:00:00 GMT", BACKOFF, id="http-date-hour-25"),
        pytest.param("Tue, 24 Nov 2026 00:00:05 +9999", BACKOFF, id="http-date-offset-99h"),
        pytest.param("Tue, ٢٤ Nov 2026 00:00:05 GMT", BACKOFF, id="http-date-arabic-digits"),
        pytest.param("Tue, 24 Nov", BACKOFF, id="http-date-cut"),
        pytest.param("x" * 100_000, BACKOFF, id="100k-chars"),
    ],
)
def test_retry_after(header: str, expected: float | str) -> None:
    got = POLICY.delay_s(2, header, random.Random(7), NOW)
    if expected == BACKOFF:
        assert got == POLICY.delay_s(2, None, random.Random(7), NOW)
        assert 0 <= got <= 1.0
    else:
        assert got == expected


@given(header=st.text(max_size=60) | st.text(st.characters(codec="latin-1"), max_size=60))
def test_retry_after_never_raises_and_stays_within_the_cap(header: str) -> None:
    assert 0 <= POLICY.delay_s(3, header, random.Random(1), NOW) <= POLICY.cap_s


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.DELIVERED), (299, Verdict.DELIVERED), (429, Verdict.RETRY),
     (599, Verdict.RETRY), (600, Verdict.REJECTED), (999, Verdict.REJECTED),
     (100, Verdict.REJECTED), (302, Verdict.REJECTED), (0, Verdict.REJECTED)],
)  # fmt: skip
def test_odd_status_codes(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


# --- Line breaks out of single-line fields ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a\r\nb", "a  b", id="crlf"),
        pytest.param("a\rb", "a b", id="cr"),
        pytest.param("a\nb", "a b", id="lf"),
        pytest.param("a\u2028b", "a b", id="line-separator"),
        pytest.param("a\u2029b", "a b", id="paragraph-separator"),
        pytest.param("a\x85b", "a b", id="next-line"),
        pytest.param("a\x0bb", "a b", id="vertical-tab"),
        pytest.param("a\x0cb", "a b", id="form-feed"),
        pytest.param("a\x1cb\x1db\x1eb", "a b b b", id="file-group-record-separators"),
        pytest.param("a\x00b\tc", "a b c", id="nul-and-tab"),
        pytest.param("a\ud800b", "a\ufffdb", id="lone-surrogate"),
        pytest.param(
            "Ana Berg \u2013 ١٢٣ 😀", "Ana Berg \u2013 ١٢٣ 😀", id="ordinary-unicode-untouched"
        ),
        pytest.param("x" * 300, "x" * 255 + "…", id="cut-at-256"),
    ],
)
def test_one_line(text: str, expected: str) -> None:
    assert one_line(text) == expected
    assert one_line(text).splitlines() == [expected]


@pytest.mark.parametrize("brk", ["\r\n", "\r", "\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c"])
def test_no_line_break_reaches_subject_recipients_tags_or_a_text_line(brk: str) -> None:
    # (The severity, once a free text here too, is a Severity: it has no room for a break.)
    assert VALID_ALERT.driver is not None
    driver = replace(VALID_ALERT.driver, name=f"Ana{brk}Alert id: forged")
    alert = replace(VALID_ALERT, rule=f"r{brk}x", truck_id=f"T{brk}Bcc: x@y", driver=driver)
    routes = Routes((f"ops@fleet.example{brk}Bcc: evil@example.com",))
    email = render(alert, routes, TOKYO)
    tags = email_json(alert, email)["tags"]
    for field in [email.subject, *email.to, *tags.values()]:
        assert not BREAKS.search(field), repr(field)
    assert len(email.text.splitlines()) == lines_of(email)
    assert sum(line.startswith("Alert id:") for line in email.text.splitlines()) == 1
    assert "Ana Alert id: forged" in email.text.replace("  ", " ")


def test_html_is_still_escaped() -> None:
    alert = replace(VALID_ALERT, truck_id="<script>alert(1)</script>")
    email = render(alert, ROUTES, TOKYO)
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html


# --- The last line of defence: one alert that makes a step raise ---------------------------


def count(reason: str) -> float:
    return float(DEAD_LETTERS.labels("notify", reason)._value.get())


@pytest.mark.unprocessable_expected
def test_the_decoder_dead_letters_an_alert_that_makes_it_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(raw: bytes, zone: Any) -> Any:
        if b"boom" in raw:
            raise OverflowError("date value out of range")
        return decode_alert(raw, zone)

    monkeypatch.setattr(notify, "decode_alert", explode)
    decoder = notify.AlertDecoder("alerts", TOKYO, now=lambda: BEGINNING)
    good = json.dumps(VALID).encode()
    with structlog.testing.capture_logs() as logs:
        out = decoder.decode_batch([Fetch(0, 0, 2, [good, with_value("x", "boom"), good])])
    assert isinstance(out[0], tuple)
    assert isinstance(out[2], tuple)
    assert out[0][0] == out[2][0] == VALID["alert_id"], "goes on"
    letter = out[1]
    assert isinstance(letter, DeadLetter)
    before = count("unprocessable")
    record = json.loads(to_line(letter)[1])  # the DLQ output counts it as it encodes it
    assert count("unprocessable") - before == 1
    assert (record["stage"], record["reason"]) == ("notify", "unprocessable")
    assert "OverflowError: date value out of range" in record["detail"]
    assert [(e["event"], e["log_level"]) for e in logs if e["event"] == "unprocessable"] == [
        ("unprocessable", "error")
    ]


def test_the_decoder_dead_letters_hostile_records_with_their_reason() -> None:
    decoder = notify.AlertDecoder("alerts", TOKYO, now=lambda: BEGINNING)
    corpus = [(raw, expected) for _, raw, expected in CORPUS if expected in DECODE_REASONS]
    out = decoder.decode_batch([Fetch(0, 0, len(corpus), [raw for raw, _ in corpus])])
    reasons = [str(letter.reason) for letter in out if isinstance(letter, DeadLetter)]
    assert reasons == [expected for _, expected in corpus]


@pytest.fixture
def receiver() -> Iterator[EmailReceiver]:
    started = EmailReceiver(SECRET).start()
    try:
        yield started
    finally:
        started.stop()


def api(url: str, slept: list[float], max_attempts: int = 3) -> EmailApi:
    return EmailApi(
        url,
        SECRET,
        ROUTES,
        TOKYO,
        timeout_s=5,
        policy=RetryPolicy(max_attempts=max_attempts),
        concurrency=2,
        sleep=slept.append,
    )


@pytest.mark.unprocessable_expected
def test_the_sink_dead_letters_an_alert_it_cannot_render(receiver: EmailReceiver) -> None:
    """Bypassing the decoder (a bug of ours): a window that is no date makes render raise.
    That alert is dead-lettered ``unprocessable`` without a call; the other is e-mailed."""
    dead: list[OutboundRecord] = []
    slept: list[float] = []
    sink = NotifySink(
        lambda: api(receiver.url, slept), dead.extend, Topics(alerts="alerts", dlq="dlq"), 3600
    )
    partition = sink.build_part("notify", "0", None)
    broken = replace(VALID_ALERT, alert_id="broken", window_start="not a date")
    before = count("unprocessable")
    with structlog.testing.capture_logs() as logs:
        partition.write_batch([(broken, b"raw-broken"), (VALID_ALERT, b"raw-good")])
    partition.close()
    assert count("unprocessable") - before == 1
    assert list(receiver.emails) == [VALID["alert_id"]]
    assert receiver.calls_for("broken") == [], "no call for an alert that cannot be rendered"
    assert len(dead) == 1
    record = json.loads(dead[0].value)
    assert (record["stage"], record["reason"]) == ("notify", "unprocessable")
    assert record["detail"].startswith("BadTimestamp: ")
    assert any(e["event"] == "unprocessable" and e["log_level"] == "error" for e in logs)
    # Only the delivered one is remembered: the broken one, replayed after a fix, is tried.
    assert partition.snapshot().keys() == {VALID["alert_id"]}


# --- The e-mail API's answers are hostile input too -----------------------------------------


@pytest.mark.parametrize(
    "header", ["²", "١٢٣", "1e9", "-1", "Fri, 31 Dec 99999 23:59:59 GMT", "Tue, 30 Feb 2026"]
)
def test_a_retry_after_in_no_rfc_form_falls_back_to_the_backoff(
    receiver: EmailReceiver, header: str
) -> None:
    slept: list[float] = []
    client = api(receiver.url, slept)
    receiver.fail(VALID["alert_id"], Fail(503, retry_after=header))
    delivery = client.deliver(VALID_ALERT)
    client.close()
    assert (delivery.verdict, delivery.attempts) == (Verdict.DELIVERED, 2)
    assert len(slept) == 1
    assert 0 <= slept[0] <= POLICY.base_s, "the first backoff, not a number read from it"


def test_a_retry_after_at_year_9999_waits_the_cap(receiver: EmailReceiver) -> None:
    slept: list[float] = []
    client = api(receiver.url, slept)
    receiver.fail(VALID["alert_id"], Fail(429, retry_after="Fri, 31 Dec 9999 23:59:59 GMT"))
    assert client.deliver(VALID_ALERT).verdict is Verdict.DELIVERED
    client.close()
    assert slept == [RetryPolicy().cap_s]


def test_a_huge_answer_is_not_read_whole(receiver: EmailReceiver) -> None:
    slept: list[float] = []
    client = api(receiver.url, slept, max_attempts=2)
    receiver.fail(VALID["alert_id"], Fail(503, body_bytes=20_000_000), Fail(500))
    delivery = client.deliver(VALID_ALERT)
    client.close()
    assert (delivery.verdict, delivery.attempts) == (Verdict.RETRY, 2)
    receiver.fail("other", Fail(400, body_bytes=20_000_000))
    client = api(receiver.url, slept)
    rejected = client.deliver(replace(VALID_ALERT, alert_id="other"))
    client.close()
    assert rejected.verdict is Verdict.REJECTED
    assert rejected.detail.startswith('HTTP 400: {"error": "xxx')
    assert len(rejected.detail) < MAX_ANSWER_BYTES


def test_an_undefined_status_code_is_permanent(receiver: EmailReceiver) -> None:
    slept: list[float] = []
    client = api(receiver.url, slept)
    receiver.fail(VALID["alert_id"], Fail(999))
    delivery = client.deliver(VALID_ALERT)
    client.close()
    assert (delivery.verdict, delivery.attempts) == (Verdict.REJECTED, 1)
    assert slept == []
