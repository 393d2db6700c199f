"""Rehearsal markings read from Markdown, the coverage, and a rehearsal that runs real steps:
a runbook with one step broken (a wrong flag) fails at that step's line with the command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choiros_infra.cli import app
from choiros_infra.host_access import HostAccess
from choiros_infra.redaction import MASK, Redactor
from choiros_infra.rehearse import (
    Step,
    coverage,
    locate_failure,
    read_runbook,
    read_runbooks,
    script,
)
from choiros_infra.rehearse_run import Rehearsal, RehearsalHost, workstation_env
from choiros_infra.verify import PROJECT_ROOT, RUNBOOKS

pytestmark = pytest.mark.unit

RUNBOOK = """# A runbook

Last verified: never (updated by CI)

## Steps

### Look

```sh rehearse host
systemctl --failed --no-pager
```

```sh rehearse workstation
ssh admin@<public_ip> sudo choiros-backup-freshness
```

### Replace

Not rehearsed: needs real AWS.

```sh
pulumi up
```

### Prose only

Nothing to run here.

````markdown
```sh
not a block of this runbook: an example inside a longer fence
```
````
"""


def write(tmp_path: Path, text: str, name: str = "30-operations/x.md") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_procedures_steps_and_reasons(tmp_path: Path) -> None:
    runbook = read_runbook(write(tmp_path, RUNBOOK), "30-operations/x.md")
    assert not runbook.errors
    look, replace = runbook.procedures
    assert (look.line, look.title, look.rehearsed) == (7, "Look", True)
    assert [(s.line, s.where) for s in look.steps] == [(9, "host"), (13, "workstation")]
    assert look.steps[1].lines == ((14, "ssh admin@<public_ip> sudo choiros-backup-freshness"),)
    assert (replace.line, replace.rehearsed, replace.why) == (17, False, "needs real AWS.")
    assert runbook.steps == look.steps
    cover = coverage([runbook])
    assert cover.as_json() == {"procedures": 2, "rehearsed": 1, "not_rehearsed": [
        {"file": "30-operations/x.md", "line": 17, "why": "needs real AWS."}]}
    assert str(cover) == "1 of 2 procedures rehearsed (50 %)"


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("## S\n\n```sh\nls\n```\n", 3, "neither rehearsed nor explained"),
    ("## S\n\n```sh rehearse hots\nls\n```\n", 3, "a step says where it runs"),
    ("## S\n\n```sh rehearse host\nls <path>\n```\n", 4, "unknown placeholder <path>"),
    ("## S\n\nNot rehearsed: no AWS.\n\n```sh rehearse host\nls\n```\n", 5,
     "rehearsed whole or not at all"),
    ("## S\n\nNot rehearsed: nothing to say.\n", 3, "without shell blocks"),
    ("## S\n\nNot rehearsed:\n\n```sh\nls\n```\n", 3, "says no reason"),
])
def test_a_wrong_marking_is_an_error_at_its_line(tmp_path: Path, text: str, line: int,
                                                  problem: str) -> None:
    runbook = read_runbook(write(tmp_path, text), "x.md")
    assert [(e.line, problem in e.problem) for e in runbook.errors] == [(line, True)], (
        runbook.errors)


def test_an_unmarked_block_does_not_count_as_rehearsed(tmp_path: Path) -> None:
    runbook = read_runbook(write(tmp_path, "## S\n\n```sh rehearse host\nls\n```\n\n```sh\n"
                                 "ls\n```\n"), "x.md")
    assert runbook.errors and not runbook.procedures[0].rehearsed


def test_reference_pages_hold_no_procedures(tmp_path: Path) -> None:
    text = "## Purpose\n\n```sh\nls\n```\n"
    assert read_runbook(write(tmp_path, text), "90-reference/x.md").procedures == ()


def test_a_failure_points_at_the_line_and_the_whole_command() -> None:
    step = Step("x.md", 10, "host", ((11, "echo one"), (12, "ls \\"), (13, "  --bogus"),
                                     (14, "echo never")))
    done = subprocess.run(["bash", "-c", script(step.lines)], capture_output=True, text=True,
                          check=False)
    failure = locate_failure(step, done.returncode, done.stdout + done.stderr)
    assert (failure.line, failure.command, failure.status) == (13, "ls --bogus", 2)
    assert "unrecognized option" in failure.tail and "rehearse-failed-at" not in failure.tail
    assert "never" not in failure.tail


def test_a_failing_pipeline_fails_a_step_and_a_stopped_writer_does_not() -> None:
    step = Step("x.md", 1, "host", ((2, "seq 1 100000 | head -n 1"),
                                    (3, "ls --bogus 2>&1 | grep -c option"), (4, "echo never")))
    done = subprocess.run(["bash", "-c", script(step.lines)], capture_output=True, text=True,
                          check=False)
    failure = locate_failure(step, done.returncode, done.stdout + done.stderr)
    assert (failure.line, failure.command, failure.status) == (3, "ls --bogus 2>&1 | grep -c "
                                                               "option", 2)
    assert "never" not in done.stdout


def local_host(tmp_path: Path, redact: Redactor | None = None) -> RehearsalHost:
    """A rehearsal host whose "host" is this machine (bash here instead of over SSH)."""
    def transport(argv: list[str], timeout: float) -> tuple[int, str]:
        argv = argv[1:] if argv[0] == "sudo" else argv
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
        return done.returncode, done.stdout + done.stderr

    return RehearsalHost("local", HostAccess("ssh://admin@127.0.0.1"), PROJECT_ROOT /
                         "Pulumi.example.yaml", {"name": "local", "stack": "example"}, {},
                         transport=transport, spoiled_mark=str(tmp_path / "spoiled"),
                         redact=redact or Redactor())


def test_a_broken_step_fails_the_rehearsal_at_its_line(tmp_path: Path) -> None:
    """The onboarding runbook's first change, with `--out` misspelt: the real command runs,
    fails, and the rehearsal names its line and the command; the host is marked spoiled and
    a second rehearsal refuses it."""
    original = RUNBOOKS / "00-onboarding" / "02-access-and-first-change.md"
    text = original.read_text()
    assert "--out /tmp/render" in text
    broken_text = text.replace("--out /tmp/render", f"--output {tmp_path}/render")
    path = write(tmp_path, broken_text, "00-onboarding/02-access-and-first-change.md")
    runbook = read_runbook(path, "00-onboarding/02-access-and-first-change.md")
    expected_line = next(n for n, line in enumerate(broken_text.splitlines(), 1)
                         if "--output" in line)
    checked: list[Path] = []
    host = local_host(tmp_path)
    rehearsal = Rehearsal(host, say=lambda _text: None,
                          check=lambda _h, p: checked.append(p) or 0)
    assert rehearsal.run([runbook]) is False
    (result,) = rehearsal.results
    assert result.failure is not None
    assert result.failure.line == expected_line
    assert result.failure.file == "00-onboarding/02-access-and-first-change.md"
    assert "choiros-infra render" in result.failure.command
    assert "--output" in result.failure.command
    assert "No such option" in result.failure.tail
    assert str(result.failure).startswith(
        f"00-onboarding/02-access-and-first-change.md:{expected_line}: step failed (exit 2): "
        ".venv/bin/choiros-infra render")
    assert not checked, "the expect blocks are not checked after a failed step"
    assert "02-access-and-first-change.md" in (tmp_path / "spoiled").read_text()
    with pytest.raises(Exception, match="spoiled"):
        Rehearsal(host, say=lambda _text: None, check=lambda _h, _p: 0).run([runbook])


def test_list_json_prints_the_coverage() -> None:
    result = CliRunner().invoke(app, ["rehearse", "--list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    cover = coverage(read_runbooks(RUNBOOKS))
    assert data == cover.as_json()
    assert all(set(p) == {"file", "line", "why"} and p["why"] for p in data["not_rehearsed"])


def test_a_missing_runbook_is_refused() -> None:
    result = CliRunner().invoke(app, ["rehearse", "docs/runbooks/no-such.md", "--list"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "does not exist" in result.output


def test_a_failing_steps_output_is_redacted(tmp_path: Path) -> None:
    path = write(tmp_path, "## S\n\n```sh rehearse host\necho token kitchen-test-value-for-KEY\n"
                 "echo OPENAI_API_KEY=sk-live-123456\nfalse\n```\n")
    runbook = read_runbook(path, "x.md")
    redact = Redactor(names=frozenset({"OPENAI_API_KEY"}),
                      values=("kitchen-test-value-for-KEY",))
    rehearsal = Rehearsal(local_host(tmp_path, redact), say=lambda _text: None,
                          check=lambda _h, _p: 0)
    assert rehearsal.run([runbook]) is False
    failure = rehearsal.results[0].failure
    assert failure is not None and failure.line == 6
    assert "kitchen-test-value-for-KEY" not in failure.tail and "sk-live" not in failure.tail
    assert f"token {MASK}" in failure.tail and f"OPENAI_API_KEY={MASK}" in failure.tail


def test_a_captured_placeholder_takes_the_value_an_earlier_step_printed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """<copy> is what `choiros-backup --copy` printed last: a later step gets that URL."""
    # The runbook is outside docs/runbooks, whose expect parser would refuse it; it has none.
    monkeypatch.setattr("choiros_infra.rehearse_run.has_expectations", lambda _path: False)
    out = tmp_path / "seen"
    path = write(tmp_path, "## Copy\n\n```sh rehearse host\necho 'backup: uploaded s3://b/old.db'"
                 "\necho 'backup: uploaded s3://b/hosts/x/manual/events-20261206T190000Z.db'\n"
                 f"```\n\n## Back\n\n```sh rehearse host\necho <copy> > {out}\n```\n")
    rehearsal = Rehearsal(local_host(tmp_path), say=lambda _text: None, check=lambda _h, _p: 0)
    assert rehearsal.run([read_runbook(path, "x.md")]) is True
    assert out.read_text() == "s3://b/hosts/x/manual/events-20261206T190000Z.db\n"


def test_a_captured_placeholder_no_step_printed_fails_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "## Back\n\n```sh rehearse host\ntrue\n"
                 "sudo choiros-restore --from-file <copy>\n```\n")
    rehearsal = Rehearsal(local_host(tmp_path), say=lambda _text: None, check=lambda _h, _p: 0)
    assert rehearsal.run([read_runbook(path, "x.md")]) is False
    failure = rehearsal.results[0].failure
    assert failure is not None
    assert (failure.line, failure.command) == (5, "sudo choiros-restore --from-file <copy>")
    assert "<copy> has no value" in failure.tail and "backup: uploaded" in failure.tail


def test_workstation_steps_find_the_aws_cli_make_setup_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``aws`` in a workstation step is the environment's own (.venv/bin/aws, from
    requirements.txt), ahead of whatever the machine has on PATH."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    host = RehearsalHost("local", HostAccess("ssh://admin@127.0.0.1"),
                         PROJECT_ROOT / "Pulumi.example.yaml", {"region": "eu-west-1"}, {})
    with workstation_env(host) as env:
        found = shutil.which("aws", path=env["PATH"])
    assert found == str(Path(sys.executable).parent / "aws"), env["PATH"]
