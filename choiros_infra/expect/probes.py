"""Reading the host: one probe per subject kind, turning a Check into Outcomes.

Facts on the host are read with small commands through testinfra's host (arguments quoted by
testinfra, never interpolated) and parsed by typed functions; the outside checks (a TCP connect,
HTTP through Caddy) run from this machine against the host's address. A probe never changes
the host: files are read, services and packages queried, HTTP methods limited to safe ones.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from choiros_infra.expect.model import (
    Body,
    Check,
    CommandCheck,
    Exists,
    ExitCode,
    FileCheck,
    Group,
    HeaderEquals,
    HeaderMatch,
    HeaderPresent,
    Home,
    HttpCheck,
    IsDirectory,
    JsonEquals,
    Mode,
    Owner,
    PackageCheck,
    PortCheck,
    Reachable,
    ServiceCheck,
    ServiceState,
    Shell,
    Statement,
    Status,
    SymlinkTo,
    TextMatch,
    UserCheck,
    quote,
)

# `systemctl is-enabled` exits 0 for these unit-file states: the unit starts when its
# dependencies ask for it. Anything else (disabled, masked, linked, not-found) is not enabled.
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "alias", "static", "indirect",
                            "generated", "transient"})
STAT_FORMAT = "%F|%a|%U|%G"
MAX_BODY = 1 << 20
USER_AGENT = "choiros-runbook-check"
EXCERPT = 240
_SUDO_PREFIX = re.compile(r"^\s*sudo\s+(?=[^-\s])")

Scheme = Literal["https", "http"]


class CommandResultLike(Protocol):
    """What the probes read from testinfra's CommandResult."""

    @property
    def rc(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class HostLike(Protocol):
    """What the probes use of testinfra's Host: ``run(command, *args)`` quotes ``args``."""

    def run(self, command: str, *args: str) -> CommandResultLike: ...


class ProbeError(Exception):
    """The host could not be asked (no answer, a tool missing), as opposed to a wrong answer."""


@dataclass(frozen=True)
class ProbeContext:
    """How to reach the host. ``sudo``: commands already run as root (testinfra ``--sudo``);
    ``outside_address``: the host's address as seen from this machine; ``scheme`` and
    ``caddy_port`` (default 443/80) for ``via caddy``; ``direct_url`` for ``direct``, from the
    host itself."""

    host: HostLike
    outside_address: str
    sudo: bool = False
    scheme: Scheme = "https"
    caddy_port: int | None = None
    direct_url: str = "http://127.0.0.1:8080"
    connect_timeout: float = 3.0
    http_timeout: float = 10.0


@dataclass(frozen=True)
class Outcome:
    """One assertion's result: its canonical text, whether it holds, what the host showed."""

    expected: str
    ok: bool
    observed: str


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """``text`` quoted on one line, cut to ``limit`` characters."""
    if len(text) <= limit:
        return quote(text)
    return f"{quote(text[:limit])}... ({len(text)} characters)"


def _text_observed(match: TextMatch, text: str) -> str:
    hit = match.hit(text)
    if match.negated and hit is not None:
        number = text.count("\n", 0, hit.start()) + 1
        return f"found on line {number}: {excerpt(text.splitlines()[number - 1])}"
    return excerpt(text) if text else "empty"


def _run(ctx: ProbeContext, *argv: str) -> CommandResultLike:
    """A fixed tool with quoted arguments, in the C locale (stable messages to parse)."""
    return ctx.host.run("LC_ALL=C " + " ".join(["%s"] * len(argv)), *argv)


def _failed(what: str, result: CommandResultLike) -> ProbeError:
    detail = (result.stderr or result.stdout).strip() or "no output"
    return ProbeError(f"{what} failed on the host (exit {result.rc}): {detail}")


# --- service ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFacts:
    load: str
    active: str
    sub: str
    unit_file: str


def parse_systemctl_show(output: str) -> UnitFacts:
    """``systemctl show --property=LoadState,ActiveState,SubState,UnitFileState`` output."""
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return UnitFacts(values.get("LoadState", ""), values.get("ActiveState", ""),
                     values.get("SubState", ""), values.get("UnitFileState", ""))


def _probe_service(check: ServiceCheck, ctx: ProbeContext) -> list[Outcome]:
    result = _run(ctx, "systemctl", "show",
                  "--property=LoadState,ActiveState,SubState,UnitFileState", "--", check.name)
    if result.rc != 0:
        raise _failed("systemctl show", result)
    unit = parse_systemctl_show(result.stdout)
    outcomes: list[Outcome] = []
    for state in check.expect:
        if unit.load == "not-found":
            outcomes.append(Outcome(str(state), False, "no such unit"))
        elif state in (ServiceState.RUNNING, ServiceState.STOPPED):
            running = unit.active == "active"
            stopped = unit.active in ("inactive", "failed")
            ok = running if state is ServiceState.RUNNING else stopped
            outcomes.append(Outcome(str(state), ok, unit.active or "unknown"))
        else:
            enabled = unit.unit_file in ENABLED_STATES
            ok = enabled if state is ServiceState.ENABLED else not enabled
            outcomes.append(Outcome(str(state), ok, unit.unit_file or "unknown"))
    return outcomes


# --- port ------------------------------------------------------------------------------------


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def parse_ss_listening(output: str) -> list[tuple[str, int]]:
    """(address, port) of each socket in ``ss --numeric --listening --tcp`` output; ``*`` is
    kept for "every address"; ``[v6]`` brackets and ``%interface`` suffixes are removed."""
    sockets: list[tuple[str, int]] = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "State":
            continue
        host, _, port = fields[3].rpartition(":")
        if not port.isdigit():
            continue
        host = host.removeprefix("[").removesuffix("]").split("%", 1)[0]
        sockets.append((_address(host), int(port)))
    return sockets


def connect_from_outside(address: str, port: int, timeout: float) -> tuple[bool, str]:
    """Try a TCP connection from this machine: (open, what happened). Raises ProbeError when
    the address cannot be resolved or reached at all, so ``closed`` never passes by accident."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True, f"open (connected to {address}:{port})"
    except ConnectionRefusedError:
        return False, "closed (connection refused)"
    except TimeoutError:
        return False, f"closed (no answer within {timeout:g}s)"
    except socket.gaierror as exc:
        raise ProbeError(f"cannot resolve {address}: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.ENETUNREACH:
            raise ProbeError(f"no route from this machine to {address}: {exc}") from exc
        return False, f"closed ({exc.strerror or exc})"


def _probe_port(check: PortCheck, ctx: ProbeContext) -> list[Outcome]:
    outcomes: list[Outcome] = []
    bound: list[str] | None = None
    for assertion in check.expect:
        if isinstance(assertion, Reachable):
            is_open, observed = connect_from_outside(ctx.outside_address, check.port,
                                                     ctx.connect_timeout)
            outcomes.append(Outcome(str(assertion), is_open == assertion.open, observed))
            continue
        if bound is None:
            result = _run(ctx, "ss", "--numeric", "--listening", "--tcp")
            if result.rc != 0:
                raise _failed("ss", result)
            bound = sorted({a for a, p in parse_ss_listening(result.stdout) if p == check.port})
        if assertion.address is None:
            holds = bool(bound)
        else:
            # ss shows a dual-stack wildcard socket as `*`: it is 0.0.0.0 and :: at once.
            wildcard = "*" in bound and ipaddress.ip_address(assertion.address).is_unspecified
            holds = assertion.address in bound or wildcard
        observed = "listening on " + ", ".join(bound) if bound else "not listening"
        outcomes.append(Outcome(str(assertion), holds != assertion.negated, observed))
    return outcomes


# --- file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatFacts:
    kind: str
    mode: int
    owner: str
    group: str


def parse_stat(output: str) -> StatFacts:
    """``stat -c '%F|%a|%U|%G'`` output."""
    kind, mode, owner, group = output.strip().rsplit("|", 3)
    return StatFacts(kind, int(mode, 8), owner, group)


def _stat(ctx: ProbeContext, path: str, follow: bool) -> StatFacts | None:
    flags = ("-L",) if follow else ()
    result = _run(ctx, "stat", *flags, "-c", STAT_FORMAT, "--", path)
    if result.rc == 0:
        return parse_stat(result.stdout)
    if "No such file or directory" in result.stderr:
        return None
    raise _failed(f"stat {path}", result)


def _readlink(ctx: ProbeContext, path: str, *flags: str) -> str:
    result = _run(ctx, "readlink", *flags, "--", path)
    return result.stdout.strip() if result.rc == 0 else ""


def _probe_file(check: FileCheck, ctx: ProbeContext) -> list[Outcome]:
    own = _stat(ctx, check.path, follow=False)
    link = resolved = None
    target = own
    if own is not None and own.kind == "symbolic link":
        link = _readlink(ctx, check.path)
        resolved = _readlink(ctx, check.path, "-f")
        target = _stat(ctx, check.path, follow=True)
    if own is None:
        shown = "absent"
    elif link is not None:
        shown = f"symlink to {link}" + (f" (resolves to {resolved})" if resolved != link else "")
        shown += "" if target is not None else " (dangling)"
    else:
        shown = own.kind
    content: str | None = None
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        expected = str(assertion)
        if isinstance(assertion, Exists):
            outcomes.append(Outcome(expected, (own is not None) == assertion.present, shown))
        elif isinstance(assertion, SymlinkTo):
            ok = link is not None and assertion.target in (link, resolved)
            outcomes.append(Outcome(expected, ok, shown))
        elif target is None:
            outcomes.append(Outcome(expected, False, shown))
        elif isinstance(assertion, IsDirectory):
            outcomes.append(Outcome(expected, target.kind == "directory", shown))
        elif isinstance(assertion, Mode):
            outcomes.append(Outcome(expected, target.mode == assertion.mode,
                                    f"{target.mode:04o}"))
        elif isinstance(assertion, Owner):
            outcomes.append(Outcome(expected, target.owner == assertion.name, target.owner))
        elif isinstance(assertion, Group):
            outcomes.append(Outcome(expected, target.group == assertion.name, target.group))
        elif target.kind == "directory":
            outcomes.append(Outcome(expected, False, "a directory"))
        else:
            if content is None:
                result = _run(ctx, "cat", "--", check.path)
                if result.rc != 0:
                    raise _failed(f"cat {check.path}", result)
                content = result.stdout
            outcomes.append(Outcome(expected, assertion.holds(content),
                                    _text_observed(assertion, content)))
    return outcomes


# --- http ------------------------------------------------------------------------------------


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
    signs with Caddy's internal CA). Returns the response, or what went wrong."""
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


def fetch_direct(ctx: ProbeContext, method: str, path: str) -> HttpResponse | str:
    """The request made on the host itself with curl, to ``ctx.direct_url``."""
    url = ctx.direct_url.rstrip("/") + path
    verb = ["--head"] if method == "HEAD" else ["--request", method]
    result = _run(ctx, "curl", "--silent", "--show-error", "--include",
                  "--max-time", f"{ctx.http_timeout:g}", *verb, url)
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


def _probe_http(check: HttpCheck, ctx: ProbeContext) -> list[Outcome]:
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
                                    _text_observed(assertion.match, response.body)))
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


# --- command ---------------------------------------------------------------------------------


def command_line(command: str, sudo: bool) -> str:
    """The command as run: a leading plain ``sudo`` is dropped when the connection already runs
    commands as root (testinfra ``--sudo``); ``sudo -u USER ...`` is always kept."""
    return _SUDO_PREFIX.sub("", command, count=1) if sudo else command


def _probe_command(check: CommandCheck, ctx: ProbeContext) -> list[Outcome]:
    result = ctx.host.run(command_line(check.command, ctx.sudo))
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        if isinstance(assertion, ExitCode):
            observed = f"exit {result.rc}"
            if result.rc != assertion.code and result.stderr.strip():
                observed += f", stderr {excerpt(result.stderr.strip(), 160)}"
            outcomes.append(Outcome(str(assertion), result.rc == assertion.code, observed))
        else:
            outcomes.append(Outcome(str(assertion), assertion.holds(result.stdout),
                                    _text_observed(assertion, result.stdout)))
    return outcomes


# --- user ------------------------------------------------------------------------------------


def _probe_user(check: UserCheck, ctx: ProbeContext) -> list[Outcome]:
    result = _run(ctx, "getent", "passwd", "--", check.name)
    if result.rc not in (0, 2):
        raise _failed("getent passwd", result)
    fields = result.stdout.strip().split(":") if result.rc == 0 else []
    entry = fields if len(fields) >= 7 else None
    shown = f"exists (uid {entry[2]})" if entry else "absent"
    groups: list[str] | None = None
    outcomes: list[Outcome] = []
    for assertion in check.expect:
        expected = str(assertion)
        if isinstance(assertion, Exists):
            outcomes.append(Outcome(expected, (entry is not None) == assertion.present, shown))
        elif entry is None:
            outcomes.append(Outcome(expected, False, "absent"))
        elif isinstance(assertion, Shell):
            outcomes.append(Outcome(expected, entry[6] == assertion.path, entry[6]))
        elif isinstance(assertion, Home):
            outcomes.append(Outcome(expected, entry[5] == assertion.path, entry[5]))
        else:
            if groups is None:
                listed = _run(ctx, "id", "-Gn", "--", check.name)
                if listed.rc != 0:
                    raise _failed("id -Gn", listed)
                groups = listed.stdout.split()
            holds = assertion.group in groups
            outcomes.append(Outcome(expected, holds != assertion.negated,
                                    "groups " + " ".join(groups)))
    return outcomes


# --- package ---------------------------------------------------------------------------------


def _probe_package(check: PackageCheck, ctx: ProbeContext) -> list[Outcome]:
    result = _run(ctx, "dpkg-query", "--show", "--showformat=${Status}\t${Version}", check.name)
    if result.rc == 0:
        status, _, version = result.stdout.strip().partition("\t")
        words = status.split()
        installed = len(words) == 3 and words[0] in ("install", "hold") and (
            words[2] == "installed")
        shown = f"installed ({version})" if installed else f"not installed ({status})"
    elif result.rc == 1 and "no packages found" in result.stderr:
        installed, shown = False, "not installed (unknown to dpkg)"
    else:
        raise _failed("dpkg-query (packages are checked on Debian and Ubuntu hosts)", result)
    return [Outcome(str(a), installed == a.present, shown) for a in check.expect]


# --- entry points ----------------------------------------------------------------------------


def probe(check: Check, ctx: ProbeContext) -> list[Outcome]:
    """Every assertion of ``check`` against the host, in order (all of them, not the first
    failure). Raises ProbeError when the host cannot be asked."""
    if isinstance(check, ServiceCheck):
        return _probe_service(check, ctx)
    if isinstance(check, PortCheck):
        return _probe_port(check, ctx)
    if isinstance(check, FileCheck):
        return _probe_file(check, ctx)
    if isinstance(check, HttpCheck):
        return _probe_http(check, ctx)
    if isinstance(check, CommandCheck):
        return _probe_command(check, ctx)
    if isinstance(check, UserCheck):
        return _probe_user(check, ctx)
    return _probe_package(check, ctx)


def failure_report(statement: Statement, outcomes: list[Outcome], where: str) -> str | None:
    """One line per failed assertion, ``WHERE: SUBJECT: expected X, observed Y``; None if all
    hold. ``where`` is ``path:line`` as the reader should see it."""
    lines = [f"{where}: {statement.check.subject}: expected {o.expected}, observed {o.observed}"
             for o in outcomes if not o.ok]
    return "\n".join(lines) if lines else None
