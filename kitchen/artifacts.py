"""Publishing the host's artifacts into the kitchen cloud, as ``pulumi up`` does on AWS.

The objects are the ones :func:`provisioning.render.published_artifacts` lists (host tools,
pinned Litestream), with their sha256 in the object metadata like the Pulumi program puts them.
An object already there with the same sha256 is not uploaded again: moto keeps S3 in memory,
and the Litestream binary is 39 MB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from provisioning.artifacts import Artifact


def publish_artifacts(s3: Any, bucket: str, artifacts: Iterable[Artifact]) -> list[str]:
    """Upload each artifact missing from ``bucket``; return the keys uploaded."""
    uploaded = []
    for artifact in artifacts:
        with contextlib.suppress(s3.exceptions.ClientError):
            head = s3.head_object(Bucket=bucket, Key=artifact.key)
            if head.get("Metadata", {}).get("sha256") == artifact.sha256:
                continue
        s3.put_object(Bucket=bucket, Key=artifact.key, Body=artifact.data(),
                      Metadata={"sha256": artifact.sha256},
                      ContentType="application/octet-stream")
        uploaded.append(artifact.key)
    return uploaded
