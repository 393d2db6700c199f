"""A file the host gets from its configuration, and the manifest that lists them all.

The manifest is what ``verify`` holds a live host to: every managed file with its mode, owner
and sha256, so a hand edit is found by path. How a file reaches the host is its ``delivery``:
``inline`` files are written by cloud-init from the user-data itself; ``artifact`` files (the
host tools) are fetched from the artifacts bucket by key and checked against the same sha256
(see :mod:`provisioning.artifacts`). Either way the file on the host has these bytes.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from typing import Literal

from provisioning.artifacts import Artifact

Delivery = Literal["inline", "artifact"]


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    delivery: Delivery = "inline"

    @property
    def data(self) -> bytes:
        return self.content.encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def artifact_key(self) -> str:
        """Its object key when delivered as an artifact: content-addressed, so immutable."""
        return f"host-tools/{self.sha256}/{posixpath.basename(self.path)}"

    def artifact(self) -> Artifact:
        return Artifact(path=self.path, key=self.artifact_key, sha256=self.sha256,
                        mode=self.mode, owner=self.owner, group=self.group, text=self.content)

    def manifest_entry(self) -> dict[str, str]:
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "owner": f"{self.owner}:{self.group}",
            "sha256": self.sha256,
            "delivery": self.delivery,
        }
