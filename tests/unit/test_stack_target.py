"""`--stack NAME` means Pulumi.NAME.yaml, and the host, SSH user, account id and buckets come
from the stack's outputs (a saved `pulumi stack output --json`), flags winning over them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choiros_infra.cli import app
from choiros_infra.host_access import UsageProblem
from choiros_infra.stack_target import resolve
from choiros_infra.targets import TargetChoice

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "Pulumi.example.yaml", tmp_path / "Pulumi.staging.yaml")
    (tmp_path / "staging.json").write_text(json.dumps({
        "public_ip": "127.0.0.1", "ssh_user": "admin", "account_id": "210987654321",
        "artifacts_bucket": "choiros-staging-artifacts-210987654321"}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_stack_name_and_its_outputs_are_enough(workdir: Path) -> None:
    found = resolve(stack="staging", outputs=workdir / "staging.json")
    assert found.stack_file == Path("Pulumi.staging.yaml")
    assert (found.cfg.stack, found.account_id, found.artifacts_bucket, found.host_url) == (
        "staging", "210987654321", "choiros-staging-artifacts-210987654321",
        "ssh://admin@127.0.0.1")


def test_flags_win_over_outputs(workdir: Path) -> None:
    found = resolve(stack="staging", outputs=workdir / "staging.json",
                    host="ssh://ops@127.0.0.2", account_id="111122223333")
    assert (found.host_url, found.account_id) == ("ssh://ops@127.0.0.2", "111122223333")


def test_without_outputs_or_a_pulumi_cli_it_says_how_to_save_them(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageProblem, match="no Pulumi CLI") as problem:
        resolve(stack="staging")
    assert "pulumi stack output --json > F" in problem.value.fix


@pytest.mark.parametrize(("kwargs", "says"), [
    ({}, "no stack given"),
    ({"stack": "nope"}, "stack file Pulumi.nope.yaml does not exist"),
    ({"stack": "production", "stack_file": Path("Pulumi.staging.yaml")}, "disagree"),
])
def test_bad_stack_options_are_named(workdir: Path, kwargs: dict[str, object],
                                     says: str) -> None:
    with pytest.raises(UsageProblem, match=says):
        resolve(**kwargs)  # type: ignore[arg-type]


def test_a_kitchen_stack_needs_no_outputs(workdir: Path) -> None:
    found = resolve(stack="staging", target=TargetChoice.kitchen, need_host=False)
    assert found.account_id == "123456789012"
    assert found.artifacts_bucket == "choiros-staging-artifacts-123456789012"


def test_verify_finds_the_host_in_the_outputs(workdir: Path) -> None:
    """No --host, --stack-file or --account-id: the run goes to the outputs' address (on
    loopback here, where nothing answers SSH: the error names the address it tried)."""
    result = CliRunner().invoke(app, ["verify", "--stack", "staging",
                                      "--outputs", str(workdir / "staging.json")])
    assert result.exit_code == 2, result.output
    assert "127.0.0.1" in result.output and "Error:" in result.output
