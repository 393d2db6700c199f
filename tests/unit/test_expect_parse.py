"""choiros_infra.expect parsing: good statements become typed checks, bad ones are refused at
file:line naming what the grammar expected there, and Markdown fences are read like CommonMark."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from choiros_infra.expect import (
    RunbookSyntaxError,
    iter_runbook_statements,
    lint_runbooks,
    parse_file,
    parse_text,
)
from choiros_infra.expect.kinds import KINDS
from choiros_infra.expect.kinds.command import CommandCheck, ExitCode
from choiros_infra.expect.kinds.file import FileCheck, Group, IsDirectory, Mode, Owner, SymlinkTo
from choiros_infra.expect.kinds.http import (
    Body,
    HeaderEquals,
    HeaderMatch,
    HeaderPresent,
    HttpCheck,
    JsonEquals,
    Status,
)
from choiros_infra.expect.kinds.package import Installed, PackageCheck
from choiros_infra.expect.kinds.port import Listening, PortCheck, Reachable
from choiros_infra.expect.kinds.service import ServiceCheck, ServiceState
from choiros_infra.expect.kinds.user import Home, InGroup, Shell, UserCheck
from choiros_infra.expect.model import Check, Exists, TextMatch

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GRAMMAR_DOC = REPO / "docs" / "runbooks" / "50-testing" / "expect-grammar.md"
SUBJECTS = tuple(KINDS)

SSHD = "/etc/ssh/sshd_config.d/10-choiros.conf"
ANY_V4 = str(IPv4Address(0))  # the wildcard address, spelt so no linter thinks it is a bind

GOOD: list[tuple[str, Check]] = [
    ("service choiros-backend: enabled, running",
     ServiceCheck("choiros-backend", (ServiceState.ENABLED, ServiceState.RUNNING))),
    ("service telnet.socket: disabled, not running",
     ServiceCheck("telnet.socket", (ServiceState.DISABLED, ServiceState.STOPPED))),
    ("service getty@tty1: stopped", ServiceCheck("getty@tty1", (ServiceState.STOPPED,))),
    ("port 8080: closed from outside", PortCheck(8080, (Reachable(False),))),
    ("port 443: open from outside", PortCheck(443, (Reachable(True),))),
    ("port 8080: listening on 127.0.0.1", PortCheck(8080, (Listening("127.0.0.1"),))),
    ("port 22: listening", PortCheck(22, (Listening(),))),
    ("port 8080: not listening on 0.0.0.0, listening on [::1]",
     PortCheck(8080, (Listening(ANY_V4, negated=True), Listening("::1")))),
    ("port 9: not listening", PortCheck(9, (Listening(None, negated=True),))),
    (f'file {SSHD}: mode 0644, owner root, group root, contains "PasswordAuthentication no"',
     FileCheck(SSHD, (Mode(0o644), Owner("root"), Group("root"),
                      TextMatch("contains", "PasswordAuthentication no")))),
    ("file /etc/x: exists", FileCheck("/etc/x", (Exists(True),))),
    ("file /etc/nginx: absent", FileCheck("/etc/nginx", (Exists(False),))),
    ("file /etc/choiros: directory, mode 755", FileCheck("/etc/choiros",
                                                         (IsDirectory(), Mode(0o755)))),
    ("file /opt/choiros/current: symlink to /opt/choiros/releases/1.4.2",
     FileCheck("/opt/choiros/current", (SymlinkTo("/opt/choiros/releases/1.4.2"),))),
    ('file "/srv/a b": not contains "x, y", matches /^a\\/b{1,3}$/',
     FileCheck("/srv/a b", (TextMatch("contains", "x, y", negated=True),
                            TextMatch("matches", "^a/b{1,3}$")))),
    ('file /x: contains "say \\"hi\\"\\n\\t\\\\"',
     FileCheck("/x", (TextMatch("contains", 'say "hi"\n\t\\'),))),
    ("file /x: contains word  # a trailing comment",
     FileCheck("/x", (TextMatch("contains", "word"),))),
    ("file /x: mode 04755", FileCheck("/x", (Mode(0o4755),))),
    ("http GET /health via caddy: 200, json status = healthy",
     HttpCheck("GET", "/health", "caddy", (Status(200), JsonEquals("status", "healthy")))),
    ('http GET /health direct: 200, json checks.db = "ok, fine", json ok = true',
     HttpCheck("GET", "/health", "direct",
               (Status(200), JsonEquals("checks.db", "ok, fine"), JsonEquals("ok", "true")))),
    ("http GET / via caddy: header X-Frame-Options = DENY, header Server absent, "
     "header X-Trace present",
     HttpCheck("GET", "/", "caddy", (HeaderEquals("X-Frame-Options", "DENY"),
                                     HeaderPresent("Server", False),
                                     HeaderPresent("X-Trace", True)))),
    ('http HEAD /?a=b via caddy: 301, header Location matches /^https:/, '
     'header CSP not contains "unsafe-inline"',
     HttpCheck("HEAD", "/?a=b", "caddy",
               (Status(301), HeaderMatch("Location", TextMatch("matches", "^https:")),
                HeaderMatch("CSP", TextMatch("contains", "unsafe-inline", negated=True))))),
    ('http GET / via caddy: body contains "<title>", body not matches /error\\/i_/',
     HttpCheck("GET", "/", "caddy", (Body(TextMatch("contains", "<title>")),
                                     Body(TextMatch("matches", "error/i_", negated=True))))),
    ('command "sudo ufw status": contains "Status: active"',
     CommandCheck("sudo ufw status", (ExitCode(0), TextMatch("contains", "Status: active")))),
    ('command "false": exit 1', CommandCheck("false", (ExitCode(1),))),
    ('command "ufw status verbose": matches /^22\\/tcp\\s+ALLOW IN/, not contains "DENY"',
     CommandCheck("ufw status verbose",
                  (ExitCode(0), TextMatch("matches", r"^22/tcp\s+ALLOW IN"),
                   TextMatch("contains", "DENY", negated=True)))),
    ("user choiros: exists, shell /usr/sbin/nologin, not in group sudo",
     UserCheck("choiros", (Exists(True), Shell("/usr/sbin/nologin"),
                           InGroup("sudo", negated=True)))),
    ("user admin: home /home/admin, in group sudo",
     UserCheck("admin", (Home("/home/admin"), InGroup("sudo")))),
    ("user mallory: absent", UserCheck("mallory", (Exists(False),))),
    ("package caddy: installed", PackageCheck("caddy", (Installed(True),))),
    ("package telnetd: not installed", PackageCheck("telnetd", (Installed(False),))),
    ("package libc6:amd64: installed", PackageCheck("libc6:amd64", (Installed(True),))),
]

# (statement, words the problem must contain, words "expected ..." must contain)
BAD: list[tuple[str, str, str]] = [
    ("servce x: running", "unknown subject 'servce' (did you mean 'service'?)", "service, port"),
    ("firewall: active", "unknown subject 'firewall'", "service, port, file"),
    ("service x running", "missing ': ' after the subject", "service NAME: ASSERTION"),
    ("service x:", "no assertion after ':'", "enabled, disabled"),
    ("service x: runing", "unknown service assertion 'runing' (did you mean 'running'?)",
     "enabled, disabled, running, stopped, not running"),
    ("service x: enabled,, running", "empty assertion between commas", "enabled"),
    ("service x: running,", "empty assertion between commas", "enabled"),
    ("service a b: running", "expected one service name", "service NAME"),
    ("service x: enabled, disabled", "'disabled' contradicts or repeats 'enabled'",
     "once per statement"),
    ("service x: running, running", "'running' contradicts or repeats 'running'",
     "once per statement"),
    ("port 80: open", "unknown port assertion 'open' (did you mean 'open from outside'?)",
     "open from outside, closed from outside"),
    ("port http: open from outside", "'http' is not a TCP port", "port NUMBER"),
    ("port 70000: listening", "'70000' is not a TCP port", "1-65535"),
    ("port 8080: listening on localhost", "'localhost' is not an IP address", "127.0.0.1"),
    ("port 8080: listening on", "unknown port assertion 'listening on'", "listening on ADDRESS"),
    ("port 8080: open from outside, closed from outside", "contradicts", "once"),
    ("file etc/x: exists", "'etc/x' is not an absolute path", "file /ABSOLUTE/PATH"),
    ("file /x: mode 999", "'999' is not an octal mode", "mode OCTAL"),
    ("file /x: mode", "missing octal mode", "one octal mode"),
    ("file /x: owner root admin", "expected one user name, found 2", "quote it"),
    ("file /x: contains two words", "expected one \"TEXT\" after contains, found 2", "quote it"),
    ('file /x: contains ""', "contains needs a non-empty text", 'contains "TEXT"'),
    ("file /x: matches word", "matches needs a regex between slashes", "/REGEX/"),
    ("file /x: matches /a(/", "invalid regex /a(/", "Python regular expression"),
    ("file /x: matches /abc", "unterminated regex", "closing /"),
    ("file /x: matches /abc/i", "matches needs a regex between slashes", "/REGEX/"),
    ('file /x: contains "abc', "unterminated string", 'closing "'),
    ('file /x: contains "a\\qb"', "unknown escape '\\q'", '\\"'),
    ("file /x: absent, mode 0644", "'absent' cannot be combined", "absent alone"),
    ("file /x: readable", "unknown file assertion 'readable'", "exists, absent, directory"),
    ("http GET /health: 200", "malformed http subject", "via caddy"),
    ("http POST /x via caddy: 200", "'POST' is not a checked HTTP method",
     "GET, HEAD, OPTIONS"),
    ("http get /x via caddy: 200", "'get' is not a checked HTTP method", "GET"),
    ("http GET health via caddy: 200", "'health' is not a request path", "/health"),
    ("http GET /x via nginx: 200", "malformed http subject", "direct"),
    ("http GET /x direct: 99", "'99' is not an HTTP status", "100-599"),
    ("http GET /x direct: json status=healthy", "malformed json assertion",
     "spaces around ="),
    ("http GET /x direct: header X-Frame-Options DENY", "malformed header assertion",
     "header NAME = VALUE"),
    ("http GET /x direct: body has x", "unknown http assertion 'body has x'", "body [not]"),
    ("http GET /x direct: 200, 201", "contradicts", "once"),
    ("command ufw status: exit 0", "the command must be one quoted string", 'command "'),
    ('command "": exit 0', "the command must be one quoted string", 'command "'),
    ('command "true": exit 256', "'256' is not an exit status", "0-255"),
    ('command "true": exits 0', "unknown command assertion 'exits 0' (did you mean 'exit CODE'?)",
     "exit CODE"),
    ("user root: in group", "missing group name", "one group name"),
    ("user -x: exists", "'-x' is not a valid user name", "user NAME"),
    ("user root: shell", "missing shell path", "shell path"),
    ("package Caddy: installed", "'Caddy' is not a valid package name", "package NAME"),
    ("package caddy: present", "unknown package assertion 'present'",
     "installed, not installed"),
]


def _one(line: str) -> list[object]:
    statements = parse_text(f"# Runbook\n\n```expect\n{line}\n```\n", "rb.md")
    return [s.check for s in statements]


@pytest.mark.parametrize(("line", "check"), GOOD, ids=[g[0] for g in GOOD])
def test_good_statement_parses_into_typed_check(line: str, check: Check) -> None:
    assert _one(line) == [check]


@pytest.mark.parametrize(("line", "problem", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_statement_is_refused_at_file_and_line(line: str, problem: str,
                                                   expected: str) -> None:
    text = f"# Runbook\n\n```expect\nservice ok: running\n{line}\n```\n"
    with pytest.raises(RunbookSyntaxError) as caught:
        parse_text(text, "docs/runbooks/30-operations/security.md")
    [error] = caught.value.errors
    assert error.source.line == 5
    assert error.statement == line.strip()
    assert problem in error.problem
    assert error.expected is not None and expected in error.expected
    message = str(caught.value)
    assert message.startswith(f"docs/runbooks/30-operations/security.md:5: {error.problem}")
    assert f"\n    {line.strip()}\n    expected " in message


@pytest.mark.parametrize(("line", "check"), GOOD, ids=[g[0] for g in GOOD])
def test_canonical_text_parses_back_to_the_same_check(line: str, check: Check) -> None:
    """str() of each assertion is grammar: a failure's "expected X" reads like a runbook."""
    expect = [a for a in check.expect if not (isinstance(check, CommandCheck)
                                                and a == ExitCode(0) and "exit" not in line)]
    canonical = f"{check.subject}: " + ", ".join(str(a) for a in expect)
    assert _one(canonical) == [check]


def test_statement_keeps_source_text_and_title() -> None:
    text = "intro\n\n```expect\n# comment\n\n  service caddy: running   # trailing\n```\n"
    [statement] = parse_text(text, "docs/runbooks/30-operations/security.md",
                             "30-operations/security.md")
    assert statement.source.line == 6
    assert statement.text == "service caddy: running"
    assert statement.title == "30-operations/security.md:6 service caddy: running"
    assert str(statement.source) == "docs/runbooks/30-operations/security.md:6"


FENCES = """\
```sh
service not-checked: running
```

````markdown
```expect
service shown-as-example: running
```
````

~~~expect
service tilde: running
~~~

   ```expect title
   service indented: running
   ```

```python
x = "```expect"
```

Inline ```expect``` code is not a fence.

``````expect
service long-fence: running
service still-inside: running
``````
"""


def test_only_expect_fences_are_read_commonmark_style() -> None:
    names = [s.check.name for s in parse_text(FENCES, "rb.md")
             if isinstance(s.check, ServiceCheck)]
    assert names == ["tilde", "indented", "long-fence", "still-inside"]


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("text\n```expect\nservice x: running\n", 2, "expect block is never closed"),
    ("```expect\n# only a comment\n\n```\n", 1, "expect block has no statements"),
    ("```expected\nservice x: running\n```\n", 1, "code block marked 'expected' is not checked"),
    ("```Expect\nservice x: running\n```\n", 1, "code block marked 'Expect' is not checked"),
    ("````expect\nservice x: running\n```\n````\n", 3, "unknown subject '```'"),
])
def test_block_problems_are_refused(text: str, line: int, problem: str) -> None:
    with pytest.raises(RunbookSyntaxError) as caught:
        parse_text(text, "rb.md")
    assert [(e.source.line, e.problem) for e in caught.value.errors] == [(line, problem)]


def test_every_problem_in_a_file_is_reported_in_line_order() -> None:
    text = "```expect\nservce a: running\nservice b: running\nport x: listening\n```\n"
    with pytest.raises(RunbookSyntaxError) as caught:
        parse_text(text, "rb.md")
    assert [e.source.line for e in caught.value.errors] == [2, 4]


def test_file_api_names_statements_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "30-operations").mkdir()
    (tmp_path / "30-operations" / "security.md").write_text(
        "# Security\n\n```expect\nservice caddy: running\nport 8080: closed from outside\n```\n")
    (tmp_path / "10-intro.md").write_text("No checks here.\n")
    statements = list(iter_runbook_statements(tmp_path))
    assert [s.title for s in statements] == [
        "30-operations/security.md:4 service caddy: running",
        "30-operations/security.md:5 port 8080: closed from outside",
    ]
    assert parse_file(tmp_path / "30-operations" / "security.md", tmp_path) == statements
    assert lint_runbooks(tmp_path) == []
    (tmp_path / "20-bad.md").write_text("```expect\nservice caddy: runing\n```\n")
    [error] = lint_runbooks(tmp_path)
    assert (error.source.name, error.source.line) == ("20-bad.md", 2)
    with pytest.raises(RunbookSyntaxError):
        list(iter_runbook_statements(tmp_path))


_PLACEHOLDER = re.compile(r"\b(NAME|NUMBER|ADDRESS|PATH|OCTAL|USER|GROUP|TEXT|REGEX|METHOD"
                          r"|STATUS|KEY|VALUE|CODE|COMMAND)\b")


def test_grammar_document_parses_and_its_examples_are_grammar() -> None:
    """The grammar doc's own expect block parses, and every example statement in its text
    blocks (lines starting with a subject, without placeholders) is valid grammar."""
    checked = parse_file(GRAMMAR_DOC, GRAMMAR_DOC.parents[1])
    assert len(checked) >= 5
    text = GRAMMAR_DOC.read_text()
    examples = [
        line for block in re.findall(r"^```text\n(.*?)^```$", text, re.M | re.S)
        for line in block.splitlines()
        if re.split(r"[ :]", line, maxsplit=1)[0] in SUBJECTS and "|" not in line
        and not _PLACEHOLDER.search(line)
    ]
    assert len(examples) >= 20
    doc = "```expect\n" + "\n".join(examples) + "\n```\n"
    assert len(parse_text(doc, GRAMMAR_DOC)) == len(examples)
