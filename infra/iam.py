"""The host's instance role: exactly what the host's own tools need, written out.

The host reads release artifacts, replicates its database under its own prefix of the backups
bucket (Litestream lists, reads, writes and deletes there), reads the SSM parameters named in
``choiros:secrets`` at boot, and publishes metrics in the ``ChoirOS`` namespace. Nothing else:
no wildcard actions, no resource wider than a bucket, a prefix or a parameter.

SecureString parameters encrypted with the AWS managed key (``aws/ssm``, the default) need no
``kms:Decrypt`` in the role: that key's own policy lets SSM decrypt for the account's
principals. Only a customer-managed key (``choiros:secrets_kms_key``) gets a statement, for
that key alone, through SSM, and only in the encryption context of the stack's parameters.

The policy document is built by :func:`instance_policy`, a plain function, so its shape can be
tested without Pulumi; the component only feeds it the resolved ARNs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from provisioning.spec import METRICS

ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    },
    sort_keys=True,
)


def parameter_arn(partition: str, region: str, account: str, name: str) -> str:
    """The ARN of an SSM parameter; parameter ARNs never repeat the name's leading slash."""
    return f"arn:{partition}:ssm:{region}:{account}:parameter/{name.lstrip('/')}"


def instance_policy(
    *,
    partition: str,
    region: str,
    account: str,
    backups_bucket_arn: str,
    backup_prefix: str,
    artifacts_bucket_arn: str,
    secrets: Sequence[str],
    secrets_kms_key: str | None = None,
) -> dict[str, Any]:
    """The inline policy of the instance role, as a policy document."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "BackupObjects",
            "Effect": "Allow",
            # Litestream uploads snapshots of a large database in parts; an interrupted
            # upload is aborted (the bucket lifecycle also clears them after 7 days).
            "Action": ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                       "s3:PutObject"],
            "Resource": f"{backups_bucket_arn}/{backup_prefix}*",
        },
        {
            "Sid": "BackupList",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": backups_bucket_arn,
            # Litestream lists its replica with the bare path too (DeleteAll: Prefix=hosts/x).
            "Condition": {"StringLike": {"s3:prefix": [backup_prefix.rstrip("/"), backup_prefix,
                                                       f"{backup_prefix}*"]}},
        },
        {
            "Sid": "ArtifactsRead",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{artifacts_bucket_arn}/*",
        },
        {
            "Sid": "ArtifactsList",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": artifacts_bucket_arn,
        },
    ]
    if secrets:
        statements.append(
            {
                "Sid": "SecretsRead",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameters"],
                "Resource": [parameter_arn(partition, region, account, s) for s in secrets],
            }
        )
    if secrets and secrets_kms_key:
        statements.append(
            {
                "Sid": "SecretsDecrypt",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": secrets_kms_key,
                "Condition": {"StringEquals": {
                    "kms:ViaService": f"ssm.{region}.amazonaws.com",
                    # SSM encrypts each SecureString in the context of its own ARN.
                    "kms:EncryptionContext:PARAMETER_ARN": [
                        parameter_arn(partition, region, account, s) for s in secrets],
                }},
            }
        )
    statements.append(
        {
            "Sid": "Metrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            # PutMetricData has no resource-level permissions; the namespace condition scopes it.
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": METRICS.namespace}},
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


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
            assume_role_policy=ASSUME_ROLE_POLICY,
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
