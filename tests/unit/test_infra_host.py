"""The host: right image, IMDSv2 only, encrypted gp3 root, immutable on user-data change."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from sample_stack import stack_config

from infra.host import AMIS
from infra.preview import Declared, Recorder, one
from infra.stack import build
from infra.user_data import aws_user_data

pytestmark = pytest.mark.unit

INSTANCE = "aws:ec2/instance:Instance"


@pulumi.runtime.test
def test_instance_metadata_requires_imdsv2_tokens_with_hop_limit_one(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        metadata = instance.inputs.get("metadataOptions") or {}
        assert metadata.get("httpTokens") == "required", f"{instance.urn}: {metadata}"
        assert metadata.get("httpEndpoint") == "enabled", f"{instance.urn}: {metadata}"
        assert metadata.get("httpPutResponseHopLimit") == 1, f"{instance.urn}: {metadata}"

    return pulumi_mocks.settled().apply(check)


@pytest.mark.parametrize("size", [20, 64])
@pulumi.runtime.test
def test_root_volume_is_encrypted_gp3_of_the_configured_size(
    pulumi_mocks: Recorder, size: int
) -> pulumi.Output[None]:
    build(stack_config(root_volume_gb=size))

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        root = instance.inputs.get("rootBlockDevice") or {}
        assert root.get("volumeType") == "gp3", f"{instance.urn}: {root}"
        assert root.get("encrypted") is True, f"{instance.urn}: root volume not encrypted"
        assert root.get("volumeSize") == size >= 20, f"{instance.urn}: {root}"
        assert root.get("deleteOnTermination") is True, f"{instance.urn}: {root}"
        assert not instance.inputs.get("ebsBlockDevices"), f"{instance.urn}: extra volumes"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_user_data_change_replaces_the_host_and_the_old_one_goes_first(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    # delete_before_replace is a resource option: mocks never see it, so the recording monitor
    # reads it from the RegisterResource request, exactly as the engine would receive it.
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        assert instance.inputs.get("userDataReplaceOnChange") is True, instance.urn
        assert instance.delete_before_replace, f"{instance.urn}: delete_before_replace not set"
        assert "userData" not in instance.inputs, f"{instance.urn}: use user_data_base64 only"
        # No ignore_changes: Pulumi would create a replacement from the ignored old value.
        assert not instance.ignore_changes, f"{instance.urn}: ignores {instance.ignore_changes}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_the_host_boots_the_user_data_rendered_for_the_stacks_own_buckets(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    cfg = stack_config(domain="choir.example.com", acme_email="ops@example.com")
    outputs = build(cfg)

    def check(args: list[Any]) -> None:
        resources, artifacts, backups = args
        instance = one(resources, INSTANCE)
        expected = aws_user_data(cfg, artifacts, backups)
        assert instance.inputs["userDataBase64"] == expected, (
            f"{instance.urn}: user-data is not aws_user_data(cfg, {artifacts}, {backups})"
        )

    return pulumi.Output.all(
        pulumi_mocks.settled(), outputs["artifacts_bucket"], outputs["backups_bucket"]
    ).apply(check)


@pytest.mark.parametrize("os_name", sorted(AMIS))
@pulumi.runtime.test
def test_the_image_is_the_newest_official_one_for_the_configured_os(
    pulumi_mocks: Recorder, os_name: Any
) -> pulumi.Output[None]:
    outputs = build(stack_config(os=os_name))
    source = AMIS[os_name]

    def check(args: list[Any]) -> None:
        resources, ssh_command, public_ip = args
        (lookup,) = [c for c in pulumi_mocks.invokes if c.token == "aws:ec2/getAmi:getAmi"]
        assert lookup.args["owners"] == [source.owner], f"AMI owners {lookup.args}"
        assert lookup.args["mostRecent"] is True, f"AMI lookup {lookup.args}"
        filters = {f["name"]: f["values"] for f in lookup.args["filters"]}
        assert filters["name"] == [source.name_pattern], f"AMI filters {filters}"
        assert filters["architecture"] == ["x86_64"], f"AMI filters {filters}"
        instance = one(resources, INSTANCE)
        assert instance.inputs["ami"].startswith("ami-"), f"{instance.urn}: {instance.inputs}"
        assert ssh_command == f"ssh {source.login_user}@{public_ip}", ssh_command

    return pulumi.Output.all(
        pulumi_mocks.settled(), outputs["ssh_command"], outputs["public_ip"]
    ).apply(check)


@pulumi.runtime.test
def test_instance_type_key_profile_monitoring_and_name_come_from_the_stack(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    cfg = stack_config(instance_type="t3.medium", termination_protection=True)
    build(cfg)

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        key = one(resources, "aws:ec2/keyPair:KeyPair")
        profile = one(resources, "aws:iam/instanceProfile:InstanceProfile")
        inputs = instance.inputs
        assert inputs["instanceType"] == "t3.medium", instance.urn
        assert inputs["disableApiTermination"] is True, f"{instance.urn}: termination"
        assert inputs["monitoring"] is True, f"{instance.urn}: detailed monitoring off"
        assert inputs["tags"]["Name"] == cfg.name, f"{instance.urn}: Name tag"
        assert key.inputs["publicKey"] == cfg.ssh_public_key, key.urn
        assert inputs["keyName"] == key.id, f"{instance.urn}: key {inputs['keyName']}"
        assert inputs["iamInstanceProfile"] == profile.id, f"{instance.urn}: profile"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_termination_protection_is_off_by_default(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        assert instance.inputs["disableApiTermination"] is False, instance.urn

    return pulumi_mocks.settled().apply(check)


PINNED = "ami-0123456789abcdef0"


@pulumi.runtime.test
def test_a_pinned_image_is_booted_as_given_with_no_lookup(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(ami=PINNED))

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        assert instance.inputs["ami"] == PINNED, f"{instance.urn}: {instance.inputs['ami']}"
        lookups = [c for c in pulumi_mocks.invokes if c.token == "aws:ec2/getAmi:getAmi"]
        assert not lookups, f"a pinned image is looked up: {lookups}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_the_instance_waits_for_its_role_policy_and_its_artifacts(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        instance = one(resources, INSTANCE)
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        assert policy.urn in instance.dependencies, (
            f"{instance.urn} may boot before {policy.urn} grants its first converge access")
        objects = [r for r in resources if r.type == "aws:s3/bucketObjectv2:BucketObjectv2"]
        assert objects and all(o.urn in instance.dependencies for o in objects), instance.urn

    return pulumi_mocks.settled().apply(check)
