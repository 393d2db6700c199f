"""Secrets never leave the host (choiros_infra/redaction.py): the host program masks the
host's secret values before any output leaves it, and every reporter (pytest's terminal and
JUnit in a verify run, verify's summary, report and JSON, drift's text, report and JSON,
diagnose's file) masks assignments to the stack's secret names.

The host program runs for real here, on this machine's python3 through testinfra's local
backend, as verify and diagnose run it on a host through SSH.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.backend.local import LocalBackend

from choiros_infra import diagnose, diagnose_cmd, drift, drift_cmd, verify_cmd
from choiros_infra.diagnose import Probe
from choiros_infra.host_access import HostAccess
from choiros_infra.host_batch import HostSecrets, ReadAhead, install, uninstall
from choiros_infra.redaction import (
    MASK,
    MIN_VALUE_LENGTH,
    Redactor,
    host_redactor,
    parse_env,
    scrub,
)
from choiros_infra.verify_report import read_junit, render_json, render_markdown

pytestmark = pytest.mark.unit
pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "Pulumi.example.yaml"  # choiros:secrets names .../OPENAI_API_KEY
VALUE = "sk-proj-planted-4f1c9a7e2b"  # a made-up value the tests look for
NAME = "OPENAI_API_KEY"
ENV_TEXT = ("# Written by choiros-secrets from SSM Parameter Store. Do not edit.\n"
            f'{NAME}="{VALUE}"\nOTHER_TOKEN="with \\"quotes\\" and \\$dollar"\n')


def test_an_env_file_parses_as_written_and_as_read() -> None:
    assert parse_env(ENV_TEXT) == [
        (NAME, VALUE, VALUE),
        ("OTHER_TOKEN", 'with \\"quotes\\" and \\$dollar', 'with "quotes" and $dollar')]
    assert parse_env("export A='x y'\nB = bare value \n# C=no\n") == [
        ("A", "x y", "x y"), ("B", "bare value", "bare value")]


def test_values_are_masked_anywhere_and_assignments_whatever_their_value() -> None:
    redact = Redactor(names=frozenset({NAME}), values=(VALUE, "short"))
    text = (f"log: calling with {VALUE}!\n{NAME}=anything-else\n'{NAME}=\"quoted value\"'\n"
            f'{{"{NAME}": "json value"}}\n{NAME}: yaml\nshort is kept; {NAME}S=kept')
    masked = redact(text)
    assert VALUE not in masked and "anything-else" not in masked
    assert "quoted value" not in masked and "json value" not in masked and "yaml" not in masked
    assert masked.count(MASK) == 5
    assert "short is kept" in masked and f"{NAME}S=kept" in masked  # another name, a short value
    assert len("short") < MIN_VALUE_LENGTH
    assert Redactor()("as is") == "as is" and not Redactor()


def test_each_line_of_a_multi_line_value_is_masked() -> None:
    redact = Redactor(values=("first-line-of-it\nsecond-line-of-it",))
    assert redact("tail: second-line-of-it") == f"tail: {MASK}"


def test_the_host_knows_its_values_from_the_env_file_host_json_and_process_environments(
        tmp_path: Path) -> None:
    env = tmp_path / "backend.env"
    env.write_text(ENV_TEXT)
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    # The backend still holds a value the file no longer has (a variable removed by hand).
    (proc / "42" / "environ").write_bytes(b"PATH=/usr/bin\0REMOVED_KEY=still-in-the-backend\0")
    (proc / "self").mkdir()
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"env_file": str(env),
                                     "secrets": ["/choiros/example/REMOVED_KEY"]}))
    redact = host_redactor(host_config=str(host_json), proc=str(proc))
    assert redact.names == {NAME, "OTHER_TOKEN", "REMOVED_KEY"}
    out = redact(f"{VALUE} | with \"quotes\" and $dollar | still-in-the-backend | /usr/bin")
    assert out == f"{MASK} | {MASK} | {MASK} | /usr/bin"
    assert redact(ENV_TEXT).count(MASK) == 2  # the file itself, as written
    assert not host_redactor(env_files=[str(tmp_path / "missing")], proc=str(proc))


def test_scrub_masks_every_string_of_a_structure() -> None:
    item = drift.HostItem("r.md", "#s", "t", f"observed {NAME}=v")
    report = scrub({"k": [item, (f"{NAME}=x", 1)]}, Redactor(names=frozenset({NAME})))
    assert report["k"][0].message == f"observed {NAME}={MASK}"
    assert report["k"][1] == (f"{NAME}={MASK}", 1)


# --- the host program -----------------------------------------------------------------------


@pytest.fixture
def secret_env(tmp_path: Path) -> Path:
    env = tmp_path / "backend.env"
    env.write_text(ENV_TEXT)
    return env


def test_the_host_program_masks_read_ahead_and_asked_answers(secret_env: Path) -> None:
    host = testinfra.get_host("local://")
    state = ReadAhead(secrets=HostSecrets(env_files=(str(secret_env),), host_config=None))
    original = install(state, LocalBackend)
    try:
        planned = host.backend.quote("cat -- %s", str(secret_env))
        state.read(host, [planned, f"echo {VALUE} >&2; exit 3"])
        read_ahead = host.run("cat -- %s", str(secret_env))
        failed = host.run(f"echo {VALUE} >&2; exit 3")
        asked = host.run("echo %s", VALUE)  # not read ahead: its own round trip
    finally:
        uninstall(LocalBackend, original)
    assert VALUE not in read_ahead.stdout and f"{NAME}={MASK}" in read_ahead.stdout
    assert (failed.rc, failed.stderr) == (3, f"{MASK}\n")
    assert asked.stdout == f"{MASK}\n" and state.asked == [host.backend.quote("echo %s", VALUE)]


def test_diagnose_probes_come_back_masked(secret_env: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "backend-error.log"
    log.write_text(f"panic: bad key {VALUE}\n")
    real_run = subprocess.run
    monkeypatch.setattr(diagnose.subprocess, "run", lambda argv, **kw: real_run(
        shlex.split(argv[-1])[3:], **kw))
    run = diagnose.ssh_runner(HostAccess(url="ssh://admin@10.0.0.1"), secrets=HostSecrets(
        env_files=(str(secret_env),), host_config=None))
    [result] = run([Probe("log", ("tail", "-n", "5", str(log)))])
    assert result.output == f"panic: bad key {MASK}\n"


# --- the reporters, by name ------------------------------------------------------------------

LEAKY_TEST = f"""
    def test_backend_env(capsys):
        print("the file holds {NAME}=printed-on-stdout")
        observed = '{NAME}="in-the-assertion"'
        assert observed == "{NAME}=[names only]", f"observed {{observed}}"
"""
LEAKED = ("printed-on-stdout", "in-the-assertion")


@pytest.fixture
def leaky_run(pytester: pytest.Pytester) -> tuple[str, Path]:
    """A failing check whose message and captured output assign the stack's secret name, run
    with verify's plugin (which reads --stack-file, as tests/infra/conftest.py declares it)."""
    pytester.makeconftest("""
        def pytest_addoption(parser):
            parser.addoption("--stack-file")
    """)
    pytester.makepyfile(test_leak=textwrap.dedent(LEAKY_TEST))
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-p", "choiros_infra.verify_batch", f"--stack-file={STACK_FILE}", "-rA",
        f"--junitxml={junit}", "-o", "junit_logging=all")
    result.assert_outcomes(failed=1)
    return result.stdout.str() + result.stderr.str(), junit


def _assert_masked(text: str) -> None:
    for leaked in LEAKED:
        assert leaked not in text, leaked
    assert f"{NAME}={MASK}" in text


def test_verify_terminal_output_is_masked(leaky_run: tuple[str, Path]) -> None:
    terminal, _ = leaky_run
    _assert_masked(terminal)
    assert "Captured stdout call" in terminal  # the captured output was shown, masked


def test_verify_junit_is_masked(leaky_run: tuple[str, Path]) -> None:
    _, junit = leaky_run
    text = junit.read_text()
    for leaked in LEAKED:
        assert leaked not in text, leaked
    assert "system-out" in text and text.count(MASK) >= 2


def _leaky_junit(path: Path) -> Path:
    """A JUnit file as a run without the plugin would write it (the rows are masked again)."""
    path.write_text(f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="choiros-verify" tests="1" failures="1">
<testcase classname="" time="0.1"
 name="30-operations/04-security.md:324 command &quot;cat&quot;: matches /x/">
<failure message="observed {NAME}=&quot;in-the-assertion&quot;">{NAME}=printed-on-stdout</failure>
</testcase></testsuite></testsuites>""")
    return path


def test_verify_summary_report_and_json_are_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    def run_checked(run: Any, reachable: Any) -> int:
        reachable()
        _leaky_junit(run.junit)
        return 1

    monkeypatch.setattr(verify_cmd, "wait_for_host", lambda access, deadline: None)
    monkeypatch.setattr(verify_cmd, "run_checked", run_checked)
    report, as_json = tmp_path / "report.md", tmp_path / "verify.json"
    code = verify_cmd.execute(HostAccess(url="ssh://admin@10.0.0.1",
                                         ssh_config=tmp_path / "ssh_config"),
                              STACK_FILE, "kitchen", report=report, as_json=as_json)
    assert code == 1
    _assert_masked(capsys.readouterr().out)
    _assert_masked(report.read_text())
    checks = json.loads(as_json.read_text())["checks"]
    assert checks[0]["observed"] == f"observed {NAME}={MASK}"
    _assert_masked(as_json.read_text())


def test_verify_report_functions_show_what_the_rows_hold(tmp_path: Path) -> None:
    """The reporters only print rows; masked rows are what keeps them clean."""
    rows = scrub(read_junit(_leaky_junit(tmp_path / "j.xml")),
                 Redactor.for_parameters(["/choiros/example/OPENAI_API_KEY"]))
    _assert_masked(render_markdown(rows, host="h", target="aws", stack_file="s"))
    assert "in-the-assertion" not in render_json(rows, host="h", target="aws", stack_file="s")


def test_drift_text_report_and_json_are_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Everything drift prints or writes, and so what drift.yml's scripts copy into the job
    summary (scripts/ci/drift-summary.sh: the report) and the artifacts."""
    junit = _leaky_junit(tmp_path / "drift-junit.xml")
    monkeypatch.setattr(drift_cmd, "check_host", lambda *a, **kw: drift.split_results(
        read_junit(junit)))

    def preview(on_event: Any) -> Any:
        raise RuntimeError(f"provider said {NAME}=printed-on-stdout")

    report = tmp_path / "drift-report.md"
    kwargs: dict[str, Any] = {"stack_file": STACK_FILE, "stack": None, "target": "kitchen",
                              "host": "ssh://admin@10.0.0.1", "runner": preview}
    assert drift_cmd.run_drift(**kwargs, report=report) == 1
    _assert_masked(capsys.readouterr().out)
    _assert_masked(report.read_text())
    assert drift_cmd.run_drift(**kwargs, as_json=True) == 1
    out = capsys.readouterr().out
    for leaked in LEAKED:
        assert leaked not in out
    assert json.loads(out)["docs"]["items"][0]["message"] == f"observed {NAME}={MASK}"


def test_diagnose_file_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose_cmd, "check_reachable", lambda access: None)
    monkeypatch.setattr(diagnose_cmd, "ssh_runner", lambda access, secrets: lambda probes: [
        diagnose.Result(p, 0, f"{NAME}=printed-on-stdout\n") for p in probes])
    out = tmp_path / "diagnose.md"
    code = diagnose_cmd.execute(HostAccess(url="ssh://admin@10.0.0.1",
                                           ssh_config=tmp_path / "c"), out,
                                secrets=["/choiros/example/OPENAI_API_KEY"])
    assert code == 0
    text = out.read_text()
    assert "printed-on-stdout" not in text and f"{NAME}={MASK}" in text
