"""``choiros-infra drift``: the preview summary from recorded Automation API outputs, the
host/docs split of a recorded verify run, the exit codes, the JSON schema and the report.

The recordings in fixtures/drift/ are engine events as the Pulumi CLI writes them to its event
log (``preludeEvent``, ``resourcePreEvent`` with ``metadata.op/urn/type/diffs/detailedDiff``,
``diagnosticEvent``, ``summaryEvent.resourceChanges``), the ``change_summary`` a returning
preview gives, and the ``CommandError`` a failing one raises; they are replayed through
``EngineEvent.from_json`` and ``CommandError`` exactly as the Automation API delivers them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from choiros_infra import drift, drift_cmd
from choiros_infra.cli import app
from choiros_infra.drift import (
    CloudDrift,
    DriftReport,
    PartDrift,
    RecordedPreview,
    exit_code,
    not_checked_cloud,
    not_checked_part,
    summarise_preview,
)
from choiros_infra.verify_report import read_junit
from infra.config import ConfigError, stack_name_of

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "drift"
REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "Pulumi.example.yaml"
SG = ("urn:pulumi:production::choiros::choiros:infra:Network$"
      "aws:ec2/securityGroup:SecurityGroup::choiros-production-net-sg")
INSTANCE = ("urn:pulumi:production::choiros::choiros:infra:ChoirHost$"
            "aws:ec2/instance:Instance::choiros-production-host-instance")


def replay(name: str) -> CloudDrift:
    return summarise_preview(RecordedPreview.load(FIXTURES / name))


# --- the preview summary -----------------------------------------------------------------------


def test_a_clean_preview_is_no_drift() -> None:
    cloud = replay("no_drift.json")
    assert (cloud.checked, cloud.outcome, cloud.resources) == (True, "no-drift", ())
    assert cloud.change_summary == {"same": 31}


def test_changes_under_expect_no_changes_are_drift_not_failure() -> None:
    """The CLI raises CommandError for this, as it does for a failed preview: the steps seen
    before the error are what make it drift."""
    cloud = replay("drift_expect_no_changes.json")
    assert cloud.outcome == "drift"
    assert "expect-no-changes" in cloud.reason
    assert [(r.op, r.urn, r.properties) for r in cloud.resources] == [
        ("update", SG, ("ingress",)),
        ("update", INSTANCE, ("tags", "tagsAll")),
    ]
    assert cloud.change_summary == {"same": 29, "update": 2}


def test_changes_in_a_preview_that_returned_are_drift_too() -> None:
    """No exit code decides: a CLI that returns normally with a replacement is still drift."""
    cloud = replay("drift_replace_returned.json")
    assert cloud.outcome == "drift"
    assert [(r.op, r.properties) for r in cloud.resources] == [
        ("replace", ("userData",)), ("create-replacement", ("userData",)),
        ("delete-replaced", ())]
    assert {r.urn for r in cloud.resources} == {INSTANCE}


def test_a_refresh_that_fails_is_failed_with_the_engines_error() -> None:
    cloud = replay("failed_refresh_denied.json")
    assert (cloud.checked, cloud.outcome, cloud.resources) == (True, "failed", ())
    assert "UnauthorizedOperation" in cloud.reason
    assert cloud.reason.startswith("pulumi preview failed: reading EC2 Instance")


def test_a_command_error_without_events_is_failed_with_its_text() -> None:
    cloud = replay("failed_no_stack.json")
    assert cloud.outcome == "failed"
    assert cloud.reason == "pulumi preview failed: error: no stack named 'production' found"


def test_only_steps_that_change_something_are_listed() -> None:
    events = RecordedPreview.load(FIXTURES / "no_drift.json").recording["events"]
    ops = {e["resourcePreEvent"]["metadata"]["op"] for e in events if "resourcePreEvent" in e}
    assert ops == {"refresh", "same"}  # the recording does hold steps; none is a change
    assert drift.resource_changes([]) == []


def test_the_summary_counts_alone_make_drift() -> None:
    """A preview that reported no steps but a summary with an update is still drift."""
    recording = {"events": [], "change_summary": {"same": 3, "update": 1}, "error": None}
    assert summarise_preview(RecordedPreview(recording)).outcome == "drift"


# --- cloud preconditions: not checked is said, never "no drift" ---------------------------------


def test_no_pulumi_cli_is_not_checked() -> None:
    assert drift.cloud_precondition("aws", which=lambda _: None) == "no Pulumi CLI"


def test_kitchen_and_missing_credentials_are_not_checked() -> None:
    def found(_: str) -> str:
        return "/usr/bin/pulumi"

    assert drift.cloud_precondition("kitchen", which=found) == "target kitchen has no cloud stack"
    assert drift.cloud_precondition("kitchen", which=lambda _: None) == (
        "target kitchen has no cloud stack"), "the kitchen's reason, with or without a CLI"
    missing = drift.cloud_precondition("aws", which=found, credentials=lambda: False)
    assert missing is not None and missing.startswith("no Pulumi credentials")
    assert drift.cloud_precondition("aws", which=found, credentials=lambda: True) is None


def test_credentials_from_env_or_login(tmp_path: Path) -> None:
    assert drift.pulumi_credentials_present(tmp_path, {"PULUMI_ACCESS_TOKEN": "x"})
    assert not drift.pulumi_credentials_present(tmp_path, {})
    (tmp_path / ".pulumi").mkdir()
    (tmp_path / ".pulumi" / "credentials.json").write_text(
        json.dumps({"current": "s3://state", "accounts": {}}))
    assert drift.pulumi_credentials_present(tmp_path, {})


def test_the_stack_name_comes_from_the_stack_file() -> None:
    assert stack_name_of(Path("Pulumi.production.yaml")) == "production"
    with pytest.raises(ConfigError, match="is not named like a stack file"):
        stack_name_of(Path("stack.yaml"))


# --- host and docs from one verify run ---------------------------------------------------------


def test_verify_results_split_into_host_and_docs(tmp_path: Path) -> None:
    results = read_junit(FIXTURES / "verify_junit.xml", runbooks=tmp_path)
    host, docs = drift.split_results(results)
    assert host.outcome == "drift" and docs.outcome == "drift"
    assert [(i.runbook, i.title, i.message) for i in host.items] == [  # type: ignore[union-attr]
        ("20-deployment/02-infrastructure.md", "test_managed_file[/etc/fail2ban/jail.local]",
         "/etc/fail2ban/jail.local: content changed (sha256 96d81d12, rendered b9a73c07)")]
    assert [(d.file, d.line, d.statement) for d in docs.items] == [  # type: ignore[union-attr]
        ("docs/runbooks/50-testing/expect-grammar.md", 233, "service caddy: enabled, running"),
        ("docs/runbooks/30-operations/01-monitoring-and-alerting.md", 4,
         "the runbook's expect blocks do not parse")]
    assert docs.items[0].message == "service caddy: expected running, observed inactive"
    assert (host.checks, docs.checks) == (5, 3)


def test_a_clean_verify_run_is_no_drift_in_both_parts(tmp_path: Path) -> None:
    results = [r for r in read_junit(FIXTURES / "verify_junit.xml", runbooks=tmp_path)
               if not r.bad]
    host, docs = drift.split_results(results)
    assert (host.outcome, docs.outcome) == ("no-drift", "no-drift")


# --- exit codes --------------------------------------------------------------------------------

CLEAN = PartDrift(True, "no-drift", "all passed", (), 10)
DRIFTED = PartDrift(True, "drift", "1 failed", (), 10)
FAILED = PartDrift(True, "failed", "unreachable")
NOT = not_checked_part("no --host given")
CLOUD = {o: CloudDrift(o != "not-checked", o, o) for o in ("no-drift", "drift", "failed",
                                                           "not-checked")}


@pytest.mark.parametrize(("cloud", "host", "docs", "code"), [
    ("no-drift", CLEAN, CLEAN, 0),
    ("not-checked", CLEAN, CLEAN, 0),  # cloud not checked alone: 0, but said (see below)
    ("no-drift", NOT, NOT, 0),
    ("drift", CLEAN, CLEAN, 1),
    ("no-drift", DRIFTED, CLEAN, 1),
    ("not-checked", CLEAN, DRIFTED, 1),
    ("failed", DRIFTED, CLEAN, 1),  # drift found is drift, even if another part failed
    ("failed", CLEAN, CLEAN, 2),
    ("not-checked", FAILED, FAILED, 2),
    ("not-checked", NOT, NOT, 2),  # nothing at all was checked
])
def test_exit_codes(cloud: str, host: PartDrift, docs: PartDrift, code: int) -> None:
    assert exit_code(DriftReport(CLOUD[cloud], host, docs)) == code


# --- JSON and the report -----------------------------------------------------------------------


def check_schema(data: dict[str, Any]) -> None:
    assert set(data) == {"cloud", "host", "docs", "exit_code"}
    assert set(data["cloud"]) == {"checked", "outcome", "reason", "resources", "change_summary"}
    for part in ("host", "docs"):
        assert set(data[part]) == {"checked", "outcome", "reason", "items", "checks"}
    for part in ("cloud", "host", "docs"):
        assert isinstance(data[part]["checked"], bool)
        assert data[part]["outcome"] in ("no-drift", "drift", "failed", "not-checked")
        assert isinstance(data[part]["reason"], str)
    for res in data["cloud"]["resources"]:
        assert set(res) == {"urn", "type", "op", "properties"}
    for item in data["host"]["items"]:
        assert set(item) == {"runbook", "where", "title", "message"}
    for item in data["docs"]["items"]:
        assert set(item) == {"file", "line", "statement", "message"}
        assert isinstance(item["line"], int)
    assert data["exit_code"] in (0, 1, 2)


def test_the_json_schema(tmp_path: Path) -> None:
    host, docs = drift.split_results(read_junit(FIXTURES / "verify_junit.xml",
                                                runbooks=tmp_path))
    report = DriftReport(replay("drift_expect_no_changes.json"), host, docs)
    data = json.loads(json.dumps(report.to_json()))
    check_schema(data)
    assert data["exit_code"] == 1
    assert data["cloud"]["resources"][0] == {
        "urn": SG, "type": "aws:ec2/securityGroup:SecurityGroup", "op": "update",
        "properties": ["ingress"]}
    assert data["docs"]["items"][0]["line"] == 233


def test_the_report_has_three_sections_and_says_cloud_was_not_checked() -> None:
    report = DriftReport(not_checked_cloud("no Pulumi CLI"), CLEAN, CLEAN)
    text = drift.render_markdown(report, stack_file="Pulumi.example.yaml",
                                 host="ssh://admin@10.0.0.1")
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## Cloud", "## Host", "## Docs"]
    assert "cloud: not checked (no Pulumi CLI)" in text
    assert "not a finding of no drift" in text
    assert "**no drift found in what was checked** (exit code 0)" in text


def test_the_report_names_each_drifted_resource() -> None:
    report = DriftReport(replay("drift_expect_no_changes.json"), NOT, NOT)
    text = drift.render_markdown(report, stack_file="Pulumi.production.yaml", host=None)
    assert f"| update | `{SG}` | ingress |" in text
    assert "**DRIFT FOUND**" in text


# --- the command -------------------------------------------------------------------------------


def test_drift_without_host_with_a_recorded_preview(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    recorded = RecordedPreview.load(FIXTURES / "drift_expect_no_changes.json")
    code = drift_cmd.run_drift(stack_file=STACK_FILE, stack="example", target="aws",
                               host=None, report=tmp_path / "drift.md", as_json=True,
                               runner=recorded)
    data = json.loads(capsys.readouterr().out)
    check_schema(data)
    assert code == data["exit_code"] == 1
    assert data["host"] == {"checked": False, "outcome": "not-checked",
                            "reason": "no --host given", "items": [], "checks": 0}
    assert "## Cloud" in (tmp_path / "drift.md").read_text()


def test_drift_cli_says_cloud_not_checked_and_exits_2_when_nothing_ran(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift.shutil, "which", lambda _: None)
    result = CliRunner().invoke(app, ["drift", "--stack-file", str(STACK_FILE),
                                      "--target", "kitchen"])
    assert result.exit_code == 2, result.output
    assert "cloud: not checked (target kitchen has no cloud stack)" in result.output
    assert "host: not checked (no --host given)" in result.output


@pytest.mark.parametrize(("argv", "problem"), [
    (["--host", "admin@10.0.0.1"], "ssh://"),
    (["--host", "ssh://admin@10.0.0.1"], "--account-id"),
    (["--ssh-key", "/nonexistent/key"], "is not a readable file"),
    (["--report", "/nonexistent/dir/r.md"], "does not exist"),
])
def test_bad_input_exits_2(argv: list[str], problem: str) -> None:
    result = CliRunner().invoke(app, ["drift", "--stack-file", str(STACK_FILE), *argv])
    assert result.exit_code == 2, result.output
    assert problem in result.output


def test_an_invalid_stack_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  choiros:region: nowhere-1\n")
    result = CliRunner().invoke(app, ["drift", "--stack-file", str(bad)])
    assert result.exit_code == 2, result.output


# --- the real runner's call into the Automation API ---------------------------------------------


def test_the_real_runner_previews_with_refresh_and_expect_no_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from pulumi import automation as auto
    from pulumi.automation import Stack

    calls: dict[str, Any] = {}

    class FakeStack:
        def preview(self, **kwargs: Any) -> Any:
            calls["preview"] = kwargs
            return RecordedPreview.load(FIXTURES / "no_drift.json")(kwargs["on_event"])

    def fake_select(**kwargs: Any) -> FakeStack:
        calls["select"] = kwargs
        return FakeStack()

    monkeypatch.setattr(auto, "select_stack", fake_select)
    runner = drift.automation_preview("production", REPO, STACK_FILE)
    assert summarise_preview(runner).outcome == "no-drift"
    assert calls["select"] == {"stack_name": "production", "work_dir": str(REPO)}
    options = calls["preview"]
    assert (options["refresh"], options["expect_no_changes"]) == (True, True)
    assert options["config_file"] == str(STACK_FILE)
    accepted = set(inspect.signature(Stack.preview).parameters)
    assert set(options) <= accepted, set(options) - accepted  # the real API takes them all


def test_an_unexpected_error_from_the_runner_is_failed() -> None:
    def broken(on_event: Any) -> Any:
        raise RuntimeError("summary event never found")

    cloud = drift_cmd.check_cloud("production", "aws", STACK_FILE, broken)
    assert (cloud.checked, cloud.outcome) == (True, "failed")
    assert "summary event never found" in cloud.reason


def test_nothing_checkable_exits_2_with_error_and_try(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = drift_cmd.run_drift(stack_file=STACK_FILE, stack=None, target="kitchen", host=None)
    err = capsys.readouterr().err
    assert code == 2
    assert "Error: nothing could be checked: cloud target kitchen has no cloud stack" in err
    assert "Try: give the host" in err
