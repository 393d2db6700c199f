"""``choiros-infra plan``: the real program under mocks, deterministic, refusing bad config."""

from __future__ import annotations

import dataclasses
import json
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
    "aws:s3/bucketObjectv2:BucketObjectv2": 15,
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


@pytest.mark.parametrize("flag", [["--json"], [], ["--full"]])
def test_the_same_stack_file_prints_the_same_bytes(flag: list[str]) -> None:
    first = invoke("--stack-file", str(EXAMPLE), *flag)
    second = invoke("--stack-file", str(EXAMPLE), *flag)
    assert first.exit_code == second.exit_code == 0, first.stderr
    assert first.stdout_bytes == second.stdout_bytes
    assert first.stderr == "", first.stderr


def test_full_tables_list_resources_lookups_and_outputs() -> None:
    result = invoke("--stack-file", str(EXAMPLE), "--full")
    assert result.exit_code == 0, result.stderr
    for expected in ("choiros-example: 54 resources", "aws:ec2:Instance",
                     "choiros-example-host-instance", "aws:ec2/getAmi:getAmi",
                     "ssh admin@198.51.100."):
        assert expected in result.stdout, expected


def test_an_invalid_stack_file_exits_2_naming_the_key_and_declares_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[object] = []
    monkeypatch.setattr(preview, "install", lambda *a, **k: ran.append(a))
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


# --------------------------------------------------------------------------- compact plan


def test_the_default_plan_is_compact_with_security_facts_image_and_user_data() -> None:
    from infra.user_data import render_for
    from provisioning.target import AWS

    result = invoke("--stack-file", str(EXAMPLE))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    # One line per resource plus a short head and the outputs (the --full tables are ~900).
    assert len(lines) < sum(EXAMPLE_COUNTS.values()) + 30, len(lines)
    cfg = load_stack_file(EXAMPLE)
    data = render_for(cfg, AWS, "choiros-example-artifacts-123456789012",
                      "choiros-example-backups-123456789012").user_data
    import hashlib

    assert f"user-data: {len(data)} bytes" in result.stdout
    assert hashlib.sha256(data).hexdigest() in result.stdout
    for fact in ("inbound 22/tcp from 203.0.113.7/32", "IMDSv2 only, hop limit 1",
                 "root gp3 20 GiB, encrypted",
                 "bucket choiros-example-backups-123456789012: public access blocked, "
                 "versioned, encrypted (AES256), TLS only",
                 "aws:ec2:Instance  choiros-example-host-instance  instanceType=c5.large  ami=ami-",
                 "ssh_command: ssh admin@198.51.100."):
        assert fact in result.stdout, fact
    assert "8080" not in result.stdout
    image = next(line for line in lines if line.startswith("image: "))
    assert "not pinned" in image and "pulumi config set choiros:ami ami-" in image


def test_a_broken_invariant_shows_in_the_security_facts() -> None:
    from choiros_infra import plan_summary

    result = preview.run(load_stack_file(EXAMPLE))
    broken = [dataclasses.replace(r, inputs={**r.inputs, "metadataOptions": {
        "httpTokens": "optional", "httpPutResponseHopLimit": 2}})
        if r.type == "aws:ec2/instance:Instance" else r for r in result.resources]
    broken = [r for r in broken if r.type != "aws:s3/bucketVersioning:BucketVersioning"]
    facts = "\n".join(plan_summary.security_lines(broken))
    assert "IMDSv1 ALLOWED, hop limit 2" in facts
    assert facts.count("NOT VERSIONED") == 2


def test_a_pinned_image_is_named_as_pinned(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("# choiros:ami: ami-0123456789abcdef0",
                                       "choiros:ami: ami-0123456789abcdef0")
    result = invoke("--stack-file", str(stack_file(tmp_path, "Pulumi.example.yaml", text)))
    assert result.exit_code == 0, result.stderr
    assert "image: ami-0123456789abcdef0 (pinned by choiros:ami" in result.stdout


def test_an_account_without_a_default_vpc_stops_naming_subnet_id() -> None:
    result = invoke("--stack-file", str(EXAMPLE), "--no-default-vpc")
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("Error: choiros:subnet_id = null: is required: this "
                                    "account has no default VPC in eu-west-1"), result.stderr
    assert "Try: pulumi config set choiros:subnet_id" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------- plan --against


def edited(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = EXAMPLE.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    directory = tmp_path / "new"
    directory.mkdir(exist_ok=True)
    return stack_file(directory, "Pulumi.example.yaml", text)


def against(new: Path, old: Path, *flags: str) -> Any:
    result = invoke("--stack-file", str(new), "--against", str(old), *flags)
    assert result.exit_code == 0, result.stderr
    return result


def test_against_the_same_plan_nothing_changes(tmp_path: Path,
                                               example_json: list[dict[str, Any]]) -> None:
    saved = stack_file(tmp_path, "plan.json", json.dumps(example_json))
    result = against(EXAMPLE, saved)
    assert "0 to replace, 0 to update, 0 to create, 0 to delete, 54 unchanged" in result.stdout
    assert "REPLACED" not in result.stdout


@pytest.mark.parametrize(("edit", "reason"), [
    (("# choiros:ami: ami-0123456789abcdef0", "choiros:ami: ami-0123456789abcdef0"),
     "image (AMI)"),
    (("choiros:backup_sync_interval_seconds: 1", "choiros:backup_sync_interval_seconds: 5"),
     "user-data"),
    (("# choiros:subnet_id: subnet-0123456789abcdef0",
      "choiros:subnet_id: subnet-0123456789abcdef0"), "subnet"),
])
def test_a_change_that_replaces_the_host_says_so_loudly_and_why(
        tmp_path: Path, edit: tuple[str, str], reason: str) -> None:
    result = against(edited(tmp_path, edit), EXAMPLE)
    loud = [line for line in result.stdout.splitlines()
            if line.startswith("THE HOST WOULD BE REPLACED")]
    assert len(loud) == 1, result.stdout
    assert "choiros-example-host-instance" in loud[0] and reason in loud[0], loud[0]
    # The Elastic IP follows the new instance.
    assert "replace choiros-example-host-eip-association" in result.stdout


def test_a_change_that_does_not_replace_the_host_is_an_update(tmp_path: Path) -> None:
    result = against(edited(tmp_path, ("choiros:instance_type: c5.large",
                                       "choiros:instance_type: c5.xlarge")), EXAMPLE)
    assert "REPLACED" not in result.stdout
    assert "1 to replace" not in result.stdout
    assert "update  choiros-example-host-instance" in result.stdout
    assert "changed: instanceType" in result.stdout


def test_against_as_json_lists_every_resource_with_its_operation(tmp_path: Path) -> None:
    new = edited(tmp_path, ("choiros:alert_email: ops@example.com", ""))
    result = against(new, EXAMPLE, "--json")
    report = json.loads(result.stdout)
    ops = {(c["name"], c["op"]) for c in report["changes"]}
    assert ("choiros-example-alarms-email", "delete") in ops
    assert report["counts"]["delete"] == 1 and report["counts"]["replace"] == 0
    assert sum(report["counts"].values()) == len(report["changes"]) == 54


@pytest.mark.parametrize(("name", "text", "problem"), [
    ("plan.json", "{not json", "is not JSON"),
    ("plan.json", '{"a": 1}', "is not a plan --json document"),
    ("Pulumi.other.yaml", None, "is stack other, not example"),
])
def test_a_bad_against_exits_2(tmp_path: Path, name: str, text: str | None,
                               problem: str) -> None:
    path = stack_file(tmp_path, name, text if text is not None else EXAMPLE.read_text())
    result = invoke("--stack-file", str(EXAMPLE), "--against", str(path))
    assert result.exit_code == 2, result.stdout
    assert problem in result.stderr and "Try:" in result.stderr
