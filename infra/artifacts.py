"""The host's artifacts in the artifacts bucket: what the host fetches at converge.

The rendering lists them (:func:`provisioning.render.published_artifacts`: the host tools,
content-addressed, and the pinned Litestream binary); this component uploads each one as an
S3 object with its sha256 in the object's metadata and as its S3 checksum. The instance is
created only after these exist (``ChoirHost`` depends on this component), so its first
converge finds them. Objects are immutable by key; an artifact that changes gets a new key.

Objects are never deleted by Pulumi (``retain_on_delete``): when a host tool changes, its new
key is uploaded, and the old object stays for any host whose user-data still names it (a host
not yet replaced, a rollback of the stack). Uploads wait for the bucket's versioning to be on,
so every object has a version from its first write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from provisioning.artifacts import Artifact


@dataclass(frozen=True)
class HostArtifactsArgs:
    """The bucket to publish into and what to publish there."""

    bucket: pulumi.Input[str]
    artifacts: Sequence[Artifact]
    tags: Mapping[str, str]
    # What must exist before the first upload: the bucket's versioning configuration.
    after: Sequence[pulumi.Resource] = ()


def _source(artifact: Artifact) -> pulumi.Asset:
    if artifact.text is not None:
        return pulumi.StringAsset(artifact.text)
    assert artifact.binary is not None
    return pulumi.FileAsset(str(artifact.binary.local_file()))


def resource_suffix(artifact: Artifact) -> str:
    """A stable resource name part: the file's name (host tool keys carry its sha256)."""
    return artifact.key.rsplit("/", 1)[-1].replace("_", "-").replace(".", "-")


class HostArtifacts(pulumi.ComponentResource):
    """One S3 object per artifact, uploaded before the host that fetches them."""

    keys: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: HostArtifactsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("choiros:infra:HostArtifacts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, retain_on_delete=True,
                                       depends_on=list(args.after))
        self.objects: dict[str, aws.s3.BucketObjectv2] = {}
        for artifact in args.artifacts:
            self.objects[artifact.key] = aws.s3.BucketObjectv2(
                f"{name}-{resource_suffix(artifact)}",
                bucket=args.bucket,
                key=artifact.key,
                source=_source(artifact),
                source_hash=artifact.sha256,
                checksum_algorithm="SHA256",
                metadata={"sha256": artifact.sha256},
                content_type="application/octet-stream",
                server_side_encryption="AES256",
                tags={**args.tags, "Name": f"{name}-{resource_suffix(artifact)}"},
                opts=child,
            )
        self.keys = pulumi.Output.from_input(sorted(self.objects))
        self.register_outputs({"keys": self.keys})
