"""Both buckets: private, versioned, encrypted, TLS-only, old versions expiring on schedule."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pytest
from sample_stack import stack_config

from infra.preview import ACCOUNT, Declared, Recorder, one
from infra.stack import build
from infra.storage import ABORT_MULTIPART_AFTER_DAYS, BUCKET_NAME_LIMIT, bucket_name

pytestmark = pytest.mark.unit

PURPOSES = ["backups", "artifacts"]


def component_child(resources: list[Declared], type_: str, purpose: str) -> Declared:
    """The one resource of ``type_`` inside the ``choiros-example-<purpose>`` component."""
    return one([r for r in resources if r.name.startswith(f"choiros-example-{purpose}-")], type_)


def for_each_bucket(
    check: Callable[[list[Declared], str], None],
) -> Callable[[list[Declared]], None]:
    """Run one check against the backups bucket and the artifacts bucket."""

    def run(resources: list[Declared]) -> None:
        for purpose in PURPOSES:
            check(resources, purpose)

    return run


def bucket_of(resources: list[Declared], purpose: str) -> Declared:
    return component_child(resources, "aws:s3/bucket:Bucket", purpose)


@pulumi.runtime.test
def test_bucket_has_a_deterministic_name_and_is_never_force_destroyed(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared], purpose: str) -> None:
        bucket = bucket_of(resources, purpose)
        expected = f"choiros-example-{purpose}-{ACCOUNT}"
        assert bucket.inputs["bucket"] == expected, f"{bucket.urn}: {bucket.inputs['bucket']}"
        assert "bucketPrefix" not in bucket.inputs, f"{bucket.urn}: bucket_prefix is random"
        assert bucket.inputs.get("forceDestroy") is False, f"{bucket.urn}: force_destroy"

    return pulumi_mocks.settled().apply(for_each_bucket(check))


def test_the_longest_possible_bucket_name_fits_s3s_limit() -> None:
    longest_stack = "x" * 31  # the longest stack name infra.config accepts
    name = bucket_name(f"choiros-{longest_stack}", "artifacts", "9" * 12)
    assert len(name) <= BUCKET_NAME_LIMIT, f"{name} is {len(name)} characters"


@pulumi.runtime.test
def test_public_access_is_blocked_in_all_four_ways(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared], purpose: str) -> None:
        bucket = bucket_of(resources, purpose)
        block = component_child(
            resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", purpose
        )
        assert block.inputs["bucket"] == bucket.id, f"{block.urn}: guards {block.inputs}"
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                     "restrictPublicBuckets"):
            assert block.inputs.get(flag) is True, f"{block.urn}: {flag} is not true"
        ownership = component_child(
            resources, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", purpose
        )
        assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced", (
            f"{ownership.urn}: ACLs still enabled"
        )
        assert ownership.inputs["bucket"] == bucket.id, ownership.urn

    return pulumi_mocks.settled().apply(for_each_bucket(check))


@pulumi.runtime.test
def test_versioning_is_enabled_and_objects_are_encrypted_at_rest(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared], purpose: str) -> None:
        bucket = bucket_of(resources, purpose)
        versioning = component_child(
            resources, "aws:s3/bucketVersioning:BucketVersioning", purpose
        )
        assert versioning.inputs["bucket"] == bucket.id, versioning.urn
        status = versioning.inputs["versioningConfiguration"]["status"]
        assert status == "Enabled", f"{versioning.urn}: versioning {status}"
        sse = component_child(
            resources,
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            purpose,
        )
        assert sse.inputs["bucket"] == bucket.id, sse.urn
        algorithms = [
            r["applyServerSideEncryptionByDefault"]["sseAlgorithm"] for r in sse.inputs["rules"]
        ]
        assert algorithms in (["AES256"], ["aws:kms"]), f"{sse.urn}: {algorithms}"

    return pulumi_mocks.settled().apply(for_each_bucket(check))


@pulumi.runtime.test
def test_the_bucket_policy_refuses_every_request_without_tls(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared], purpose: str) -> None:
        bucket = bucket_of(resources, purpose)
        policy = component_child(resources, "aws:s3/bucketPolicy:BucketPolicy", purpose)
        assert policy.inputs["bucket"] == bucket.id, policy.urn
        document = json.loads(policy.inputs["policy"])
        arn = f"arn:aws:s3:::{bucket.inputs['bucket']}"
        denials = [
            s for s in document["Statement"]
            if s["Effect"] == "Deny"
            and s["Principal"] == "*"
            and s["Action"] == "s3:*"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert len(denials) == 1, f"{policy.urn}: no TLS-only statement in {document}"
        assert sorted(denials[0]["Resource"]) == [arn, f"{arn}/*"], policy.urn
        assert all(s["Effect"] == "Deny" for s in document["Statement"]), (
            f"{policy.urn}: the bucket policy grants something"
        )
        public = component_child(
            resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", purpose
        )
        assert public.urn in policy.dependencies, (
            f"{policy.urn}: must wait for the public access block"
        )

    return pulumi_mocks.settled().apply(for_each_bucket(check))


@pulumi.runtime.test
def test_old_versions_expire_after_the_retention_and_stale_uploads_are_aborted(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config(backup_retention_days=45))

    def check(resources: list[Declared], purpose: str) -> None:
        bucket = bucket_of(resources, purpose)
        lifecycle = component_child(
            resources,
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
            purpose,
        )
        assert lifecycle.inputs["bucket"] == bucket.id, lifecycle.urn
        rules = lifecycle.inputs["rules"]
        assert all(r["status"] == "Enabled" for r in rules), f"{lifecycle.urn}: {rules}"
        assert all(r["filter"] == {} for r in rules), (
            f"{lifecycle.urn}: every rule covers the whole bucket"
        )
        noncurrent = [r["noncurrentVersionExpiration"]["noncurrentDays"]
                      for r in rules if "noncurrentVersionExpiration" in r]
        assert noncurrent == [45], f"{lifecycle.urn}: noncurrent expiry {noncurrent}"
        aborts = [r["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
                  for r in rules if "abortIncompleteMultipartUpload" in r]
        assert aborts == [7] == [ABORT_MULTIPART_AFTER_DAYS], f"{lifecycle.urn}: {aborts}"
        assert not [r for r in rules if r.get("expiration", {}).get("days")], (
            f"{lifecycle.urn}: current versions must never expire"
        )

    return pulumi_mocks.settled().apply(for_each_bucket(check))
