"""Secrets masked in settings values and in the messages that quote them: one set of rules.

Every setting that can hold a secret goes through these functions before it is logged or
put in an error (README, Configuration):

* URLs (``FLEET_MQTT_URL``, ``FLEET_NOTIFY_URL``, ``FLEET_DYNAMODB_ENDPOINT_URL``): the
  password of the user info becomes ``***`` and the user name is kept
  (``mqtt://bob:***@host``); a user info without a password, often a token, becomes ``***``.
  Every query value and the fragment become ``***`` (the keys are kept). Scheme, host, port
  and path are kept. The user info ends at the *last* ``@``, so an unencoded ``@``, ``:``,
  ``%`` or space in a password is masked with it. An ``@`` after a ``/``, ``?`` or ``#`` is
  ambiguous (an unencoded ``/?#`` in a password, or an ``@`` in the path or query): then
  everything after ``scheme://`` becomes ``***``.
* PostgreSQL DSNs (``FLEET_HISTORY_DSN``), both forms: a ``postgresql://`` URI as a URL, and
  a ``key=value`` string read with libpq's rules (values in single quotes, ``\\`` escapes).
  The value of a parameter is kept only for the keywords in ``DSN_SHOWN_KEYWORDS`` (host,
  port, dbname, user, ...), so a misspelt ``pasword=`` is masked too. From a syntax error
  on, the rest of a key/value DSN is masked.
* Kafka pass-through properties: the value of a property whose name says it holds a secret
  (``is_secret_name``: password, secret, token, key, credential, ``sasl.jaas.config``,
  ``sasl.oauthbearer.config``, ...) becomes ``***``; a ``*.url`` property is masked as a URL.

``redact_text`` cleans free text (an exception's message, a response body) of the secrets
inside given URLs, DSNs and plain secrets, and masks the user info and query of any URL it
quotes. Pure functions: no I/O, no imports beyond the standard library's text handling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MASK = "***"

# Lower case, with '_' and '-' read as '.', so that FLEET_KAFKA_SASL_OAUTHBEARER_CONFIG and
# sasl.oauthbearer.config match alike.
_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "credential",
    "jaas",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.extensions",
)

# libpq keywords whose values never hold a secret; every other parameter's value is masked.
DSN_SHOWN_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "connect_timeout",
        "sslmode",
        "gssencmode",
        "target_session_attrs",
        "load_balance_hosts",
        "application_name",
        "client_encoding",
    }
)
DSN_URI_PREFIXES = ("postgresql://", "postgres://")  # libpq's, case-sensitive

# In free text, a secret (or a piece of one, split at punctuation and spaces) is masked
# wherever it appears when it is at least this long; a shorter one (down to 2 characters) only
# where it stands alone, between non-alphanumerics, so that ordinary words stay readable.
_MIN_FRAGMENT = 4
_MIN_PIECE = 2

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_AFTER_USERINFO = re.compile(r"([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#(.*))?\Z", re.DOTALL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+")
_PIECE_SEPARATORS = re.compile(r"[@:/?#&=;,\s'\"]+")
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_C_SPACE = " \t\n\v\f\r"  # libpq's isspace()


def is_secret_name(name: str) -> bool:
    """Whether a setting, property or keyword of this name holds a secret."""
    normal = re.sub(r"[_\-]", ".", name.lower())
    return any(word in normal for word in _SECRET_WORDS)


# --- URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Url:
    head: str  # "scheme://", or "" when there is none
    userinfo: str | None
    host: str  # host[:port], as written
    path: str
    query: str | None
    fragment: str | None


def _split_url(url: str) -> _Url | None:
    """The parts of ``url``, as written; None when the user info is ambiguous."""
    match = _SCHEME.match(url)
    head = match.group(0) if match else ""
    rest = url[len(head) :]
    userinfo: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if any(c in userinfo for c in "/?#"):
            return None
    parts = _URL_AFTER_USERINFO.match(rest)
    assert parts is not None  # every group is optional
    host, path, query, fragment = parts.groups()
    return _Url(head, userinfo, host, path, query, fragment)


def redact_url(url: str, shown_parameters: frozenset[str] = frozenset()) -> str:
    """``url`` with its password (or lone user info), query values and fragment masked;
    only the query parameters named in ``shown_parameters`` keep their values."""
    parts = _split_url(url)
    if parts is None:
        match = _SCHEME.match(url)
        return (match.group(0) if match else "") + MASK
    shown = parts.head
    if parts.userinfo is not None:
        user, colon, _password = parts.userinfo.partition(":")
        shown += (f"{user}:{MASK}" if colon else MASK if parts.userinfo else "") + "@"
    shown += parts.host + parts.path
    if parts.query is not None:
        shown += "?" + "&".join(
            _redact_parameter(parameter, shown_parameters) for parameter in parts.query.split("&")
        )
    if parts.fragment is not None:
        shown += "#" + (MASK if parts.fragment else "")
    return shown


def _redact_parameter(parameter: str, shown_parameters: frozenset[str]) -> str:
    key, equals, value = parameter.partition("=")
    if not equals:
        return MASK if parameter else parameter  # a bare value: it may be a token
    if key in shown_parameters and value:
        return parameter
    return f"{key}={MASK}" if value else parameter


def _url_secrets(url: str, shown_parameters: frozenset[str] = frozenset()) -> list[str]:
    parts = _split_url(url)
    if parts is None:  # all after the scheme, and what would be the user info and password
        match = _SCHEME.match(url)
        rest = url[match.end() if match else 0 :]
        userinfo = rest.rpartition("@")[0]
        return [secret for secret in (rest, userinfo, userinfo.partition(":")[2]) if secret]
    found: list[str] = []
    if parts.userinfo:
        _user, colon, password = parts.userinfo.partition(":")
        found.append(password if colon else parts.userinfo)
    for parameter in (parts.query or "").split("&"):
        key, equals, value = parameter.partition("=")
        if not equals:
            found.append(parameter)
        elif key not in shown_parameters:
            found.append(value)
    if parts.fragment:
        found.append(parts.fragment)
    return [secret for secret in found if secret]


# --- PostgreSQL DSNs -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parameter:
    keyword: str
    value: str  # unquoted and unescaped, as libpq reads it
    start: int  # the value as written (quotes included) is text[start:end]
    end: int


@dataclass(frozen=True)
class _SyntaxError:
    at: int  # where the text stops making sense: all from here on may be secret
    reason: str


def _scan_conninfo(text: str) -> tuple[list[_Parameter], _SyntaxError | None]:
    """A key/value DSN read as libpq's conninfo_parse reads it."""
    parameters: list[_Parameter] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _C_SPACE:
            i += 1
        if i == n:
            return parameters, None
        keyword_start = i
        while i < n and text[i] != "=" and text[i] not in _C_SPACE:
            i += 1
        keyword = text[keyword_start:i]
        while i < n and text[i] in _C_SPACE:
            i += 1
        if i == n or text[i] != "=":
            return parameters, _SyntaxError(keyword_start, "a parameter has no '=' after it")
        i += 1
        while i < n and text[i] in _C_SPACE:  # libpq skips blanks after '=' too
            i += 1
        value_start, value = i, []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i == n:
                    return parameters, _SyntaxError(value_start, "a quoted value has no end")
                if text[i] == "\\":
                    i += 1
                    if i < n:
                        value.append(text[i])
                        i += 1
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    value.append(text[i])
                    i += 1
        else:
            while i < n and text[i] not in _C_SPACE:
                if text[i] == "\\":
                    i += 1
                    if i < n:
                        value.append(text[i])
                        i += 1
                else:
                    value.append(text[i])
                    i += 1
        parameters.append(_Parameter(keyword, "".join(value), value_start, i))


def conninfo_error(text: str) -> str | None:
    """Why libpq would refuse this key/value DSN, in words that quote none of it; or None."""
    _parameters, error = _scan_conninfo(text)
    return None if error is None else error.reason


def is_dsn_uri(dsn: str) -> bool:
    return dsn.startswith(DSN_URI_PREFIXES)


def redact_dsn(dsn: str) -> str:
    """A PostgreSQL DSN, URI or key/value, with every value but ``DSN_SHOWN_KEYWORDS``'
    (and the URI's password) masked."""
    if is_dsn_uri(dsn):
        return redact_url(dsn, DSN_SHOWN_KEYWORDS)
    parameters, error = _scan_conninfo(dsn)
    shown, written = [], 0
    for parameter in parameters:
        if parameter.keyword not in DSN_SHOWN_KEYWORDS:
            shown += [dsn[written : parameter.start], MASK]
            written = parameter.end
    if error is not None:
        shown += [dsn[written : error.at], MASK]
        written = len(dsn)
    shown.append(dsn[written:])
    return "".join(shown)


def _dsn_secrets(dsn: str) -> list[str]:
    if is_dsn_uri(dsn):
        return _url_secrets(dsn, DSN_SHOWN_KEYWORDS)
    parameters, error = _scan_conninfo(dsn)
    found: list[str] = []
    for parameter in parameters:
        if parameter.keyword not in DSN_SHOWN_KEYWORDS:
            found += [parameter.value, dsn[parameter.start : parameter.end]]
    if error is not None:
        found.append(dsn[error.at :])
    return [secret for secret in found if secret]


# --- Kafka properties ------------------------------------------------------------------------


def redact_kafka_property(name: str, value: str) -> str:
    """A librdkafka property's value for a log line."""
    if name.endswith(".url"):  # e.g. sasl.oauthbearer.token.endpoint.url
        return redact_url(value)
    return MASK if is_secret_name(name) else value


def redact_kafka_properties(properties: Mapping[str, str]) -> dict[str, str]:
    return {name: redact_kafka_property(name, value) for name, value in properties.items()}


# --- Free text -------------------------------------------------------------------------------


def redact_text(
    text: str,
    *,
    urls: Iterable[str | None] = (),
    dsns: Iterable[str | None] = (),
    secrets: Iterable[str | None] = (),
) -> str:
    """``text`` without the secrets of these URLs and DSNs (each quoted whole is shown
    redacted; its secrets, their decoded forms and their pieces are masked wherever they
    appear), without ``secrets``, and with every URL it quotes redacted."""
    whole: dict[str, str] = {}
    found: list[str] = []
    for url in filter(None, urls):
        whole[url] = redact_url(url)
        found += _url_secrets(url)
    for dsn in filter(None, dsns):
        whole[dsn] = redact_dsn(dsn)
        found += _dsn_secrets(dsn)
    for secret in filter(None, secrets):
        whole[secret] = MASK
        found.append(secret)
    for value in sorted(whole, key=len, reverse=True):
        text = text.replace(value, whole[value])
    fragments = {fragment for secret in found for fragment in _fragments(secret)}
    for fragment in sorted(fragments, key=len, reverse=True):
        if len(fragment) >= _MIN_FRAGMENT:
            text = text.replace(fragment, MASK)
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", MASK, text)
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def _fragments(secret: str) -> set[str]:
    """A secret as written, decoded, and in pieces."""
    forms = {secret, secret.strip(), _percent_decode(secret), _percent_decode(secret, plus=True)}
    pieces = {piece for form in forms for piece in _PIECE_SEPARATORS.split(form)}
    return {fragment for fragment in forms | pieces if len(fragment) >= _MIN_PIECE}


def _percent_decode(text: str, *, plus: bool = False) -> str:
    if plus:
        text = text.replace("+", " ")
    return _PERCENT_RUN.sub(
        lambda run: bytes.fromhex(run.group(0).replace("%", "")).decode("utf-8", "replace"), text
    )
