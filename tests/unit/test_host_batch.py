"""Reading host facts ahead (choiros_infra/host_batch.py, verify_batch.py): the host program
returns every command's exit code and output in one round trip, testinfra's ``host.run`` is
answered from them, what was not read ahead still goes to the host and is counted, and every
runbook statement's probe asks only commands its kind declared.

The host program runs for real here, through testinfra's local backend and this machine's
python3, as verify runs it on a host through SSH.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.backend.local import LocalBackend

from choiros_infra.expect import iter_runbook_statements, probe, probes
from choiros_infra.expect.kinds import kind_of
from choiros_infra.expect.probes import ProbeContext
from choiros_infra.host_batch import (
    HOST_WORKERS,
    ReadAhead,
    ReadAheadError,
    backend_key,
    decode_answers,
    encode_commands,
)

pytestmark = pytest.mark.unit
pytest_plugins = ["pytester"]

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"


@pytest.fixture
def host() -> Any:
    return testinfra.get_host("local://")


def test_the_host_program_answers_every_command_in_order(host: Any, tmp_path: Path,
                                                        read_ahead: ReadAhead) -> None:
    fact = tmp_path / "fact"
    fact.write_text("première\n")
    commands = [host.backend.quote("cat -- %s", str(fact)), "echo out; echo err >&2; exit 3",
                "printf 'a\\nb'", "cat -- /nonexistent/x"]
    # Before the batch these go to the host (and testinfra asks the host's encoding once).
    direct = [(r.rc, r.stdout, r.stderr) for r in map(host.run, commands)]
    assert [c for c in read_ahead.asked if "locale" not in c] == commands
    trips = read_ahead.round_trips

    read_ahead.read(host, [*commands, commands[0]])  # a repeated command runs once
    assert read_ahead.planned == 4 and read_ahead.round_trips == trips + 1
    fact.write_text("changed after the batch\n")
    for command, before in zip(commands, direct, strict=True):
        answered = host.run(command)
        assert (answered.rc, answered.stdout, answered.stderr) == before, command
    assert host.run(commands[0]).stdout == "première\n", "answered from the batch"
    assert host.check_output("cat -- %s", str(fact)) == "première"
    assert read_ahead.round_trips == trips + 1, "answers cost no round trip"

    assert host.run("echo %s", "not planned").stdout == "not planned\n"
    assert read_ahead.round_trips == trips + 2
    assert read_ahead.asked[-1] == "echo 'not planned'"


def test_answers_belong_to_the_host_and_user_that_read_them(read_ahead: ReadAhead) -> None:
    local = testinfra.get_host("local://")
    read_ahead.read(local, ["echo batch"])
    other = testinfra.get_host("local://", sudo=True, sudo_user="nobody")
    assert read_ahead.answer(other.backend, "echo batch") is None
    assert read_ahead.answer(local.backend, "echo batch") is not None


def test_each_answer_comes_back_while_commands_are_still_given(host: Any,
                                                               tmp_path: Path) -> None:
    """The host starts a command as soon as it is given and answers it as soon as it is
    done: a check waits for its own answer only, not for the slowest command or the end of
    collection."""
    release = tmp_path / "release"
    slow = f"while [ ! -e {release} ]; do sleep 0.02; done; echo slow"
    state = ReadAhead()
    state.open(host)
    state.plan([slow, "echo fast"])
    fast = state.answer(host.backend, "echo fast")
    assert fast is not None and fast.stdout == "fast\n"
    assert state.answers.keys() == {(backend_key(host.backend), "echo fast")}, (
        "the slow command is still running")
    state.plan(["echo later"])  # given after the first answers: still the same round trip
    assert state.answer(host.backend, "echo later") is not None
    release.touch()
    state.close()
    state.wait()
    assert state.error is None and state.round_trips == 1 and state.planned == 3
    answered = state.answer(host.backend, slow)
    assert answered is not None and answered.stdout == "slow\n"


def test_commands_given_first_start_before_the_others_waiting(host: Any,
                                                              tmp_path: Path) -> None:
    """A command that may take seconds (a runbook's own command) is started before every
    command still waiting, though given after them: the slowest do not start last."""
    log = tmp_path / "started"
    busy = [f"while [ ! -e {tmp_path}/release{i} ]; do sleep 0.02; done"
            for i in range(HOST_WORKERS)]
    normal, first = f"echo normal >> {log}", f"echo first >> {log}"
    state = ReadAhead()
    state.open(host)
    state.plan(busy)  # every worker busy: what comes next waits
    state.plan([normal])
    state.plan([first], first=True)
    (tmp_path / "release0").touch()  # one worker free: it takes one command at a time
    assert state.answer(host.backend, normal) is not None
    assert log.read_text() == "first\nnormal\n", "given last, started first"
    for i in range(1, HOST_WORKERS):
        (tmp_path / f"release{i}").touch()
    state.close()
    state.wait()
    assert state.error is None


def test_a_run_that_ends_first_stops_the_host_program(host: Any, tmp_path: Path) -> None:
    """pytest ends the read-ahead with the run: no error when every command was answered
    (the program may still be exiting), an error naming what was left otherwise."""
    done = ReadAhead()
    done.open(host)
    done.plan(["echo answered"])
    assert done.answer(host.backend, "echo answered") is not None
    done.stop()
    assert done.error is None
    cut = ReadAhead()
    cut.open(host)
    cut.plan([f"while [ ! -e {tmp_path}/release ]; do sleep 0.02; done"])
    cut.stop()
    (tmp_path / "release").touch()  # the command itself ends on its own (read-only, bounded)
    assert cut.error == "the host left 1 of 1 commands unanswered"


def test_a_failed_batch_is_an_error_not_answers(host: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a host without python3
    state = ReadAhead()
    with pytest.raises(ReadAheadError, match=r"exit 127: .*python3"):
        state.read(host, ["true"])
    assert state.answers == {}
    assert state.answer(host.backend, "true") is None, "the check asks the host itself"
    state.direct = lambda backend, *args: backend.run("exit 7")
    with pytest.raises(ReadAheadError, match="exit 7"):
        state.run_program(host.backend, ["true"])
    with pytest.raises(ReadAheadError, match="unreadable answer"):
        decode_answers("not base64 at all", 1)
    with pytest.raises(ReadAheadError, match="unreadable answer"):
        decode_answers(encode_commands(["true"]), 1)  # a command list is no answer
    with pytest.raises(ReadAheadError, match="answered 0 of 2"):
        decode_answers("", 2)


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str = ""
    stderr: str = ""


class RecordingHost:
    """Records every command a probe runs, answering like a plausible host."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def run(self, command: str, *args: str) -> Result:
        line = LocalBackend.quote(command, *args)
        self.asked.append(line)
        if "stat " in line:
            return Result(0, "symbolic link|777|root|root")
        return Result(0, "")


def test_every_runbook_probe_asks_only_what_its_kind_declared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-ahead plans from ``Kind.commands``: a probe asking anything else would cost a
    round trip per check (and the plan would be wrong about what a check reads)."""
    monkeypatch.setattr(probes, "connect_from_outside", lambda *a: (False, "closed"))
    checked = 0
    for statement in iter_runbook_statements(RUNBOOKS):
        host = RecordingHost()
        ctx = ProbeContext(host=host, outside_address="127.0.0.1", sudo=True, scheme="http",
                           caddy_port=9, http_timeout=0.5)
        declared = {LocalBackend.quote(*c) for c in kind_of(statement.check).commands(
            statement.check, ctx)}
        probe(statement.check, ctx)
        undeclared = set(host.asked) - declared
        assert not undeclared, f"{statement.source}: {statement.text}: asked {undeclared}"
        checked += 1
    assert checked > 200


RUNBOOK = """\
# Facts

```expect
file {path}: exists, contains "alpha"
command "cat {path}": contains "alpha"
command "echo {path} | wc -c": exit 0
```
"""


def _run_with_read_ahead(pytester: pytest.Pytester, read_ahead: str,
                         *more: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    stats = pytester.path / f"stats-{read_ahead}.json"
    result = pytester.runpytest_subprocess(
        "docs/runbooks", "--hosts=local://", "-p", "choiros_infra.verify_batch",
        f"--read-ahead={read_ahead}", f"--read-ahead-stats={stats}", "-q", *more)
    return result, json.loads(stats.read_text())


def test_verify_plugin_reads_the_runbook_facts_in_one_round_trip(
        pytester: pytest.Pytester) -> None:
    """The plugin as verify loads it, on runbook items against this machine: the same results
    with and without read-ahead, the read-ahead in one round trip for every statement."""
    pytester.makeini("[pytest]\n")
    root = pytester.path / "docs" / "runbooks"
    root.mkdir(parents=True)
    (root / "conftest.py").write_text((RUNBOOKS / "conftest.py").read_text())
    fact = pytester.path / "fact.txt"
    fact.write_text("alpha\n")
    (root / "facts.md").write_text(RUNBOOK.format(path=fact))

    ahead, ahead_stats = _run_with_read_ahead(pytester, "on")
    ahead.assert_outcomes(passed=3)
    ahead.stdout.fnmatch_lines(["host facts: * commands read in one round trip (*"])
    assert ahead_stats["round_trips"] == 1 and ahead_stats["asked_one_by_one"] == []

    each, each_stats = _run_with_read_ahead(pytester, "off")
    each.assert_outcomes(passed=3)
    assert each_stats["planned"] == 0 and each_stats["round_trips"] >= 4

    # -k: only the checks that stay are read ahead, still in one round trip.
    narrowed, narrowed_stats = _run_with_read_ahead(pytester, "on", "-k", "wc")
    narrowed.assert_outcomes(passed=1, deselected=2)
    assert narrowed_stats["round_trips"] == 1 and narrowed_stats["asked_one_by_one"] == []
    # Not the file statement's five commands (stat, readlinks, stat -L, cat), nor the cat.
    assert narrowed_stats["planned"] == ahead_stats["planned"] - 6

    fact.write_text("beta\n")
    failing, _ = _run_with_read_ahead(pytester, "on")
    failing.assert_outcomes(passed=1, failed=2)
