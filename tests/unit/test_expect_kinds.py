"""Expect subject kinds as registered units, and the typed kinds for the firewall, sshd's
effective settings, a fail2ban jail and a timer: what they accept, what they refuse, and what
their probes make of the tools' real output (a host stand-in answering the exact commands the
probes run; the same probes run against the kitchen in every verify).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from choiros_infra.expect import (
    ProbeContext,
    ProbeError,
    RunbookSyntaxError,
    Statement,
    parse_text,
    probe,
)
from choiros_infra.expect.kinds import KINDS, kind_of
from choiros_infra.expect.kinds.fail2ban import JailCheck, JailRunning, JailSetting
from choiros_infra.expect.kinds.sshd import Setting, SshdCheck
from choiros_infra.expect.kinds.timer import Every, TimerCheck, Triggers, parse_timer_show
from choiros_infra.expect.kinds.ufw import Active, DefaultPolicy, Rule, UfwCheck
from choiros_infra.expect.probes import failure_report

pytestmark = pytest.mark.unit

GRAMMAR = Path(__file__).resolve().parents[2] / "docs/runbooks/50-testing/expect-grammar.md"

UFW_VERBOSE = """\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere
80/tcp                     ALLOW IN    Anywhere
8080/tcp                   ALLOW IN    203.0.113.0/24
22/tcp (v6)                ALLOW IN    Anywhere (v6)
443/tcp (v6)               ALLOW IN    Anywhere (v6)
"""

SSHD_T = """\
port 22
permitrootlogin no
passwordauthentication no
maxauthtries 6
listenaddress [::]:22
listenaddress 0.0.0.0:22
"""

JAILS = "Status\n|- Number of jail:\t1\n`- Jail list:\tsshd\n"

TIMER_SHOW = """\
Unit=choiros-healthcheck.service
TimersMonotonic={ OnBootUSec=1min ; next_elapse=0 }
TimersMonotonic={ OnUnitActiveUSec=1min ; next_elapse=1h 2min 3.456s }
LoadState=loaded
"""


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str = ""
    stderr: str = ""


class CannedHost:
    """Answers the exact command lines the probes send (as testinfra would quote them)."""

    def __init__(self, answers: dict[str, Result]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def run(self, command: str, *args: str) -> Result:
        line = command % tuple(args) if args else command
        self.asked.append(line)
        return self.answers.get(line, Result(127, "", f"unexpected command: {line}"))


def ctx(answers: dict[str, Result]) -> ProbeContext:
    return ProbeContext(host=CannedHost(answers), outside_address="192.0.2.1", sudo=True)


def one(line: str) -> Statement:
    [statement] = parse_text(f"```expect\n{line}\n```\n", "rb.md")
    return statement


def failures(line: str, answers: dict[str, Result]) -> list[str]:
    statement = one(line)
    report = failure_report(statement, probe(statement.check, ctx(answers)), "rb.md:2")
    return report.splitlines() if report else []


def refusal(line: str) -> str:
    with pytest.raises(RunbookSyntaxError) as caught:
        parse_text(f"```expect\n{line}\n```\n", "rb.md")
    return str(caught.value)


# --- the registry ------------------------------------------------------------------------------


def test_every_kind_is_registered_once_by_name_and_by_check_type() -> None:
    assert list(KINDS) == ["service", "port", "file", "http", "command", "user", "package",
                           "ufw", "sshd", "fail2ban", "timer"]
    assert len({kind.check_type for kind in KINDS.values()}) == len(KINDS)
    for line, kind in (("ufw: active", "ufw"), ("sshd: maxauthtries 3", "sshd"),
                       ("fail2ban jail sshd: running", "fail2ban"),
                       ("timer a.timer: every 1min", "timer"), ("service ssh: running", "service")):
        assert kind_of(one(line).check) is KINDS[kind], line


def test_every_kind_is_documented_in_the_grammar_with_its_forms() -> None:
    text = GRAMMAR.read_text()
    headings = re.findall(r"^### (.+)$", text, re.M)
    for kind in KINDS.values():
        assert any(h.split()[0] == kind.name for h in headings), \
            f"{kind.name}: no section in {GRAMMAR.name}"
        form = kind.subject_form.split(" | ")[0]
        assert form in text, f"{kind.name}: {GRAMMAR.name} does not show {form!r}"


def test_an_unknown_subject_lists_every_registered_kind() -> None:
    message = refusal("firewal: active")
    assert "unknown subject 'firewal'" in message
    assert "one of: " + ", ".join(KINDS) in message


# --- ufw ---------------------------------------------------------------------------------------


def test_ufw_statement_reads_into_typed_assertions() -> None:
    check = one("ufw: active, default incoming deny, allow 22/tcp, "
                "limit 22/tcp from 203.0.113.0/24").check
    assert check == UfwCheck((Active(True), DefaultPolicy("incoming", "deny"),
                              Rule("allow", "22/tcp"),
                              Rule("limit", "22/tcp", "203.0.113.0/24")))
    assert [str(a) for a in check.expect] == [
        "active", "default incoming deny", "allow 22/tcp", "limit 22/tcp from 203.0.113.0/24"]


@pytest.mark.parametrize(("line", "problem"), [
    ("ufw main: active", "nothing goes between ufw and ':'"),
    ("ufw: allow 22", "malformed rule 'allow 22'"),
    ("ufw: default inbound deny", "malformed default policy"),
    ("ufw: active, inactive", "'inactive' contradicts or repeats 'active'"),
    ("ufw: default incoming deny, default incoming allow", "contradicts or repeats"),
    ("ufw: actve", "did you mean 'active'?"),
])
def test_ufw_refuses_what_it_cannot_check(line: str, problem: str) -> None:
    assert problem in refusal(line)


def test_ufw_probe_reads_status_defaults_and_ipv4_rules() -> None:
    answers = {"LC_ALL=C ufw status verbose": Result(0, UFW_VERBOSE)}
    assert failures("ufw: active, default incoming deny, default outgoing allow, "
                    "allow 22/tcp, allow 8080/tcp from 203.0.113.0/24", answers) == []
    assert failures("ufw: inactive, default routed allow, allow 443/tcp, allow 8080/tcp",
                    answers) == [
        "rb.md:2: ufw: expected inactive, observed active",
        "rb.md:2: ufw: expected default routed allow, observed default routed disabled",
        "rb.md:2: ufw: expected allow 443/tcp, observed no rule for 443/tcp",
        "rb.md:2: ufw: expected allow 8080/tcp, observed 8080/tcp ALLOW IN 203.0.113.0/24",
    ]


def test_ufw_probe_error_when_ufw_cannot_answer() -> None:
    statement = one("ufw: active")
    with pytest.raises(ProbeError, match="ufw status verbose failed on the host"):
        probe(statement.check, ctx({"LC_ALL=C ufw status verbose": Result(1, "", "ERROR")}))


# --- sshd --------------------------------------------------------------------------------------


def test_sshd_settings_are_effective_values_by_keyword() -> None:
    check = one("sshd: PermitRootLogin no, listenaddress 0.0.0.0:22").check
    assert check == SshdCheck((Setting("permitrootlogin", "no"),
                               Setting("listenaddress", "0.0.0.0:22")))
    answers = {"LC_ALL=C sshd -T": Result(0, SSHD_T)}
    assert failures("sshd: permitrootlogin no, passwordauthentication no, "
                    "listenaddress 0.0.0.0:22", answers) == []
    assert failures("sshd: maxauthtries 3, x11forwarding no", answers) == [
        "rb.md:2: sshd: expected maxauthtries 3, observed maxauthtries 6",
        "rb.md:2: sshd: expected x11forwarding no, observed not in sshd -T",
    ]


def test_sshd_refuses_a_keyword_without_value_and_a_repeat() -> None:
    assert "malformed sshd setting 'permitrootlogin'" in refusal("sshd: permitrootlogin")
    assert "contradicts or repeats" in refusal("sshd: maxauthtries 3, MaxAuthTries 4")


# --- fail2ban jail -----------------------------------------------------------------------------


def test_fail2ban_jail_running_and_settings() -> None:
    check = one("fail2ban jail sshd: running, maxretry 3, bantime 3600").check
    assert check == JailCheck("sshd", (JailRunning(True), JailSetting("maxretry", "3"),
                                       JailSetting("bantime", "3600")))
    answers = {"LC_ALL=C fail2ban-client status": Result(0, JAILS),
               "LC_ALL=C fail2ban-client get sshd maxretry": Result(0, "3\n"),
               "LC_ALL=C fail2ban-client get sshd bantime": Result(0, "600\n"),
               "LC_ALL=C fail2ban-client get recidive maxretry": Result(
                   255, "", "Sorry but the jail 'recidive' does not exist\n")}
    assert failures("fail2ban jail sshd: running, maxretry 3", answers) == []
    assert failures("fail2ban jail sshd: bantime 3600", answers) == [
        "rb.md:2: fail2ban jail sshd: expected bantime 3600, observed bantime 600"]
    assert failures("fail2ban jail recidive: running, maxretry 3", answers) == [
        "rb.md:2: fail2ban jail recidive: expected running, observed jails sshd",
        "rb.md:2: fail2ban jail recidive: expected maxretry 3, observed fail2ban-client exit "
        "255: \"Sorry but the jail 'recidive' does not exist\"",
    ]


def test_fail2ban_refuses_a_subject_without_jail() -> None:
    assert "expected a jail name after 'fail2ban jail'" in refusal("fail2ban sshd: running")
    assert "contradicts or repeats" in refusal("fail2ban jail sshd: running, not running")


# --- timer -------------------------------------------------------------------------------------


def test_timer_reads_every_line_of_systemctl_show() -> None:
    facts = parse_timer_show(TIMER_SHOW)
    assert facts.monotonic == {"OnBootUSec": ["1min"], "OnUnitActiveUSec": ["1min"]}
    assert (facts.unit, facts.load) == ("choiros-healthcheck.service", "loaded")
    one_line = parse_timer_show("TimersMonotonic={ OnUnitActiveUSec=1h 30min ; next_elapse=0 }")
    assert one_line.monotonic == {"OnUnitActiveUSec": ["1h 30min"]}


def test_timer_schedule_and_unit() -> None:
    check = one('timer choiros-healthcheck.timer: every 1min, after boot "1min", '
                "triggers choiros-healthcheck.service").check
    assert check == TimerCheck("choiros-healthcheck.timer", (
        Every("1min"), Every("1min", "OnBootUSec"), Triggers("choiros-healthcheck.service")))
    show = ("LC_ALL=C systemctl show --property=LoadState,Unit,TimersMonotonic -- "
            "choiros-healthcheck.timer")
    answers = {show: Result(0, TIMER_SHOW)}
    assert failures("timer choiros-healthcheck.timer: every 1min, after boot 1min, "
                    "triggers choiros-healthcheck.service", answers) == []
    assert failures("timer choiros-healthcheck.timer: every 5min, triggers x.service",
                    answers) == [
        "rb.md:2: timer choiros-healthcheck.timer: expected every 5min, observed "
        "OnUnitActiveUSec=1min",
        "rb.md:2: timer choiros-healthcheck.timer: expected triggers x.service, observed "
        "triggers choiros-healthcheck.service",
    ]
    missing = {show.replace("choiros-healthcheck.timer", "nope.timer"): Result(
        0, "LoadState=not-found\nUnit=\n")}
    assert failures("timer nope.timer: every 1min", missing) == [
        "rb.md:2: timer nope.timer: expected every 1min, observed no such unit"]


def test_timer_refuses_a_name_that_is_not_a_timer_and_a_repeat() -> None:
    assert "'choiros-healthcheck' is not a valid timer name" in refusal(
        "timer choiros-healthcheck: every 1min")
    assert "contradicts or repeats" in refusal("timer a.timer: every 1min, every 2min")
