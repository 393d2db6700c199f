"""choiros_infra.expect probes against testinfra's local:// backend, read-only: a temp file,
`echo`, a socket and an HTTP server this test opens on 127.0.0.1 itself. Each subject is shown
passing and failing with the observed value in the message. Services are probed through a fake
host with canned `systemctl show` output: this machine's services and firewall are never read.
"""

from __future__ import annotations

import datetime
import grp
import json
import os
import pwd
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import testinfra
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from choiros_infra.expect import ProbeContext, ProbeError, parse_text, probe
from choiros_infra.expect.kinds import service as service_kind
from choiros_infra.expect.kinds.command import command_line
from choiros_infra.expect.kinds.file import parse_stat
from choiros_infra.expect.kinds.http import parse_curl_include
from choiros_infra.expect.kinds.port import parse_ss_listening
from choiros_infra.expect.kinds.service import parse_systemctl_show
from choiros_infra.expect.model import quote
from choiros_infra.expect.probes import Outcome, connect_from_outside, failure_report

pytestmark = pytest.mark.unit

ANY_V4 = str(IPv4Address(0))  # the wildcard address, spelt so no linter thinks it is a bind
needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query")


@pytest.fixture(scope="module")
def ctx() -> ProbeContext:
    return ProbeContext(host=testinfra.get_host("local://"), outside_address="127.0.0.1",
                        scheme="http", connect_timeout=2.0, http_timeout=5.0)


def outcomes(line: str, context: ProbeContext) -> list[Outcome]:
    [statement] = parse_text(f"```expect\n{line}\n```\n", "rb.md")
    return probe(statement.check, context)


def report(line: str, context: ProbeContext) -> list[str]:
    """The failure lines for one statement (empty when every assertion holds)."""
    [statement] = parse_text(f"```expect\n{line}\n```\n", "rb.md")
    text = failure_report(statement, probe(statement.check, context), "rb.md:2")
    return text.splitlines() if text else []


# --- file --------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "10-choiros.conf"
    path.write_text("alpha\nPasswordAuthentication no\n")
    path.chmod(0o640)
    return path


def test_file_passes_when_mode_owner_and_content_match(config_file: Path,
                                                       ctx: ProbeContext) -> None:
    owner = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    line = (f'file {quote(str(config_file))}: exists, mode 0640, owner {owner}, group {group}, '
            f'contains "PasswordAuthentication no", matches /^alpha$/, not contains "yes"')
    assert report(line, ctx) == []


def test_file_failure_names_each_observed_value(config_file: Path, ctx: ProbeContext) -> None:
    line = (f'file {quote(str(config_file))}: mode 0644, owner nobody, '
            f'contains "PermitRootLogin no", not contains "alpha", directory')
    subject = f"rb.md:2: file {config_file}"
    assert report(line, ctx) == [
        f"{subject}: expected mode 0644, observed 0640",
        f"{subject}: expected owner nobody, observed {pwd.getpwuid(os.getuid()).pw_name}",
        f'{subject}: expected contains "PermitRootLogin no", observed '
        f'"alpha\\nPasswordAuthentication no\\n"',
        f'{subject}: expected not contains "alpha", observed found on line 1: "alpha"',
        f"{subject}: expected directory, observed regular file",
    ]


def test_file_absent_directory_and_symlinks(config_file: Path, ctx: ProbeContext) -> None:
    folder = config_file.parent
    link = folder / "current"
    link.symlink_to(config_file)
    dangling = folder / "dangling"
    dangling.symlink_to(folder / "nowhere")
    missing = folder / "missing"
    assert report(f"file {folder}: directory, exists", ctx) == []
    assert report(f"file {missing}: absent", ctx) == []
    assert report(f"file {link}: symlink to {config_file}, mode 0640, contains alpha", ctx) == []
    assert report(f"file {dangling}: exists, symlink to {folder / 'nowhere'}", ctx) == []
    assert report(f"file {missing}: exists, mode 0644", ctx) == [
        f"rb.md:2: file {missing}: expected exists, observed absent",
        f"rb.md:2: file {missing}: expected mode 0644, observed absent",
    ]
    assert report(f"file {config_file}: symlink to /etc/hosts", ctx) == [
        f"rb.md:2: file {config_file}: expected symlink to /etc/hosts, observed regular file"]
    assert report(f"file {dangling}: mode 0644", ctx) == [
        f"rb.md:2: file {dangling}: expected mode 0644, observed symlink to "
        f"{folder / 'nowhere'} (dangling)"]
    assert report(f"file {folder}: contains x", ctx) == [
        f'rb.md:2: file {folder}: expected contains "x", observed a directory']
    assert report(f"file {config_file}: absent", ctx) == [
        f"rb.md:2: file {config_file}: expected absent, observed regular file"]


# --- command -----------------------------------------------------------------------------------


def test_command_passes_and_fails_with_exit_status_and_output(ctx: ProbeContext) -> None:
    assert report('command "echo hi": contains "hi", matches /^hi$/, exit 0', ctx) == []
    assert report('command "echo hi; echo oops >&2; exit 3": contains "bye"', ctx) == [
        'rb.md:2: command "echo hi; echo oops >&2; exit 3": expected exit 0, '
        'observed exit 3, stderr "oops"',
        'rb.md:2: command "echo hi; echo oops >&2; exit 3": expected contains "bye", '
        'observed "hi\\n"',
    ]
    assert report('command "exit 4": exit 4', ctx) == []


def test_command_not_contains_cannot_pass_on_a_failing_command(ctx: ProbeContext) -> None:
    assert [o.ok for o in outcomes('command "cat /nonexistent/x": not contains "y"', ctx)] == [
        False, True]


@pytest.mark.parametrize(("command", "sudo", "run"), [
    ("sudo ufw status", True, "ufw status"),
    ("  sudo   ufw status", True, "ufw status"),
    ("sudo ufw status", False, "sudo ufw status"),
    ("sudo -u choiros id", True, "sudo -u choiros id"),
    ("sudoedit /x", True, "sudoedit /x"),
    ("ufw status", True, "ufw status"),
])
def test_a_leading_sudo_is_dropped_only_when_already_root(command: str, sudo: bool,
                                                          run: str) -> None:
    assert command_line(command, sudo) == run


# --- port --------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()  # bound, never listened: nothing answers there
    return port


@needs_ss
def test_port_listening_and_open_from_outside(listener: int, ctx: ProbeContext) -> None:
    line = f"port {listener}: listening, listening on 127.0.0.1, open from outside"
    assert report(line, ctx) == []
    line = (f"port {listener}: listening on 0.0.0.0, not listening on 127.0.0.1, "
            f"closed from outside")
    assert report(line, ctx) == [
        f"rb.md:2: port {listener}: expected listening on 0.0.0.0, "
        f"observed listening on 127.0.0.1",
        f"rb.md:2: port {listener}: expected not listening on 127.0.0.1, "
        f"observed listening on 127.0.0.1",
        f"rb.md:2: port {listener}: expected closed from outside, "
        f"observed open (connected to 127.0.0.1:{listener})",
    ]


@needs_ss
def test_port_closed_and_not_listening(closed_port: int, ctx: ProbeContext) -> None:
    assert report(f"port {closed_port}: closed from outside, not listening", ctx) == []
    assert report(f"port {closed_port}: open from outside, listening", ctx) == [
        f"rb.md:2: port {closed_port}: expected open from outside, "
        f"observed closed (connection refused)",
        f"rb.md:2: port {closed_port}: expected listening, observed not listening",
    ]


def test_an_unresolvable_address_is_a_probe_error_never_closed() -> None:
    with pytest.raises(ProbeError, match=r"cannot resolve no-such-host\.invalid"):
        connect_from_outside("no-such-host.invalid", 80, 1.0)


# --- http --------------------------------------------------------------------------------------

HEALTH = {"status": "healthy", "checks": {"db": "ok"}, "n": 3, "ok": True, "items": ["a"]}


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, with_body: bool) -> None:
        if self.path == "/health":
            status, body, kind = 200, json.dumps(HEALTH).encode(), "application/json"
        elif self.path == "/":
            status, body, kind = 200, b"hello, world", "text/plain"
        else:
            status, body, kind = 404, b"not found", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web(ctx: ProbeContext) -> Iterator[ProbeContext]:
    """A tiny HTTP server on 127.0.0.1 standing in for both Caddy and the backend."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ProbeContext(host=ctx.host, outside_address="127.0.0.1", scheme="http",
                           caddy_port=port, direct_url=f"http://127.0.0.1:{port}",
                           connect_timeout=2.0, http_timeout=5.0)
    finally:
        server.shutdown()
        server.server_close()


def test_http_via_caddy_passes(web: ProbeContext) -> None:
    line = ("http GET /health via caddy: 200, json status = healthy, json checks.db = ok, "
            "json n = 3, json ok = true, json items.0 = a, header X-Frame-Options = DENY, "
            'header content-type contains json, body contains "healthy", '
            "body matches /\"status\": \"healthy\"/")
    assert report(line, web) == []


def test_http_via_caddy_failure_names_observed_values(web: ProbeContext) -> None:
    line = ("http GET /health via caddy: 503, json status = degraded, json checks.cache = ok, "
            "header X-Frame-Options = SAMEORIGIN, header Server absent, "
            'body not contains "healthy"')
    lines = report(line, web)
    subject = "rb.md:2: http GET /health via caddy"
    assert lines[:4] == [
        f"{subject}: expected 503, observed 200",
        f'{subject}: expected json status = degraded, observed "healthy"',
        f"{subject}: expected json checks.cache = ok, observed no key checks.cache",
        f'{subject}: expected header X-Frame-Options = SAMEORIGIN, observed "DENY"',
    ]
    assert lines[4].startswith(f'{subject}: expected header Server absent, observed "BaseHTTP/')
    assert lines[5].startswith(f'{subject}: expected body not contains "healthy", '
                               f'observed found on line 1: "{{')
    assert len(lines) == 6


def test_a_request_through_caddy_is_sent_once_per_run(closed_port: int,
                                                     ctx: ProbeContext) -> None:
    """Statements making the same request share its answer, so a host that does not answer
    costs one timeout per request, not one per statement; another request is still sent."""
    context = ProbeContext(host=ctx.host, outside_address="127.0.0.1", scheme="http",
                           caddy_port=closed_port)
    refused = outcomes("http GET /health via caddy: 200", context)[0].observed
    server = ThreadingHTTPServer(("127.0.0.1", closed_port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # the server now answers; this run keeps its first answer for the same request
        assert outcomes("http GET /health via caddy: 200", context)[0].observed == refused
        assert outcomes("http GET / via caddy: 200", context)[0].ok
        fresh = ProbeContext(host=ctx.host, outside_address="127.0.0.1", scheme="http",
                             caddy_port=closed_port)
        assert outcomes("http GET /health via caddy: 200", fresh)[0].ok, "a new run asks"
    finally:
        server.shutdown()
        server.server_close()


def test_http_json_on_a_non_json_body(web: ProbeContext) -> None:
    assert report("http GET / via caddy: 200, json status = healthy", web) == [
        'rb.md:2: http GET / via caddy: expected json status = healthy, '
        'observed not JSON: "hello, world"']


def test_http_via_caddy_without_a_server_reports_no_response(closed_port: int,
                                                             ctx: ProbeContext) -> None:
    context = ProbeContext(host=ctx.host, outside_address="127.0.0.1", scheme="http",
                           caddy_port=closed_port)
    [outcome] = outcomes("http GET /health via caddy: 200", context)
    assert not outcome.ok
    assert outcome.observed.startswith(
        f"no response from http://127.0.0.1:{closed_port}/health (ConnectionRefusedError")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate, like the one Caddy's internal CA gives a kitchen host."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kitchen")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_http_via_caddy_over_tls_does_not_verify_the_certificate(tmp_path: Path,
                                                                 ctx: ProbeContext) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        context = ProbeContext(host=ctx.host, outside_address="127.0.0.1", scheme="https",
                               caddy_port=int(server.server_address[1]), http_timeout=5.0)
        assert report("http GET /health via caddy: 200, json status = healthy", context) == []
    finally:
        server.shutdown()
        server.server_close()


def test_https_refused_hints_at_the_scheme_option(closed_port: int, ctx: ProbeContext) -> None:
    context = ProbeContext(host=ctx.host, outside_address="127.0.0.1", scheme="https",
                           caddy_port=closed_port)
    [outcome] = outcomes("http GET /health via caddy: 200", context)
    assert outcome.observed.endswith(
        "; a host with tls_mode off serves http: --runbook-scheme http")


@needs_curl
def test_http_direct_runs_curl_on_the_host(web: ProbeContext) -> None:
    assert report("http GET /health direct: 200, json status = healthy, "
                  "header X-Frame-Options = DENY", web) == []
    assert report("http HEAD /health direct: 200, header Content-Type = application/json",
                  web) == []
    assert report("http GET /missing direct: 200, body contains found", web) == [
        "rb.md:2: http GET /missing direct: expected 200, observed 404"]


# --- user and package --------------------------------------------------------------------------


def test_user_passes_and_fails(ctx: ProbeContext) -> None:
    root = pwd.getpwnam("root")
    line = (f"user root: exists, shell {root.pw_shell}, home {root.pw_dir}, in group root, "
            f"not in group no-such-group-x")
    assert report(line, ctx) == []
    assert report("user root: shell /usr/sbin/nologin-x, not in group root", ctx)[0] == (
        f"rb.md:2: user root: expected shell /usr/sbin/nologin-x, observed {root.pw_shell}")
    assert report("user root: not in group root", ctx)[0].startswith(
        "rb.md:2: user root: expected not in group root, observed groups root")
    assert report("user no-such-user-x: absent", ctx) == []
    assert report("user no-such-user-x: exists, shell /bin/sh", ctx) == [
        "rb.md:2: user no-such-user-x: expected exists, observed absent",
        "rb.md:2: user no-such-user-x: expected shell /bin/sh, observed absent",
    ]


@needs_dpkg
def test_package_passes_and_fails(ctx: ProbeContext) -> None:
    assert report("package coreutils: installed", ctx) == []
    assert report("package no-such-package-x: not installed", ctx) == []
    assert report("package no-such-package-x: installed", ctx) == [
        "rb.md:2: package no-such-package-x: expected installed, "
        "observed not installed (unknown to dpkg)"]
    [line] = report("package coreutils: not installed", ctx)
    assert line.startswith(
        "rb.md:2: package coreutils: expected not installed, observed installed (")


# --- service (fake host: this machine's services are never probed) ----------------------------


@dataclass(frozen=True)
class _Result:
    rc: int
    stdout: str
    stderr: str = ""


@dataclass
class _FakeHost:
    """Answers `systemctl show` with canned output and records what it was asked."""

    show: str
    rc: int = 0
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def run(self, command: str, *args: str) -> _Result:
        self.calls.append((command, args))
        return _Result(self.rc, self.show, "" if self.rc == 0 else "Failed to connect to bus")


def _unit(active: str, unit_file: str, load: str = "loaded") -> str:
    return (f"LoadState={load}\nActiveState={active}\nSubState=x\n"
            f"UnitFileState={unit_file}\n")


def test_service_message_reads_like_the_runbook() -> None:
    host = _FakeHost(_unit("inactive", "enabled"))
    [statement] = parse_text(
        "```expect\nservice choiros-backend: enabled, running\n```\n",
        "docs/runbooks/30-operations/security.md")
    context = ProbeContext(host=host, outside_address="203.0.113.7")
    assert failure_report(statement, probe(statement.check, context),
                          "docs/runbooks/30-operations/security.md:42") == (
        "docs/runbooks/30-operations/security.md:42: service choiros-backend: "
        "expected running, observed inactive")
    assert host.calls == [("LC_ALL=C %s %s %s %s %s", (
        "systemctl", "show", "--property=LoadState,ActiveState,SubState,UnitFileState", "--",
        "choiros-backend.service"))]


@pytest.mark.parametrize(("name", "unit"), [
    ("caddy", "caddy.service"), ("caddy.service", "caddy.service"),
    ("apt-daily.timer", "apt-daily.timer"), ("choiros@x", "choiros@x.service"),
    ("dev-sda.device", "dev-sda.device"), ("/dev/sda", "/dev/sda"),
])
def test_a_unit_is_read_by_the_name_systemctl_completes(name: str, unit: str) -> None:
    """``service caddy`` and ``service caddy.service`` are one unit: one command reads it."""
    assert service_kind.unit_name(name) == unit
    assert service_kind.show(name) == service_kind.show(unit)


@pytest.mark.parametrize(("show", "statement", "oks", "observed"), [
    (_unit("active", "enabled"), "enabled, running", [True, True], ["enabled", "active"]),
    (_unit("active", "static"), "enabled", [True], ["static"]),
    (_unit("failed", "disabled"), "disabled, stopped", [True, True], ["disabled", "failed"]),
    (_unit("inactive", "masked", "masked"), "enabled, not running", [False, True],
     ["masked", "inactive"]),
    (_unit("activating", "enabled"), "running", [False], ["activating"]),
    (_unit("deactivating", "enabled"), "stopped", [False], ["deactivating"]),
    (_unit("inactive", "", "not-found"), "stopped, disabled", [False, False],
     ["no such unit", "no such unit"]),
])
def test_service_states(show: str, statement: str, oks: list[bool],
                        observed: list[str]) -> None:
    results = outcomes(f"service caddy: {statement}",
                       ProbeContext(host=_FakeHost(show), outside_address="x"))
    assert [o.ok for o in results] == oks
    assert [o.observed for o in results] == observed


def test_service_probe_error_when_systemctl_cannot_answer() -> None:
    context = ProbeContext(host=_FakeHost("", rc=1), outside_address="x")
    with pytest.raises(ProbeError, match=r"systemctl show failed on the host \(exit 1\): Failed"):
        outcomes("service caddy: running", context)


# --- parsers of command output -----------------------------------------------------------------


def test_parse_ss_listening() -> None:
    output = (
        "State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
        "LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*\n"
        "LISTEN 0      128          0.0.0.0:22         0.0.0.0:*\n"
        "LISTEN 0      4096               *:443              *:*\n"
        "LISTEN 0      128             [::]:22            [::]:*\n"
        "LISTEN 0      5              [::1]:631           [::]:*\n"
    )
    assert parse_ss_listening(output) == [("127.0.0.53", 53), (ANY_V4, 22), ("*", 443),
                                          ("::", 22), ("::1", 631)]


def test_parse_curl_include_skips_interim_responses() -> None:
    output = ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: x\r\n"
              "X-A: 1\r\nx-a: 2\r\n\r\n{\"status\": \"healthy\"}")
    response = parse_curl_include(output)
    assert (response.status, response.body) == (200, '{"status": "healthy"}')
    assert response.header("X-A") == "1, 2"
    assert response.header("missing") is None
    with pytest.raises(ValueError, match="not an HTTP response"):
        parse_curl_include("garbage")


def test_parse_stat_and_systemctl_show() -> None:
    stat = parse_stat("regular file|4755|root|staff\n")
    assert (stat.kind, stat.mode, stat.owner, stat.group) == ("regular file", 0o4755, "root",
                                                              "staff")
    unit = parse_systemctl_show(_unit("active", "enabled"))
    assert (unit.load, unit.active, unit.unit_file) == ("loaded", "active", "enabled")
