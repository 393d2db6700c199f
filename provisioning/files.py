"""A file the host gets from its configuration, and the manifest that lists them all.

The manifest is what ``verify`` holds a live host to: every managed file with its mode, owner
and sha256, so a hand edit is found by path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"

    @property
    def data(self) -> bytes:
        return self.content.encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def manifest_entry(self) -> dict[str, str]:
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "owner": f"{self.owner}:{self.group}",
            "sha256": self.sha256,
        }
