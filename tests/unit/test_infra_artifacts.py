"""The host's artifacts: uploaded by the Pulumi program before the instance that fetches them,
and by the kitchen into moto, both exactly as the rendering lists them."""

from __future__ import annotations

import hashlib
from typing import Any

import boto3
import pulumi
import pytest
from moto import mock_aws
from sample_stack import stack_config

from infra.preview import Declared, Recorder
from infra.stack import build
from kitchen.artifacts import publish_artifacts
from provisioning.artifacts import LITESTREAM
from provisioning.render import published_artifacts

pytestmark = pytest.mark.unit

OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"


@pulumi.runtime.test
def test_every_artifact_is_uploaded_with_its_sha256_before_the_instance(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    outputs = build(stack_config())

    def check(args: list[Any]) -> None:
        resources: list[Declared] = args[0]
        objects = {r.inputs["key"]: r for r in resources if r.type == OBJECT}
        expected = {a.key: a for a in published_artifacts()}
        assert set(objects) == set(expected), sorted(set(objects) ^ set(expected))
        for key, resource in objects.items():
            artifact, inputs = expected[key], resource.inputs
            assert inputs["bucket"] == args[1], f"{resource.urn}: not the artifacts bucket"
            assert inputs["metadata"] == {"sha256": artifact.sha256}, resource.urn
            assert inputs["sourceHash"] == artifact.sha256, resource.urn
            assert inputs["checksumAlgorithm"] == "SHA256", resource.urn
            assert inputs["serverSideEncryption"] == "AES256", resource.urn
        assert set(objects) >= {LITESTREAM.key}
        instance = next(r for r in resources if r.type == "aws:ec2/instance:Instance")
        missing = {r.urn for r in objects.values()} - set(instance.dependencies)
        assert not missing, f"{instance.urn} must wait for {missing}: its converge fetches them"

    return pulumi.Output.all(pulumi_mocks.settled(), outputs["artifacts_bucket"]).apply(check)


@mock_aws
def test_the_kitchen_publishes_the_same_objects_once() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    artifacts = published_artifacts()
    assert sorted(publish_artifacts(s3, "artifacts", artifacts)) == sorted(
        a.key for a in artifacts)
    for artifact in artifacts:
        obj = s3.get_object(Bucket="artifacts", Key=artifact.key)
        assert obj["Metadata"] == {"sha256": artifact.sha256}
        assert hashlib.sha256(obj["Body"].read()).hexdigest() == artifact.sha256, artifact.key
    assert publish_artifacts(s3, "artifacts", artifacts) == [], "already there: not again"


@pulumi.runtime.test
def test_objects_outlive_a_changed_tool_and_wait_for_versioning(
    pulumi_mocks: Recorder,
) -> pulumi.Output[None]:
    build(stack_config())

    def check(resources: list[Declared]) -> None:
        (versioning,) = [r for r in resources
                         if r.type == "aws:s3/bucketVersioning:BucketVersioning"
                         and r.name.startswith("choiros-example-artifacts")]
        objects = [r for r in resources if r.type == OBJECT]
        assert len(objects) == len(published_artifacts())
        for obj in objects:
            # A changed tool gets a new key; the old object stays for hosts that still fetch it.
            assert obj.retain_on_delete, f"{obj.urn}: Pulumi would delete the old version"
            assert versioning.urn in obj.dependencies, (
                f"{obj.urn} may be written before {versioning.urn} turns versioning on")

    return pulumi_mocks.settled().apply(check)
