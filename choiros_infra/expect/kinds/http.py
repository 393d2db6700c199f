"""``http METHOD /PATH via caddy|direct: 200, json KEY = VALUE, header ..., body ...``: one
safe request, through Caddy from this machine or to the backend on the host itself."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from choiros_infra.expect.grammar import Clause, Reject, Token, one_value, text_match, unknown
from choiros_infra.expect.kind import Kind
from choiros_infra.expect.model import TextMatch, value_literal
from choiros_infra.expect.probes import (
    HostCommand,
    Outcome,
    ProbeContext,
    excerpt,
    run_command,
    text_observed,
    tool,
)

SUBJECT = "http METHOD /PATH via caddy | http METHOD /PATH direct"
FORMS = ("STATUS (e.g. 200)", "json KEY = VALUE", "header NAME = VALUE",
         "header NAME present", "header NAME absent", 'header NAME [not] contains "TEXT"',
         "header NAME [not] matches /REGEX/", 'body [not] contains "TEXT"',
         "body [not] matches /REGEX/")
HTTP_METHODS = ("GET", "HEAD", "OPTIONS")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
JSON_KEY = re.compile(r"[^\s.=]+(\.[^\s.=]+)*")
MAX_BODY = 1 << 20
USER_AGENT = "choiros-runbook-check"


@dataclass(frozen=True)
class Status:
    code: int

    def __str__(self) -> str:
        return str(self.code)


@dataclass(frozen=True)
class JsonEquals:
    """``json KEY = VALUE``: KEY is a dotted path (``checks.db``, ``items.0``); a JSON string is
    compared as is, any other JSON value by its JSON text (``true``, ``3``, ``null``)."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"json {self.key} = {value_literal(self.value)}"


@dataclass(frozen=True)
class HeaderEquals:
    name: str
    value: str

    def __str__(self) -> str:
        return f"header {self.name} = {value_literal(self.value)}"


@dataclass(frozen=True)
class HeaderPresent:
    name: str
    present: bool

    def __str__(self) -> str:
        return f"header {self.name} {'present' if self.present else 'absent'}"


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    match: TextMatch

    def __str__(self) -> str:
        return f"header {self.name} {self.match}"


@dataclass(frozen=True)
class Body:
    match: TextMatch

    def __str__(self) -> str:
        return f"body {self.match}"


HttpAssertion = Status | JsonEquals | HeaderEquals | HeaderPresent | HeaderMatch | Body
Via = Literal["caddy", "direct"]


@dataclass(frozen=True)
class HttpCheck:
    method: str
    path: str
    via: Via
    expect: tuple[HttpAssertion, ...]

    @property
    def subject(self) -> str:
        route = "via caddy" if self.via == "caddy" else "direct"
        return f"http {self.method} {self.path} {route}"


def parse(subject: Sequence[Token], clauses: Sequence[Clause]) -> HttpCheck:
    values = [t.value for t in subject]
    if len(subject) == 4 and values[2:] == ["via", "caddy"]:
        via: Literal["caddy", "direct"] = "caddy"
    elif len(subject) == 3 and values[2] == "direct":
        via = "direct"
    else:
        raise Reject("malformed http subject", SUBJECT)
    method, path = values[0], values[1]
    if method not in HTTP_METHODS:
        raise Reject(f"'{method}' is not a checked HTTP method",
                      "one of " + ", ".join(HTTP_METHODS) + " (checks never change the host)")
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise Reject(f"'{path}' is not a request path", "a path starting with /, e.g. /health")
    expect: list[HttpAssertion] = []
    for clause in clauses:
        first = clause.tokens[0]
        if len(clause.tokens) == 1 and first.kind == "word" and first.value.isdigit():
            if not 100 <= int(first.value) <= 599:
                raise Reject(f"'{first.value}' is not an HTTP status", "a status 100-599")
            expect.append(Status(int(first.value)))
        elif clause.starts("json"):
            rest = clause.after(1)
            if (len(rest) != 3 or rest[0].kind != "word" or not JSON_KEY.fullmatch(rest[0].value)
                    or rest[1].kind != "word" or rest[1].value != "="):
                raise Reject(f"malformed json assertion '{clause.text}'",
                              "json KEY = VALUE, e.g. json status = healthy (spaces around =)")
            expect.append(JsonEquals(rest[0].value, one_value(rest[2:], "value")))
        elif clause.starts("header"):
            expect.append(_header(clause))
        elif clause.starts("body"):
            match = text_match(clause.after(1))
            if match is None:
                raise unknown("http", FORMS, clause)
            expect.append(Body(match))
        else:
            raise unknown("http", FORMS, clause)
    return HttpCheck(method, path, via, tuple(expect))


def _header(clause: Clause) -> HttpAssertion:
    rest = clause.after(1)
    if not rest or rest[0].kind != "word" or not HEADER_NAME.fullmatch(rest[0].value):
        raise Reject(f"malformed header assertion '{clause.text}'", "header NAME ...")
    name, tail = rest[0].value, rest[1:]
    if len(tail) == 1 and tail[0].kind == "word" and tail[0].value in ("present", "absent"):
        return HeaderPresent(name, tail[0].value == "present")
    if tail and tail[0].kind == "word" and tail[0].value == "=":
        return HeaderEquals(name, one_value(tail[1:], "header value"))
    match = text_match(tail)
    if match is None:
        raise Reject(f"malformed header assertion '{clause.text}'",
                      "one of: " + ", ".join(f for f in FORMS if f.startswith("header")))
    return HeaderMatch(name, match)


def slot(assertion: HttpAssertion) -> object:
    match assertion:
        case Body(match=TextMatch(kind=kind, pattern=pattern)):
            return ("body", kind, pattern)
        case JsonEquals(key=key):
            return ("json", key)
        case HeaderEquals(name=name) | HeaderPresent(name=name):
            return ("header", name.lower())
        case HeaderMatch(name=name, match=TextMatch(kind=kind, pattern=pattern)):
            return ("header", name.lower(), kind, pattern)
    return type(assertion).__name__


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        """The header's value (repeated headers joined with ", "), or None when absent."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None


def parse_curl_include(output: str) -> HttpResponse:
    """``curl --include`` output: status line, headers, blank line, body (1xx skipped)."""
    rest = output
    while True:
        head, sep, body = rest.partition("\r\n\r\n")
        if not sep:
            head, _, body = rest.partition("\n\n")
        lines = head.splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not an HTTP response: {excerpt(output, 80)}")
        status = int(parts[1])
        if 100 <= status < 200 and body:
            rest = body
            continue
        headers = tuple((name.strip(), value.strip())
                        for name, sep_, value in (line.partition(":") for line in lines[1:])
                        if sep_)
        return HttpResponse(status, headers, body)


def fetch_via_caddy(ctx: ProbeContext, method: str, path: str) -> HttpResponse | str:
    """The request from this machine to the host's address (TLS not verified: the kitchen
    signs with Caddy's internal CA), sent once per context (``ProbeContext.answers``).
    Returns the response, or what went wrong."""
    key = (method, path)
    if key not in ctx.answers:
        ctx.answers[key] = _request_via_caddy(ctx, method, path)
    answer = ctx.answers[key]
    assert isinstance(answer, HttpResponse | str)
    return answer


def _request_via_caddy(ctx: ProbeContext, method: str, path: str) -> HttpResponse | str:
    port = ctx.caddy_port or (443 if ctx.scheme == "https" else 80)
    connection: http.client.HTTPConnection
    if ctx.scheme == "https":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(ctx.outside_address, port,
                                                 timeout=ctx.http_timeout, context=tls)
    else:
        connection = http.client.HTTPConnection(ctx.outside_address, port,
                                                timeout=ctx.http_timeout)
    host = f"[{ctx.outside_address}]" if ":" in ctx.outside_address else ctx.outside_address
    url = f"{ctx.scheme}://{host}:{port}{path}"
    try:
        connection.request(method, path, headers={"User-Agent": USER_AGENT})
        response = connection.getresponse()
        body = response.read(MAX_BODY).decode("utf-8", "replace")
        return HttpResponse(response.status, tuple(response.getheaders()), body)
    except (OSError, http.client.HTTPException) as exc:
        hint = ""
        if ctx.scheme == "https" and isinstance(exc, ConnectionRefusedError | ssl.SSLError):
            hint = "; a host with tls_mode off serves http: --runbook-scheme http"
        return f"no response from {url} ({type(exc).__name__}: {exc}){hint}"
    finally:
        connection.close()


def _curl(ctx: ProbeContext, method: str, path: str) -> HostCommand:
    url = ctx.direct_url.rstrip("/") + path
    verb = ["--head"] if method == "HEAD" else ["--request", method]
    return tool("curl", "--silent", "--show-error", "--include",
                "--max-time", f"{ctx.http_timeout:g}", *verb, url)


def commands(check: HttpCheck, ctx: ProbeContext) -> tuple[HostCommand, ...]:
    """``direct`` asks curl on the host; ``via caddy`` asks from this machine."""
    return (_curl(ctx, check.method, check.path),) if check.via == "direct" else ()


def fetch_direct(ctx: ProbeContext, method: str, path: str) -> HttpResponse | str:
    """The request made on the host itself with curl, to ``ctx.direct_url``."""
    url = ctx.direct_url.rstrip("/") + path
    result = run_command(ctx, _curl(ctx, method, path))
    if result.rc != 0:
        return f"no response from {url} (curl exit {result.rc}: {result.stderr.strip()})"
    try:
        return parse_curl_include(result.stdout)
    except ValueError as exc:
        return f"no HTTP response from {url} ({exc})"


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _json_lookup(document: Any, key: str) -> tuple[bool, Any]:
    current = document
    for part in key.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def probe(check: HttpCheck, ctx: ProbeContext) -> list[Outcome]:
    fetch = fetch_via_caddy if check.via == "caddy" else fetch_direct
    response = fetch(ctx, check.method, check.path)
    if isinstance(response, str):
        return [Outcome(str(a), False, response) for a in check.expect]
    document: Any = None
    parsed: bool | None = None
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        expected = str(assertion)
        if isinstance(assertion, Status):
            outcomes.append(Outcome(expected, response.status == assertion.code,
                                    str(response.status)))
        elif isinstance(assertion, JsonEquals):
            if parsed is None:
                try:
                    document, parsed = json.loads(response.body), True
                except ValueError:
                    parsed = False
            if not parsed:
                outcomes.append(Outcome(expected, False,
                                        f"not JSON: {excerpt(response.body, 120)}"))
                continue
            found, value = _json_lookup(document, assertion.key)
            if not found:
                outcomes.append(Outcome(expected, False, f"no key {assertion.key}"))
                continue
            outcomes.append(Outcome(expected, _json_text(value) == assertion.value,
                                    json.dumps(value, ensure_ascii=False)))
        elif isinstance(assertion, Body):
            outcomes.append(Outcome(expected, assertion.match.holds(response.body),
                                    text_observed(assertion.match, response.body)))
        else:
            outcomes.append(_header_outcome(assertion, response))
    return outcomes


def _header_outcome(assertion: HeaderEquals | HeaderPresent | HeaderMatch,
                    response: HttpResponse) -> Outcome:
    value = response.header(assertion.name)
    observed = "absent" if value is None else excerpt(value, 120)
    if isinstance(assertion, HeaderEquals):
        ok = value == assertion.value
    elif isinstance(assertion, HeaderPresent):
        ok = (value is not None) == assertion.present
    else:
        ok = assertion.match.holds(value or "")
    return Outcome(str(assertion), ok, observed)


KIND = Kind("http", HttpCheck, SUBJECT, FORMS, parse, probe, slot, commands)
