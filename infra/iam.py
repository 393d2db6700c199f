"""The host's instance role in Pulumi: the role, its one inline policy, its instance profile.

What the role may do is written in ``provisioning/iam_policy.py``, plain data without Pulumi,
so the kitchen creates the same role in its cloud (where IAM is enforced) from the same
documents; the component only feeds it the resolved ARNs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from provisioning.iam_policy import instance_policy, trust_policy_json


@dataclass(frozen=True)
class InstanceRoleArgs:
    """What the role is scoped to: the two buckets, the host's prefix, the SSM parameters."""

    partition: pulumi.Input[str]
    region: str
    account: pulumi.Input[str]
    backups_bucket_arn: pulumi.Input[str]
    backup_prefix: str
    artifacts_bucket_arn: pulumi.Input[str]
    secrets: Sequence[str]
    tags: Mapping[str, str]
    secrets_kms_key: str | None = None


class InstanceRole(pulumi.ComponentResource):
    """An EC2 role with one explicit inline policy, and the instance profile that carries it."""

    profile_name: pulumi.Output[str]
    role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: InstanceRoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("choiros:infra:InstanceRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=trust_policy_json(),
            description="ChoirOS host: artifacts, its own backup prefix, its SSM parameters",
            tags={**args.tags, "Name": f"{name}-role"},
            opts=child,
        )

        secrets = tuple(args.secrets)
        document = pulumi.Output.all(
            args.partition, args.account, args.backups_bucket_arn, args.artifacts_bucket_arn
        ).apply(
            lambda v: json.dumps(
                instance_policy(
                    partition=v[0],
                    region=args.region,
                    account=v[1],
                    backups_bucket_arn=v[2],
                    backup_prefix=args.backup_prefix,
                    artifacts_bucket_arn=v[3],
                    secrets=secrets,
                    secrets_kms_key=args.secrets_kms_key,
                ),
                sort_keys=True,
            )
        )
        self.policy = aws.iam.RolePolicy(
            f"{name}-policy", role=self.role.id, policy=document, opts=child
        )
        self.profile = aws.iam.InstanceProfile(
            f"{name}-profile",
            role=self.role.name,
            tags={**args.tags, "Name": f"{name}-profile"},
            opts=child,
        )

        self.profile_name = self.profile.name
        self.role_arn = self.role.arn
        self.register_outputs({"profile_name": self.profile_name, "role_arn": self.role_arn})
