"""The compact ``plan``: one line per resource, the security facts, the image and the user-data.

Everything here is read from what the program declared under mocks (the plan's resources), not
from the stack file, so the summary shows what ``pulumi up`` would send. ``plan --full`` prints
every input instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from infra import preview
from infra.config import StackConfig
from infra.user_data import render_for
from provisioning.render import EC2_USER_DATA_LIMIT
from provisioning.target import AWS

INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
BUCKET = "aws:s3/bucket:Bucket"

# The few inputs worth a glance, per type; other types show none.
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    INSTANCE: ("instanceType", "ami", "subnetId"),
    "aws:ec2/keyPair:KeyPair": ("keyName",),
    SECURITY_GROUP: ("vpcId",),
    BUCKET: ("bucket",),
    "aws:s3/bucketObjectv2:BucketObjectv2": ("key",),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": ("bucket",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "comparisonOperator", "threshold"),
    "aws:sns/topicSubscription:TopicSubscription": ("protocol", "endpoint"),
    "pulumi:providers:aws": ("region",),
}


def short_type(token: str) -> str:
    """``aws:ec2/instance:Instance`` -> ``aws:ec2:Instance``, as the Pulumi CLI shows types."""
    package, module, name = token.split(":", 2)
    return f"{package}:{module.split('/', 1)[0]}:{name}"


def resource_line(resource: preview.Declared) -> str:
    inputs = preview.shown(resource.inputs)
    shown = [f"{key}={_scalar(inputs[key])}" for key in KEY_INPUTS.get(resource.type, ())
             if inputs.get(key) not in (None, "")]
    return "  ".join([short_type(resource.type), resource.name, *shown]).rstrip()


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _of_type(resources: Iterable[preview.Declared], type_: str) -> list[preview.Declared]:
    return [r for r in resources if r.type == type_]


def _sources(rule: Mapping[str, Any]) -> list[str]:
    return [*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])]


def _ingress_lines(groups: Sequence[preview.Declared]) -> list[str]:
    lines = []
    for group in groups:
        for rule in preview.shown(group.inputs).get("ingress") or []:
            ports = (f"{rule['fromPort']}" if rule["fromPort"] == rule["toPort"]
                     else f"{rule['fromPort']}-{rule['toPort']}")
            lines.append(f"inbound {ports}/{rule['protocol']} from {', '.join(_sources(rule))}")
    return lines


def _bucket_facts(resources: Sequence[preview.Declared], bucket: str) -> list[str]:
    """Which of the four bucket guarantees the plan declares for ``bucket``."""
    def on(type_: str) -> list[preview.Declared]:
        return [r for r in resources if r.type == type_ and r.inputs.get("bucket") == bucket]

    facts = []
    blocks = on("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    facts.append("public access blocked" if blocks and all(blocks[0].inputs.get(f) is True
                                                           for f in flags)
                 else "PUBLIC ACCESS NOT BLOCKED")
    versioning = on("aws:s3/bucketVersioning:BucketVersioning")
    status = versioning[0].inputs.get("versioningConfiguration", {}).get("status") \
        if versioning else None
    facts.append("versioned" if status == "Enabled" else "NOT VERSIONED")
    encryption = on("aws:s3/bucketServerSideEncryptionConfiguration:"
                    "BucketServerSideEncryptionConfiguration")
    algorithms = [rule.get("applyServerSideEncryptionByDefault", {}).get("sseAlgorithm")
                  for e in encryption for rule in e.inputs.get("rules") or []]
    facts.append(f"encrypted ({', '.join(a for a in algorithms if a)})" if any(algorithms)
                 else "NOT ENCRYPTED")
    policies = on("aws:s3/bucketPolicy:BucketPolicy")
    tls_only = any("aws:SecureTransport" in str(p.inputs.get("policy")) for p in policies)
    facts.append("TLS only" if tls_only else "PLAIN HTTP ALLOWED")
    return facts


def security_lines(resources: Sequence[preview.Declared]) -> list[str]:
    """The facts a reviewer checks first: who reaches the host, IMDS, encryption, buckets."""
    lines = _ingress_lines(_of_type(resources, SECURITY_GROUP))
    for instance in _of_type(resources, INSTANCE):
        metadata = preview.shown(instance.inputs).get("metadataOptions") or {}
        imds = ("IMDSv2 only" if metadata.get("httpTokens") == "required" else "IMDSv1 ALLOWED")
        lines.append(f"{instance.name}: {imds}, hop limit "
                     f"{_scalar(metadata.get('httpPutResponseHopLimit'))}")
        root = preview.shown(instance.inputs).get("rootBlockDevice") or {}
        lines.append(f"{instance.name}: root {root.get('volumeType')} "
                     f"{_scalar(root.get('volumeSize'))} GiB, "
                     + ("encrypted" if root.get("encrypted") is True else "NOT ENCRYPTED"))
    for bucket in _of_type(resources, BUCKET):
        name = str(bucket.inputs.get("bucket"))
        lines.append(f"bucket {name}: {', '.join(_bucket_facts(resources, name))}")
    return lines


def image_line(cfg: StackConfig, resources: Sequence[preview.Declared]) -> str:
    """Which image the host boots, and whether the stack pins it."""
    (instance,) = _of_type(resources, INSTANCE)
    ami = instance.inputs.get("ami")
    if cfg.ami:
        return f"image: {ami} (pinned by choiros:ami; a new value replaces the host)"
    return (f"image: {ami} (newest {cfg.os}, not pinned: a newer image replaces the host at the "
            f"next pulumi up; pin it with: pulumi config set choiros:ami {ami})")


def user_data_line(cfg: StackConfig, outputs: Mapping[str, Any]) -> str:
    """Size and sha256 of the exact bytes EC2 gets (before base64)."""
    data = render_for(cfg, AWS, str(outputs["artifacts_bucket"]),
                      str(outputs["backups_bucket"])).user_data
    share = 100 * len(data) // EC2_USER_DATA_LIMIT
    return (f"user-data: {len(data)} bytes ({share}% of EC2's {EC2_USER_DATA_LIMIT}), "
            f"sha256 {hashlib.sha256(data).hexdigest()}")


def summary(cfg: StackConfig, plan: preview.Plan) -> list[str]:
    """Every line of the compact plan."""
    lines = [f"{cfg.name}: {len(plan.resources)} resources in {cfg.region} "
             f"(mocked account {preview.ACCOUNT})",
             image_line(cfg, plan.resources),
             user_data_line(cfg, plan.outputs),
             "", "security:"]
    lines += [f"  {line}" for line in security_lines(plan.resources)]
    lines += ["", "resources:"]
    lines += [f"  {resource_line(r)}" for r in plan.resources]
    lines += ["", "outputs:"]
    lines += [f"  {key}: {value}" for key, value in preview.shown(plan.outputs).items()]
    return lines
