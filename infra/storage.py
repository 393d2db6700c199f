"""S3 buckets: one component, used for the backups and for the release artifacts.

Every bucket this project owns is private, versioned, encrypted at rest, reachable only over TLS
and owned by the account (ACLs disabled). Old versions expire after the configured retention,
so a deleted or overwritten backup can be recovered within that window and no longer.

Naming: buckets get an explicit, deterministic name ``<cfg.name>-<purpose>-<account id>``
instead of Pulumi's random auto-name or ``bucket_prefix``. The backups bucket outlives hosts,
and may outlive the stack itself: a recreated stack (lost state, new machine, disaster recovery)
must find the same bucket by name, and the host's user-data names it before the bucket has an
identity. The account id keeps the global S3 namespace from colliding between accounts; the
longest possible name (31-character stack, ``artifacts``) is 62 characters, within S3's 63.
The price of a fixed name: a change that replaces the bucket fails instead of silently creating
an empty twin, which for the backups bucket is what we want.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.naming import bucket_name

__all__ = ["Bucket", "BucketArgs", "bucket_name"]

ABORT_MULTIPART_AFTER_DAYS = 7
BUCKET_NAME_LIMIT = 63


@dataclass(frozen=True)
class BucketArgs:
    """What a :class:`Bucket` needs: its physical name, how long old versions live, its tags."""

    bucket_name: pulumi.Input[str]
    noncurrent_version_days: int
    tags: Mapping[str, str]


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    """A bucket policy that refuses every request not made over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


class Bucket(pulumi.ComponentResource):
    """A private, versioned, encrypted, TLS-only S3 bucket with expiring old versions."""

    bucket: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: BucketArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("choiros:infra:Bucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {**args.tags, "Name": name}

        self.resource = aws.s3.Bucket(
            f"{name}-bucket", bucket=args.bucket_name, force_destroy=False, tags=tags, opts=child
        )
        bucket_id = self.resource.id

        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket_id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket_id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket_id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child,
        )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket_id,
            rules=[
                {
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    "filter": {},  # the whole bucket, as the provider documents it
                    "noncurrent_version_expiration": {
                        "noncurrent_days": args.noncurrent_version_days
                    },
                    "expiration": {"expired_object_delete_marker": True},
                },
                {
                    "id": "abort-incomplete-multipart-uploads",
                    "status": "Enabled",
                    "filter": {},  # the whole bucket, as the provider documents it
                    "abort_incomplete_multipart_upload": {
                        "days_after_initiation": ABORT_MULTIPART_AFTER_DAYS
                    },
                },
            ],
            # Lifecycle rules on noncurrent versions need versioning to exist first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.versioning]),
        )
        self.policy = aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket_id,
            policy=self.resource.arn.apply(lambda arn: json.dumps(tls_only_policy(arn))),
            # S3 refuses policy writes while the public access block is being changed.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_block]),
        )

        self.bucket = self.resource.bucket
        self.arn = self.resource.arn
        self.register_outputs({"bucket": self.bucket, "arn": self.arn})
