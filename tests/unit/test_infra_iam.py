"""The instance role: explicit actions, resources no wider than a bucket, prefix or parameter."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pulumi
import pytest
from sample_stack import stack_config

from infra.preview import ACCOUNT, Declared, Recorder, one
from infra.stack import build
from provisioning.host_tools.choiros_release import WANTED_KEY
from provisioning.iam_policy import instance_policy, parameter_arn
from provisioning.spec import METRICS

pytestmark = pytest.mark.unit

BACKUPS = f"arn:aws:s3:::choiros-example-backups-{ACCOUNT}"
ARTIFACTS = f"arn:aws:s3:::choiros-example-artifacts-{ACCOUNT}"
SECRETS = ["/choiros/example/OPENAI_API_KEY", "choiros/example/DB_TOKEN"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def statements(policy: Declared) -> list[dict[str, Any]]:
    document = json.loads(policy.inputs["policy"])
    assert document["Version"] == "2012-10-17", policy.urn
    return list(document["Statement"])


def by_sid(policy: Declared) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements(policy)}


@pulumi.runtime.test
def test_no_action_is_a_wildcard_and_only_metrics_use_a_star_resource(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(secrets=SECRETS))

    def check(resources: list[Declared]) -> None:
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        for statement in statements(policy):
            assert statement["Effect"] == "Allow", f"{policy.urn}: {statement}"
            assert "NotAction" not in statement and "NotResource" not in statement, policy.urn
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{policy.urn}: wildcard action {action}"
            for resource in as_list(statement["Resource"]):
                if resource == "*":
                    assert statement["Action"] == "cloudwatch:PutMetricData", (
                        f"{policy.urn}: {statement['Sid']} grants on every resource"
                    )
                    assert statement["Condition"] == {
                        "StringEquals": {"cloudwatch:namespace": METRICS.namespace}
                    }, f"{policy.urn}: metrics are not limited to the {METRICS.namespace} namespace"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_backups_are_reachable_only_under_the_hosts_own_prefix(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        grants = [s for s in statements(policy)
                  if any(r.startswith(BACKUPS) for r in as_list(s["Resource"]))]
        objects = [s for s in grants if s["Resource"] != BACKUPS]
        assert [s["Resource"] for s in objects] == [f"{BACKUPS}/hosts/example/*"], (
            f"{policy.urn}: backup objects granted on {[s['Resource'] for s in objects]}"
        )
        assert sorted(as_list(objects[0]["Action"])) == [
            "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"
        ], f"{policy.urn}: {objects[0]['Action']}"
        (listing,) = [s for s in grants if s["Resource"] == BACKUPS]
        assert listing["Action"] == "s3:ListBucket", f"{policy.urn}: {listing}"
        prefixes = listing["Condition"]["StringLike"]["s3:prefix"]
        # Litestream's DeleteAll lists Prefix=hosts/example, without the slash.
        assert sorted(prefixes) == ["hosts/example", "hosts/example/", "hosts/example/*"], (
            f"{policy.urn}: listing not limited to the prefix: {prefixes}"
        )

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_artifacts_are_read_only(pulumi_mocks: Recorder) -> pulumi.Output[None]:
    """The host reads releases and the stack's wanted release from the artifacts bucket and
    writes nothing there: only the operator's deploy commands set the wanted release."""
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        grants = {
            (action, resource)
            for s in statements(policy)
            for resource in as_list(s["Resource"]) if resource.startswith(ARTIFACTS)
            for action in as_list(s["Action"])
        }
        assert grants == {("s3:GetObject", f"{ARTIFACTS}/*"), ("s3:ListBucket", ARTIFACTS)}, (
            f"{policy.urn}: artifacts grants {sorted(grants)}"
        )
        wanted = f"{ARTIFACTS}/{WANTED_KEY}"
        assert [a for a, r in grants if fnmatch.fnmatchcase(wanted, r)] == ["s3:GetObject"]

    return pulumi_mocks.settled().apply(check)


PARAMETER_ARNS = [
    f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/choiros/example/OPENAI_API_KEY",
    f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/choiros/example/DB_TOKEN",
]
CMK = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pulumi.runtime.test
def test_secrets_are_readable_only_as_the_named_parameters_with_no_kms_for_aws_ssm(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(secrets=SECRETS))

    def check(resources: list[Declared]) -> None:
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        sids = by_sid(policy)
        read = sids["SecretsRead"]
        assert sorted(as_list(read["Action"])) == ["ssm:GetParameter", "ssm:GetParameters"]
        assert as_list(read["Resource"]) == PARAMETER_ARNS, f"{policy.urn}: {read['Resource']}"
        # The AWS managed key aws/ssm needs no kms:Decrypt in the role.
        assert "SecretsDecrypt" not in sids, f"{policy.urn}: {sids.get('SecretsDecrypt')}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_a_customer_managed_key_is_decrypted_only_via_ssm_for_the_stacks_parameters(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(secrets=SECRETS, secrets_kms_key=CMK))

    def check(resources: list[Declared]) -> None:
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        decrypt = by_sid(policy)["SecretsDecrypt"]
        assert decrypt["Action"] == "kms:Decrypt" and decrypt["Resource"] == CMK, decrypt
        assert decrypt["Condition"] == {"StringEquals": {
            "kms:ViaService": "ssm.eu-west-1.amazonaws.com",
            "kms:EncryptionContext:PARAMETER_ARN": PARAMETER_ARNS,
        }}, f"{policy.urn}: kms:Decrypt not limited to SSM and the parameters: {decrypt}"

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_without_secrets_there_is_no_ssm_or_kms_statement(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(secrets=[]))

    def check(resources: list[Declared]) -> None:
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        actions = [a for s in statements(policy) for a in as_list(s["Action"])]
        assert not [a for a in actions if a.startswith(("ssm:", "kms:"))], (
            f"{policy.urn}: {actions}"
        )

    return pulumi_mocks.settled().apply(check)


@pulumi.runtime.test
def test_the_role_is_for_ec2_only_and_reaches_the_instance_through_its_profile(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        role = one(resources, "aws:iam/role:Role")
        trust = json.loads(role.inputs["assumeRolePolicy"])
        assert trust["Statement"] == [{
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
        }], f"{role.urn}: trust policy {trust}"
        assert not role.inputs.get("managedPolicyArns"), f"{role.urn}: managed policies"
        policy = one(resources, "aws:iam/rolePolicy:RolePolicy")
        assert policy.inputs["role"] == role.id, f"{policy.urn}: attached to {policy.inputs}"
        profile = one(resources, "aws:iam/instanceProfile:InstanceProfile")
        assert profile.inputs["role"] == role.id, f"{profile.urn}: role {profile.inputs}"
        assert not [r for r in resources if r.type.startswith("aws:iam/rolePolicyAttachment")], (
            "no managed policy is attached"
        )

    return pulumi_mocks.settled().apply(check)


@pytest.mark.parametrize(
    ("name", "arn"),
    [
        ("/choiros/prod/API_KEY", "arn:aws:ssm:eu-west-1:1:parameter/choiros/prod/API_KEY"),
        ("choiros/prod/API_KEY", "arn:aws:ssm:eu-west-1:1:parameter/choiros/prod/API_KEY"),
        ("API_KEY", "arn:aws:ssm:eu-west-1:1:parameter/API_KEY"),
    ],
)
def test_parameter_arns_never_repeat_the_leading_slash(name: str, arn: str) -> None:
    assert parameter_arn("aws", "eu-west-1", "1", name) == arn


def test_the_policy_follows_the_partition_in_govcloud() -> None:
    document = instance_policy(
        partition="aws-us-gov", region="us-gov-west-1", account="1",
        backups_bucket_arn="arn:aws-us-gov:s3:::b", backup_prefix="hosts/x/",
        artifacts_bucket_arn="arn:aws-us-gov:s3:::a", secrets=["/p/KEY"],
    )
    resources = [r for s in document["Statement"] for r in as_list(s["Resource"])]
    assert all(r == "*" or r.startswith("arn:aws-us-gov:") for r in resources), resources


# --------------------------------------------------------------------------- parliament


def parliament_findings(document: dict[str, Any]) -> list[str]:
    from parliament import analyze_policy_string

    policy = analyze_policy_string(json.dumps(document))
    return [f"{f.issue}: {f.detail} {f.location}" for f in policy.findings]


@pytest.mark.parametrize("kms", [None, CMK], ids=["aws-ssm", "customer-key"])
@pytest.mark.parametrize("secrets", [[], SECRETS], ids=["no-secrets", "secrets"])
def test_parliament_finds_nothing_in_the_role_policy(secrets: list[str], kms: str | None) -> None:
    document = instance_policy(
        partition="aws", region="eu-west-1", account=ACCOUNT, backups_bucket_arn=BACKUPS,
        backup_prefix="hosts/example/", artifacts_bucket_arn=ARTIFACTS, secrets=secrets,
        secrets_kms_key=kms)
    assert parliament_findings(document) == []


def test_parliament_is_really_linting() -> None:
    # An object action on a bucket ARN: the mistake parliament exists to catch.
    broken = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": BACKUPS}]}
    assert any(f.startswith("RESOURCE_MISMATCH") for f in parliament_findings(broken))
