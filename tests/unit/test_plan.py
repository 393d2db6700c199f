"""``choiros-infra plan``: the real program under mocks, deterministic, refusing bad config."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer
from pulumi.runtime import rpc
from typer.testing import CliRunner

from choiros_infra import cli, plan_cmd
from infra import preview
from infra.config import load_stack_file
from infra.stack import OUTPUTS

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "Pulumi.example.yaml"

# The example stack: what `plan` lists, by type.
EXAMPLE_COUNTS = {
    "aws:cloudwatch/metricAlarm:MetricAlarm": 7,
    "aws:ec2/eip:Eip": 1,
    "aws:ec2/eipAssociation:EipAssociation": 1,
    "aws:ec2/instance:Instance": 1,
    "aws:ec2/keyPair:KeyPair": 1,
    "aws:ec2/securityGroup:SecurityGroup": 1,
    "aws:iam/instanceProfile:InstanceProfile": 1,
    "aws:iam/role:Role": 1,
    "aws:iam/rolePolicy:RolePolicy": 1,
    "aws:s3/bucket:Bucket": 2,
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": 2,
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": 2,
    "aws:s3/bucketPolicy:BucketPolicy": 2,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": 2,
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 2,
    "aws:s3/bucketVersioning:BucketVersioning": 2,
    "aws:s3/bucketObjectv2:BucketObjectv2": 11,
    "aws:sns/topic:Topic": 1,
    "aws:sns/topicSubscription:TopicSubscription": 1,
    "choiros:infra:Bucket": 2,
    "choiros:infra:ChoirHost": 1,
    "choiros:infra:HostArtifacts": 1,
    "choiros:infra:InstanceRole": 1,
    "choiros:infra:Monitoring": 1,
    "choiros:infra:Network": 1,
    "pulumi:providers:aws": 1,
}


def app() -> typer.Typer:
    """A CLI with plan as a subcommand (the real one may hold only plan for now)."""
    application = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @application.callback()
    def main() -> None:
        """Test CLI."""

    plan_cmd.register(application)
    return application


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app(), ["plan", *args], env={"COLUMNS": "120", "NO_COLOR": "1"})


def stack_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_real_cli_registers_plan() -> None:
    names = [c.name for c in cli.app.registered_commands]
    assert "plan" in names, names


@pytest.fixture(scope="module")
def example_json() -> list[dict[str, Any]]:
    result = invoke("--stack-file", str(EXAMPLE), "--json")
    assert result.exit_code == 0, result.stderr
    document: list[dict[str, Any]] = json.loads(result.stdout)
    return document


def test_json_lists_every_resource_with_type_name_inputs_then_the_outputs(
    example_json: list[dict[str, Any]],
) -> None:
    document = example_json
    assert isinstance(document, list)
    assert all(set(item) == {"type", "name", "inputs"} for item in document), document[:2]
    *resources, outputs = document
    assert outputs["type"] == plan_cmd.OUTPUTS_TYPE
    assert outputs["name"] == "choiros-example"
    assert sorted(outputs["inputs"]) == sorted(OUTPUTS)
    assert dict(Counter(r["type"] for r in resources)) == EXAMPLE_COUNTS
    names = [r["name"] for r in resources]
    assert names == sorted(names), "resources are listed in name order"


def test_user_data_is_shown_as_a_digest_not_its_content(
    example_json: list[dict[str, Any]],
) -> None:
    (instance,) = [r for r in example_json if r["type"] == "aws:ec2/instance:Instance"]
    shown = instance["inputs"]["userDataBase64"]
    assert shown.startswith("[sha256:") and shown.endswith(" chars]"), shown


def test_secret_values_are_masked() -> None:
    wrapped = rpc.wrap_rpc_secret("hunter2")
    assert preview.shown({"password": wrapped, "nested": [wrapped]}) == {
        "nested": ["[secret]"], "password": "[secret]"
    }


@pytest.mark.parametrize("flag", [["--json"], ["--full"], []])
def test_the_same_stack_file_prints_the_same_bytes(flag: list[str]) -> None:
    first = invoke("--stack-file", str(EXAMPLE), *flag)
    second = invoke("--stack-file", str(EXAMPLE), *flag)
    assert first.exit_code == second.exit_code == 0, first.stderr
    assert first.stdout_bytes == second.stdout_bytes
    assert first.stderr == "", first.stderr


def test_the_full_table_lists_resources_lookups_and_outputs() -> None:
    result = invoke("--stack-file", str(EXAMPLE), "--full")
    assert result.exit_code == 0, result.stderr
    for expected in ("choiros-example: 50 resources", "aws:ec2:Instance",
                     "choiros-example-host-instance", "aws:ec2/getAmi:getAmi",
                     "ssh admin@198.51.100."):
        assert expected in result.stdout, expected


def test_an_invalid_stack_file_exits_2_naming_the_key_and_declares_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[object] = []
    monkeypatch.setattr(preview, "install", lambda *a: ran.append(a))
    bad = EXAMPLE.read_text(encoding="utf-8").replace("203.0.113.7/32", "0.0.0.0/0")
    result = invoke("--stack-file", str(stack_file(tmp_path, "Pulumi.example.yaml", bad)))
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("Error: choiros:admin_cidrs = '0.0.0.0/0'"), result.stderr
    assert "\nTry: " in result.stderr, result.stderr
    assert result.stdout == ""
    assert ran == [], "the program ran despite the invalid config"


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("Pulumi.missing.yaml", None, "stack-file"),
        ("Pulumi.broken.yaml", "config: [unclosed", "stack-file"),
        ("stack.yaml", "config: {}\n", "stack"),
        ("Pulumi.empty.yaml", "config: {}\n", "region"),
    ],
)
def test_unreadable_or_incomplete_stack_files_exit_2(
    tmp_path: Path, name: str, text: str | None, key: str
) -> None:
    path = tmp_path / name if text is None else stack_file(tmp_path, name, text)
    result = invoke("--stack-file", str(path))
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith(f"Error: choiros:{key} "), result.stderr
    assert "Try: " in result.stderr


def test_the_default_is_compact_with_the_security_facts_and_the_user_data() -> None:
    result = invoke("--stack-file", str(EXAMPLE))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "choiros-example: 50 resources"
    assert len(lines) < 80, f"{len(lines)} lines"
    instance = next(line for line in lines if "choiros-example-host-instance" in line)
    assert "instanceType=c5.large" in instance and "ami=ami-" in instance
    for fact in ("port 22 from 203.0.113.7/32", "instance metadata: tokens required, hop limit 1",
                 "root volume: gp3 20 GiB, encrypted True",
                 "choiros-example-backups-123456789012: public access blocked",
                 "choiros-example-backups-123456789012: encryption AES256"):
        assert f"  {fact}" in lines, fact
    assert re.search(r"^user-data: \[sha256:[0-9a-f]{64} \d+ chars\]$", result.stdout, re.M)


def test_brackets_survive_in_help_and_tables() -> None:
    """Rich markup would eat "[secret]" and the user-data's "[sha256:...]" cell."""
    help_text = CliRunner().invoke(app(), ["plan", "--help"], env={"COLUMNS": "200"}).stdout
    assert "shown as [secret]" in " ".join(help_text.split())
    full = invoke("--stack-file", str(EXAMPLE), "--full").stdout
    assert "[sha256:" in full


def test_help_documents_the_json_shape_and_exit_codes() -> None:
    result = CliRunner().invoke(app(), ["plan", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for expected in ("--stack-file", "--json", plan_cmd.OUTPUTS_TYPE, "Exit codes", "2 the stack"):
        assert expected in text, expected


def test_no_resource_is_declared_inside_an_apply() -> None:
    result = preview.run(load_stack_file(EXAMPLE))
    assert result.constructed_in_apply == 0
    assert result.warnings == (), "deprecated resources or properties log warnings"
    assert len(result.resources) == sum(EXAMPLE_COUNTS.values())
