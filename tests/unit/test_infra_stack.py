"""The whole program: one provider, everything tagged and named from the stack, the outputs,
Pulumi.yaml in step with infra/config.py, and ``__main__.py`` end to end."""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from sample_stack import stack_config

from infra.config import SETTINGS, load_stack_file, namespaced, parse_config, read_stack_file
from infra.preview import Declared, Recorder, one
from infra.stack import OUTPUTS, build

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILE = ROOT / "Pulumi.yaml"
EXAMPLE = ROOT / "Pulumi.example.yaml"
MAIN = ROOT / "__main__.py"
PROVIDER = "pulumi:providers:aws"
# Types that must carry tags; the generic rule below also finds any other taggable type.
MUST_BE_TAGGED = {
    "aws:s3/bucket:Bucket", "aws:ec2/instance:Instance", "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/eip:Eip", "aws:ec2/keyPair:KeyPair", "aws:iam/role:Role",
    "aws:iam/instanceProfile:InstanceProfile", "aws:sns/topic:Topic",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
}


@pulumi.runtime.test
def test_every_taggable_resource_carries_project_stack_managed_by_and_the_users_tags(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    cfg = stack_config(tags={"owner": "ops", "cost-center": "choir"})
    build(cfg)
    expected = {"project": "choiros", "stack": "example", "managed-by": "pulumi",
                "owner": "ops", "cost-center": "choir"}
    assert cfg.all_tags == expected

    def check(resources: list[Declared]) -> None:
        tagged = set()
        for resource in resources:
            cls = pulumi_mocks.classes[resource.urn]
            if not resource.custom or resource.type == PROVIDER or not hasattr(cls, "tags"):
                continue
            tags = resource.inputs.get("tags") or {}
            missing = {k: v for k, v in expected.items() if tags.get(k) != v}
            assert not missing, f"{resource.urn}: missing tags {missing}"
            assert tags.get("Name", "").startswith("choiros-example"), f"{resource.urn}: Name"
            tagged.add(resource.type)
        assert tagged >= MUST_BE_TAGGED, f"not tagged: {sorted(MUST_BE_TAGGED - tagged)}"
        instance = one(resources, "aws:ec2/instance:Instance")
        volume_tags = instance.inputs["rootBlockDevice"]["tags"]
        assert volume_tags.items() >= expected.items(), f"{instance.urn}: root volume tags"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_every_resource_and_lookup_goes_through_the_one_provider_in_the_stacks_region(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(region="eu-west-1"))

    def check(resources: list[Declared]) -> None:
        provider = one(resources, PROVIDER)
        assert provider.inputs["region"] == "eu-west-1", f"{provider.urn}: {provider.inputs}"
        reference = f"{provider.urn}::{provider.id}"
        for resource in resources:
            if resource.custom and resource.type != PROVIDER:
                assert resource.provider == reference, (
                    f"{resource.urn}: provider {resource.provider or 'default'}"
                )
        for call in pulumi_mocks.invokes:
            assert call.provider == reference, f"{call.token}: provider {call.provider}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_every_name_derives_from_the_stack_and_children_from_their_component(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        by_urn = {r.urn: r for r in resources}
        for resource in resources:
            assert resource.name.startswith("choiros-example-"), f"{resource.urn}: name"
            parent = by_urn.get(resource.parent)
            if parent is not None:
                assert resource.name.startswith(f"{parent.name}-"), (
                    f"{resource.urn}: not named after its component {parent.urn}"
                )
        components = [r for r in resources if not r.custom]
        assert {r.type for r in components} == {
            "choiros:infra:Bucket", "choiros:infra:InstanceRole", "choiros:infra:Network",
            "choiros:infra:ChoirHost", "choiros:infra:Monitoring", "choiros:infra:HostArtifacts",
        }, [r.urn for r in components]

    return pulumi_mocks.settled().apply(check)


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({}, "http://{ip}"),
        ({"domain": "choir.example.com", "acme_email": "ops@example.com"},
         "https://choir.example.com"),
    ],
)
@pulumi.runtime.test
def test_outputs_name_the_address_url_ssh_buckets_instance_and_topic(
    pulumi_mocks: Recorder, overrides: dict[str, str], url: str
) -> pulumi.Output[None]:
    outputs = build(stack_config(**overrides))
    assert tuple(outputs) == OUTPUTS

    def check(values: list[Any]) -> None:
        got = dict(zip(OUTPUTS, values, strict=True))
        ip = got["public_ip"]
        assert got["url"] == url.format(ip=ip), got
        assert got["ssh_command"] == f"ssh admin@{ip}", got
        assert got["backups_bucket"] == "choiros-example-backups-123456789012", got
        assert got["artifacts_bucket"] == "choiros-example-artifacts-123456789012", got
        assert got["instance_id"].startswith("i-"), got
        assert got["alarm_topic_arn"].startswith("arn:aws:sns:eu-west-1:"), got

    return pulumi.Output.all(*outputs.values()).apply(check)


# --------------------------------------------------------------------------- Pulumi.yaml


def project_config() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(PROJECT_FILE.read_text(encoding="utf-8"))
    return {str(k): v for k, v in document["config"].items()}


def test_pulumi_yaml_declares_exactly_the_keys_the_program_reads_with_their_descriptions() -> None:
    declared = project_config()
    assert all(key.startswith("choiros:") for key in declared), sorted(declared)
    keys = {key.removeprefix("choiros:") for key in declared}
    assert keys == set(SETTINGS), f"missing {set(SETTINGS) - keys}, unknown {keys - set(SETTINGS)}"
    for key, spec in declared.items():
        assert spec["description"] == SETTINGS[key.removeprefix("choiros:")].summary, key


def test_pulumi_yaml_project_settings() -> None:
    document = yaml.safe_load(PROJECT_FILE.read_text(encoding="utf-8"))
    assert document["name"] == "choiros"
    assert document["runtime"] == {
        "name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}
    }
    assert document["description"]


def engine_values(defaults: dict[str, Any], stack: dict[str, Any]) -> dict[str, str]:
    """What the Pulumi engine hands the program: project defaults under stack values, every
    value as text (scalars printed, lists and mappings as JSON)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list | dict):
            return json.dumps(value)
        return str(value)

    return {key: text(value) for key, value in {**defaults, **stack}.items()}


def project_defaults() -> dict[str, Any]:
    return {k: spec["default"] for k, spec in project_config().items() if "default" in spec}


def test_pulumi_yaml_defaults_mean_the_same_as_leaving_the_key_out() -> None:
    required = {"region": "eu-west-1", "admin_cidrs": '["203.0.113.7/32"]',
                "ssh_public_key": stack_config().ssh_public_key}
    with_defaults = {**namespaced(engine_values(project_defaults(), {})), **required}
    assert parse_config(with_defaults, "example") == parse_config(required, "example")


def test_pulumi_yaml_types_match_the_values_the_keys_take() -> None:
    types = {k.removeprefix("choiros:"): spec.get("type") for k, spec in project_config().items()}
    assert types["admin_cidrs"] == types["secrets"] == "array"
    assert {k for k, t in types.items() if t == "integer"} == {
        "root_volume_gb", "backup_retention_days", "backup_sync_interval_seconds", "keep_releases",
        "alarm_disk_percent", "alarm_memory_percent", "alarm_unhealthy_minutes",
    }
    assert {k for k, t in types.items() if t == "boolean"} == {
        "allow_world_ssh", "termination_protection"
    }
    assert types["tags"] is None  # a mapping; Pulumi's schema has no object type
    required = {k.removeprefix("choiros:") for k, s in project_config().items()
                if "default" not in s}
    assert required == {"region", "admin_cidrs", "ssh_public_key"}


def test_the_example_stack_is_valid_and_mentions_every_key() -> None:
    cfg = load_stack_file(EXAMPLE)
    assert cfg.stack == "example"
    assert cfg.admin_cidrs == ("203.0.113.7/32",)
    assert cfg.domain is None
    text = EXAMPLE.read_text(encoding="utf-8")
    unmentioned = [key for key in SETTINGS if f"choiros:{key}:" not in text]
    assert not unmentioned, f"Pulumi.example.yaml does not show {unmentioned}"


# --------------------------------------------------------------------------- __main__.py


@pytest.fixture
def engine_config() -> Iterator[None]:
    yield
    pulumi.runtime.set_all_config({})


@pulumi.runtime.test
def test_main_declares_the_stack_from_pulumi_config_and_exports_every_output(
    pulumi_mocks: Recorder, engine_config: None, monkeypatch: pytest.MonkeyPatch
) -> pulumi.Output[None]:
    pulumi.runtime.set_all_config(engine_values(project_defaults(), read_stack_file(EXAMPLE)))
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", exported.__setitem__)
    runpy.run_path(str(MAIN), run_name="__main__")
    assert tuple(exported) == OUTPUTS

    def check(args: list[Any]) -> None:
        resources, url = args
        assert len(resources) == 54, [r.urn for r in resources]
        assert url.startswith("http://198.51.100."), url
        tags = one(resources, "aws:ec2/instance:Instance").inputs["tags"]
        assert tags["owner"] == "ops", "the stack file's tags reach the resources"

    return pulumi.Output.all(pulumi_mocks.settled(), exported["url"]).apply(check)


@pulumi.runtime.test
def test_main_refuses_bad_config_before_declaring_anything(
    pulumi_mocks: Recorder, engine_config: None
) -> pulumi.Output[None]:
    stack = {**read_stack_file(EXAMPLE), "choiros:admin_cidrs": ["0.0.0.0/0"]}
    pulumi.runtime.set_all_config(engine_values(project_defaults(), stack))
    with pytest.raises(pulumi.RunError) as refused:
        runpy.run_path(str(MAIN), run_name="__main__")
    message = str(refused.value)
    assert message.startswith("Error: choiros:admin_cidrs = '0.0.0.0/0'"), message
    assert "\nTry: " in message, message
    assert pulumi_mocks.constructed == [], "resources were declared before validation"

    def check(resources: list[Declared]) -> None:
        assert resources == [], [r.urn for r in resources]

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_main_refuses_an_aws_region_that_disagrees(
    pulumi_mocks: Recorder, engine_config: None
) -> pulumi.Output[None]:
    stack = {**read_stack_file(EXAMPLE), "aws:region": "us-east-1"}
    pulumi.runtime.set_all_config(engine_values(project_defaults(), stack))
    with pytest.raises(pulumi.RunError) as refused:
        runpy.run_path(str(MAIN), run_name="__main__")
    message = str(refused.value)
    assert message.startswith("Error: choiros:region = 'eu-west-1': disagrees with aws:region = "
                              "'us-east-1'"), message
    assert pulumi_mocks.constructed == [], "resources were declared before validation"

    def check(resources: list[Declared]) -> None:
        assert resources == [], [r.urn for r in resources]

    return pulumi_mocks.settled().apply(check)
