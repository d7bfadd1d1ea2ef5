"""runtime.redaction: secrets masked in URLs, DSNs, Kafka properties and free text; and the
connectors that quote a URL or DSN in an error (issue 14: secrets never reach logs)."""

from __future__ import annotations

import ast
import json
import string
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
import structlog
from botocore.exceptions import EndpointConnectionError, SSLError
from hypothesis import assume, given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from connectors.dynamodb import TelemetryTable, dynamodb_client
from connectors.email_api import EmailApi
from connectors.history import HistoryError, load_history_postgres
from domain.alerts import Alert, build_alert
from domain.history import Assignment, Driver, HistoryIndex
from domain.notifications import RetryPolicy, Routes, Verdict
from domain.readings import Reading
from domain.rules import Detection, Rule
from runtime import redaction
from runtime.redaction import (
    MASK,
    conninfo_error,
    is_secret_name,
    redact_dsn,
    redact_kafka_properties,
    redact_text,
    redact_url,
)
from tests.builders import BEGINNING_MS

ROOT = Path(__file__).resolve().parents[2]

# (url, redacted, the secrets that must not survive)
URLS = [
    ("mqtt://host", "mqtt://host", []),
    ("mqtt://host:1883", "mqtt://host:1883", []),
    ("mqtt://bob:hunter2@host", "mqtt://bob:***@host", ["hunter2"]),
    ("mqtts://bob:hunter2@host:8883", "mqtts://bob:***@host:8883", ["hunter2"]),
    ("http://bob:hunter2@host/v1/send", "http://bob:***@host/v1/send", ["hunter2"]),
    ("https://bob:hunter2@host:8443/v1", "https://bob:***@host:8443/v1", ["hunter2"]),
    # unencoded @ : % and spaces in the password: the user info ends at the last '@'
    ("mqtt://bob:p@ss@host:1883", "mqtt://bob:***@host:1883", ["p@ss", "ss@"]),
    ("mqtt://bob:p:a:ss@host", "mqtt://bob:***@host", ["p:a:ss", "a:ss"]),
    ("http://bob:100%sure@host", "http://bob:***@host", ["100%sure", "sure"]),
    ("mqtts://bob:p@ss w0rd@host:8883", "mqtts://bob:***@host:8883", ["ss w0rd", "w0rd"]),
    # percent-encoded: masked as written
    ("https://bob:p%40ss%2Fw0rd%20x@host", "https://bob:***@host", ["p%40ss", "w0rd"]),
    ("mqtt://user%40corp:hunter2@host", "mqtt://user%40corp:***@host", ["hunter2"]),
    # '/', '?' or '#' before the last '@': ambiguous, all but the scheme masked
    ("mqtt://bob:pa/ss@host:1883", "mqtt://***", ["pa/ss", "ss@"]),
    ("http://bob:pa?ss@host", "http://***", ["pa?ss", "pa"]),
    ("http://bob:pa#ss@host/x", "http://***", ["pa#ss", "pa"]),
    ("https://api.example/send?to=ops@fleet.example", "https://***", ["ops@"]),
    ("http://host/users/@me", "http://***", []),
    # a user info without a password is often a token
    ("mqtt://tok3n-abc@host", "mqtt://***@host", ["tok3n-abc"]),
    ("http://:hunter2@host", "http://:***@host", ["hunter2"]),
    ("http://bob:@host", "http://bob:***@host", []),
    # IPv6 hosts
    ("mqtt://bob:hunter2@[::1]:1883", "mqtt://bob:***@[::1]:1883", ["hunter2"]),
    ("https://bob:p@ss@[2001:db8::1]/x", "https://bob:***@[2001:db8::1]/x", ["p@ss"]),
    ("http://[fe80::1%25eth0]:8000/", "http://[fe80::1%25eth0]:8000/", []),
    # query strings: every value masked, keys kept; a bare value too; the fragment too
    (
        "https://api.example/v1/send?api_key=k3y&signature=s1g&v=2",
        "https://api.example/v1/send?api_key=***&signature=***&v=***",
        ["k3y", "s1g"],
    ),
    ("https://api.example/send?t0ken", "https://api.example/send?***", ["t0ken"]),
    ("https://api.example/send?a=&b", "https://api.example/send?a=&***", []),
    ("https://h/x?token=abc#frag", "https://h/x?token=***#***", ["abc", "frag"]),
    (
        "http://dyn:hunter2@dynamo:8000/?X-Amz-Credential=AKIA/x&X-Amz-Signature=5ig",
        "http://dyn:***@dynamo:8000/?X-Amz-Credential=***&X-Amz-Signature=***",
        ["hunter2", "AKIA", "5ig"],
    ),
    # no scheme (a mistyped setting): the same rules
    ("bob:hunter2@host", "bob:***@host", ["hunter2"]),
    ("not a url", "not a url", []),
]


@pytest.mark.parametrize(("url", "expected", "secrets"), URLS, ids=[u for u, _, _ in URLS])
def test_redact_url(url: str, expected: str, secrets: list[str]) -> None:
    shown = redact_url(url)
    assert shown == expected
    for secret in secrets:
        assert secret not in shown
    assert redact_url(shown) == shown, "idempotent"


# (dsn, redacted, secrets)
DSNS = [
    (
        "postgresql://fleet:hunter2@db:5432/fleet",
        "postgresql://fleet:***@db:5432/fleet",
        ["hunter2"],
    ),
    # the '@' and space cases the old masking leaked
    (
        "postgresql://user:p@ss w0rd@host/db?password=x",
        "postgresql://user:***@host/db?password=***",
        ["p@ss", "ss w0rd", "w0rd", "=x"],
    ),
    (
        "postgres://u:hunter2@h/db?sslmode=require&sslpassword=kp&options=-csearch",
        "postgres://u:***@h/db?sslmode=require&sslpassword=***&options=***",
        ["hunter2", "kp", "-csearch"],
    ),
    (
        "postgresql://h1:5432,h2:5433/db?user=fleet&password=hunter2&target_session_attrs=any",
        "postgresql://h1:5432,h2:5433/db?user=fleet&password=***&target_session_attrs=any",
        ["hunter2"],
    ),
    ("postgresql://u:pa/ss@host/db", "postgresql://***", ["pa/ss", "ss@"]),
    ("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db", []),
    # key/value, libpq's quoting: single quotes, backslash escapes, blanks around '='
    ("host=h password='a b\\' c' user=u", "host=h password=*** user=u", ["a b", "' c", "c'"]),
    ("host=db password=hunter2 dbname=fleet", "host=db password=*** dbname=fleet", ["hunter2"]),
    ("host = db  password = hunter2\tdbname=fleet", "host = db  password = ***\tdbname=fleet", []),
    ("password=hun\\ ter2 host=h", "password=*** host=h", ["hun", "ter2"]),
    ("password='it\\\\s' host=h", "password=*** host=h", ["it\\", "s'"]),
    ("host=h password=", "host=h password=***", []),
    ("password= host=h", "password= ***", ["host=h"]),  # libpq: the value is "host=h"
    ("host=h sslpassword=kp sslmode=require", "host=h sslpassword=*** sslmode=require", ["kp"]),
    # any keyword not known to be harmless, e.g. a typo or a different case
    ("host=h pasword=hunter2", "host=h pasword=***", ["hunter2"]),
    ("Password=hunter2 host=h", "Password=*** host=h", ["hunter2"]),
    # from a syntax error on, everything is masked
    ("host=h password=hunter2 and more", "host=h password=*** ***", ["hunter2", "and", "more"]),
    ("host=h password='hunter2", "host=h password=***", ["hunter2"]),
    ("password='a''b' host=h", "password=******", ["b'", "host"]),
    ("mysql://u:hunter2@h", "***", ["hunter2"]),
]


@pytest.mark.parametrize(("dsn", "expected", "secrets"), DSNS, ids=[d for d, _, _ in DSNS])
def test_redact_dsn(dsn: str, expected: str, secrets: list[str]) -> None:
    shown = redact_dsn(dsn)
    assert shown == expected
    for secret in secrets:
        assert secret not in shown


KAFKA_PROPERTIES = [
    ("sasl.password", "hunter2", MASK),
    ("sasl.oauthbearer.config", "principal=fleet extension_traceId=t0k", MASK),
    ("sasl.oauthbearer.client.secret", "hunter2", MASK),
    ("sasl.oauthbearer.extensions", "traceId=t0k", MASK),
    ("sasl.jaas.config", "... password='hunter2';", MASK),
    ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----", MASK),
    ("ssl.key.password", "hunter2", MASK),
    ("ssl.keystore.password", "hunter2", MASK),
    ("ssl.keystore.location", "/etc/kafka/keystore.p12", MASK),  # harmless, but masked
    (
        "sasl.oauthbearer.token.endpoint.url",
        "https://fleet:hunter2@idp.example/token?client_secret=s3",
        "https://fleet:***@idp.example/token?client_secret=***",
    ),
    ("security.protocol", "SASL_SSL", "SASL_SSL"),
    ("sasl.mechanism", "OAUTHBEARER", "OAUTHBEARER"),
    ("sasl.username", "fleet", "fleet"),
    ("compression.type", "lz4", "lz4"),
]


@pytest.mark.parametrize(("name", "value", "expected"), KAFKA_PROPERTIES)
def test_redact_kafka_property(name: str, value: str, expected: str) -> None:
    assert redact_kafka_properties({name: value}) == {name: expected}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("FLEET_NOTIFY_SECRET", True),
        ("FLEET_KAFKA_SASL_PASSWORD", True),
        ("FLEET_KAFKA_SASL_OAUTHBEARER_CONFIG", True),
        ("sasl.oauthbearer.config", True),
        ("FLEET_KAFKA_SSL_KEY_PEM", True),
        ("notify_secret", True),
        ("FLEET_MQTT_URL", False),
        ("FLEET_KAFKA_SECURITY_PROTOCOL", False),
        ("FLEET_HISTORY_DSN", False),  # not masked whole: redact_dsn masks what is secret
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


# (text, urls, dsns, secrets, what must not survive)
TEXTS: list[tuple[str, list[str], list[str], list[str], list[str]]] = [
    (  # botocore's EndpointConnectionError
        'Could not connect to the endpoint URL: "http://u:sek rit@h/"',
        ["http://u:sek rit@h"],
        [],
        [],
        ["sek rit", "sek", "rit"],
    ),
    (  # libpq, reading the host from the second half of a password with an '@'
        'unexpected spaces found in "ss w0rd@127.0.0.1", use percent-encoded spaces',
        [],
        ["postgresql://user:p@ss w0rd@127.0.0.1/db"],
        [],
        ['"ss ', "w0rd"],
    ),
    (
        'invalid percent-encoded token: "p%zzhunter2"',
        [],
        ["postgresql://u:p%zzhunter2@h/db"],
        [],
        ["hunter2"],
    ),
    ('missing "=" after "more"', [], ["host=h password=hunter2 and more"], [], ["more"]),
    ("auth failed for p@ss:w/rd", ["mqtt://u:p%40ss%3Aw%2Frd@h"], [], [], ["p@ss:w/rd"]),
    ("signing with whsec_abc123xyz", [], [], ["whsec_abc123xyz"], ["abc123"]),
    (  # a URL nobody named: its user info and query still masked
        "SSL validation failed for https://u:hunter2@h/x?token=t0k bad cert",
        [],
        [],
        [],
        ["hunter2", "t0k"],
    ),
]


@pytest.mark.parametrize(("text", "urls", "dsns", "secrets", "gone"), TEXTS)
def test_redact_text(
    text: str, urls: list[str], dsns: list[str], secrets: list[str], gone: list[str]
) -> None:
    shown = redact_text(text, urls=urls, dsns=dsns, secrets=secrets)
    for secret in gone:
        assert secret not in shown
    assert MASK in shown


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = "ConnectError: [Errno 111] Connection refused"
    assert redact_text(text, urls=["http://u:pw@host:80/x"], dsns=["host=h password=pw"]) == text
    assert redact_text("HTTP 503: busy", urls=[None], dsns=[None], secrets=[None]) == (
        "HTTP 503: busy"
    )


def test_redaction_is_pure() -> None:
    """No I/O: nothing the domain may not import either (tests/unit/test_layers.py)."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / "runtime" / "redaction.py").read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "re", "collections", "dataclasses"}


# --- Properties: a random password never appears -------------------------------------------

# Passwords are made of capitals and punctuation; every other part of the URL is lower case,
# so a capital in the output is a leaked piece of the password (or of a query value).
SECRET_CHARS = string.ascii_uppercase + " @:/%?#&='\\\"!$+,;[]"
passwords = st.text(alphabet=SECRET_CHARS, min_size=1, max_size=24).filter(
    lambda p: any(c.isupper() for c in p)
)
words = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hosts = st.one_of(words, st.just("[::1]"), st.just("[2001:db8::1]"), words.map(lambda w: w + ".io"))


def _no_capitals(shown: str) -> bool:
    return not any(c.isupper() for c in shown)


@given(
    scheme=st.sampled_from(["mqtt", "mqtts", "http", "https", "postgresql"]),
    user=words,
    password=passwords,
    encoded=st.booleans(),
    host=hosts,
    port=st.none() | st.integers(1, 65535),
    path=st.sampled_from(["", "/", "/v1/send", "/fleet"]),
    query_value=st.none() | passwords,
)
def test_no_password_survives_in_a_url(
    scheme: str,
    user: str,
    password: str,
    encoded: bool,
    host: str,
    port: int | None,
    path: str,
    query_value: str | None,
) -> None:
    written = quote(password, safe="") if encoded else password
    url = f"{scheme}://{user}:{written}@{host}{'' if port is None else f':{port}'}{path}"
    if query_value is not None:
        url += "?key=" + quote(query_value, safe="")
    shown = redact_dsn(url) if scheme == "postgresql" else redact_url(url)
    assert _no_capitals(shown), shown
    message = redact_text(f"failed: {url} ({password})", urls=[url])
    assert _no_capitals(message) or len(password) < 2, message


@given(
    password=st.text(alphabet=SECRET_CHARS + "\t", min_size=1, max_size=24),
    order=st.permutations(range(4)),
    spaces=st.sampled_from([" ", "  ", "\t", " \n "]),
)
def test_no_password_survives_in_a_key_value_dsn(
    password: str, order: list[int], spaces: str
) -> None:
    assume(any(c.isupper() for c in password))
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    parameters = ["host=db", "user=fleet", "dbname=fleet", f"password = {quoted}"]
    dsn = spaces.join(parameters[i] for i in order)
    assert conninfo_to_dict(dsn)["password"] == password, "quoted as libpq reads it"
    shown = redact_dsn(dsn)
    assert _no_capitals(shown), shown
    assert "host=db" in shown
    assert "user=fleet" in shown


@given(st.lists(st.sampled_from(["host", "password", "=", " ", "\t", "'", "\\", "x"])))
def test_key_value_dsns_are_read_as_libpq_reads_them(tokens: list[str]) -> None:
    """The scanner behind redact_dsn and conninfo_error finds the values libpq finds, and
    the same syntax errors. (libpq stops at an unknown keyword before any syntax error
    further on: those texts are left out.)"""
    dsn = "".join(tokens)
    parameters, error = redaction._scan_conninfo(dsn)
    try:
        parsed = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    assume("invalid connection option" not in refusal)
    if refusal:
        assert error is not None, refusal
        assert conninfo_error(dsn) is not None
        return
    assert error is None
    assert conninfo_error(dsn) is None
    assert {p.keyword: p.value for p in parameters} == parsed  # the last one wins in both


def test_the_scanner_reads_quotes_and_escapes_as_libpq_does() -> None:
    dsn = "host = db password='a b\\' c\\\\' user=u\\ v application_name=''"
    parameters, error = redaction._scan_conninfo(dsn)
    assert error is None
    assert {p.keyword: p.value for p in parameters} == conninfo_to_dict(dsn)
    assert conninfo_to_dict(dsn)["password"] == "a b' c\\"


# --- The connectors that quote a URL or a DSN in an error -----------------------------------


def _alert() -> Alert:
    reading = Reading("e-1", "T7", BEGINNING_MS, 141.5)
    history = HistoryIndex.build(
        [Driver("D-ana", "Ana Berg", "2019-04-01", 4, 88.5, 9_120.0, "high")],
        [Assignment("T7", "D-ana", 0, None)],
    )
    detection = Detection(Rule.INSTANT, "T7", (reading,), 130.0)
    return build_alert(detection, 0, history)


def test_email_api_failures_do_not_quote_the_url_s_secrets() -> None:
    url = "https://mailer:hunter2@mail.example/v1/send?api_key=k3y-k3y"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {url}")

    api = EmailApi(
        url,
        b"0123456789abcdef0123456789abcdef",
        Routes(("ops@fleet.example",)),
        ZoneInfo("UTC"),
        policy=RetryPolicy(max_attempts=1),
        concurrency=1,
        sleep=lambda _s: None,
    )
    api._client = httpx.Client(transport=httpx.MockTransport(refuse))
    try:
        delivery = api.deliver(_alert())
    finally:
        api.close()
    assert delivery.verdict is Verdict.RETRY
    assert "ConnectError" in delivery.detail
    assert "mail.example" in delivery.detail
    for secret in ("hunter2", "k3y-k3y"):
        assert secret not in delivery.detail


def test_history_errors_do_not_quote_the_dsn_s_secrets() -> None:
    for dsn in (
        "postgresql://u:p%zzhunter2@127.0.0.1:1/db",  # libpq quotes the bad component
        "host=127.0.0.1 port=1 user=u password=hunter2 connect_timeout=2",
    ):
        with pytest.raises(HistoryError) as caught:
            load_history_postgres(dsn)
        assert "hunter2" not in str(caught.value)
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__, "a traceback does not show libpq's message"


class _FailingClient:
    class meta:  # boto3's attribute name
        endpoint_url = "https://dyn:hunter2@dynamo.example"

    def put_item(self, **_kwargs: Any) -> None:
        raise SSLError(endpoint_url="https://dyn:hunter2@dynamo.example", error="bad cert")


def test_dynamodb_errors_do_not_quote_the_endpoint_s_secrets() -> None:
    with pytest.raises(RuntimeError) as caught:
        TelemetryTable(_FailingClient(), "t", 60)._call("put_item")
    assert "SSLError" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="Invalid endpoint") as invalid:
        dynamodb_client("us-east-1", "http://dyn:hunter2@")
    assert "hunter2" not in str(invalid.value)


def test_store_table_creation_failure_is_logged_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflows import store

    url = "http://dyn:hunter2@127.0.0.1:1/?token=t0k3n"

    def unreachable(_client: Any, _table: str) -> bool:
        raise EndpointConnectionError(endpoint_url=url)

    monkeypatch.setenv("FLEET_DYNAMODB_ENDPOINT_URL", url)
    monkeypatch.setenv("FLEET_DYNAMODB_REGION", "us-east-1")
    monkeypatch.setattr(store, "create_table", unreachable)
    monkeypatch.setattr(store, "configure_logging", lambda: None)
    with structlog.testing.capture_logs() as logs:
        assert store.main(["--create-table"]) == 1
    logged = json.dumps(logs)
    assert [e["event"] for e in logs] == ["dynamodb_table_failed"]
    assert "127.0.0.1:1" in logged
    for secret in ("hunter2", "t0k3n"):
        assert secret not in logged
