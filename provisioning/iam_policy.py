"""The host's instance role as plain data: its trust policy and its one inline policy.

The host reads release artifacts, replicates its database under its own prefix of the backups
bucket (Litestream lists, reads, writes and deletes there), reads the SSM parameters named in
``choiros:secrets`` at boot, and publishes metrics in the ``ChoirOS`` namespace. Nothing else:
no wildcard actions, no resource wider than a bucket, a prefix or a parameter.

SecureString parameters encrypted with the AWS managed key (``aws/ssm``, the default) need no
``kms:Decrypt`` in the role: that key's own policy lets SSM decrypt for the account's
principals. Only a customer-managed key (``choiros:secrets_kms_key``) gets a statement, for
that key alone, through SSM, and only in the encryption context of the stack's parameters.

Plain functions without Pulumi, so there is one source of truth for two consumers: the
Pulumi program (``infra/iam.py``) declares the role from these documents, and the kitchen
creates the same role in its cloud, where IAM is enforced, so a permission the host tools need
and this policy lacks fails a kitchen test instead of a production host.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from provisioning.spec import METRICS

EC2_SERVICE = "ec2.amazonaws.com"


def trust_policy(also_trusted: Sequence[str] = ()) -> dict[str, Any]:
    """Who may assume the instance role: EC2 (for the instance profile), and on a stand-in
    cloud the ARNs in ``also_trusted`` that play EC2 there (the kitchen's metadata service)."""
    principal: dict[str, Any] = {"Service": EC2_SERVICE}
    if also_trusted:
        principal["AWS"] = list(also_trusted)
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}],
    }


def trust_policy_json(also_trusted: Sequence[str] = ()) -> str:
    """:func:`trust_policy` as the JSON string IAM stores (sorted keys: stable bytes)."""
    return json.dumps(trust_policy(also_trusted), sort_keys=True)


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
