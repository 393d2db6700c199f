"""A stack's releases in its artifacts bucket, as the workstation sees them: publish a release
once and for all, prove a published one is intact, and read or set the stack's wanted release.

Bucket layout (the host reads the same keys, see ``host_tools/choiros_release.py``):

  releases/<version>/choiros-<version>.tar.gz[.sha256]   a release; immutable once written
  wanted-release.json                                    {"version", "sha256", "set_at",
                                                          "set_by", "verified"}

Immutability holds without a race: every release object is written with ``If-None-Match: *``,
so S3 itself refuses a second writer; a refused write is then compared byte for byte, and the
same bytes count as published. The pointer is written with ``If-Match`` on the ETag it was read
with (or ``If-None-Match: *`` when there was none), so two deploys can't both think they won.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioning.host_tools.choiros_release import (
    WANTED_KEY,
    parse_sha256_file,
    parse_wanted,
    release_key,
    sha256_line,
    tarball_name,
)
from provisioning.host_tools.choiros_tool import REFUSED, ToolError

EXIT_REFUSED = REFUSED


class ReleaseError(Exception):
    """What went wrong and what to try; ``code`` 3 (refused, nothing changed) or 2 (usage)."""

    def __init__(self, problem: str, fix: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(problem)
        self.problem, self.fix, self.code = problem, fix, code


@dataclass(frozen=True)
class WantedRelease:
    """The stack's wanted release, with the ETag it was read at (None: never set)."""

    version: str
    sha256: str
    verified: bool = False
    set_at: str = ""
    set_by: str = ""
    etag: str | None = None

    def document(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256, "verified": self.verified,
                "set_at": self.set_at, "set_by": self.set_by}


def _code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _missing(error: Exception) -> bool:
    return _code(error) in ("NoSuchKey", "404", "NotFound")


def _precondition(error: Exception) -> bool:
    return _code(error) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar_sha256(tarball: Path) -> str:
    """The checksum in ``<tarball>.sha256``, checked against the tarball's bytes."""
    sidecar = tarball.with_name(tarball.name + ".sha256")
    try:
        said = parse_sha256_file(sidecar.read_text("utf-8", "replace"), tarball.name)
    except OSError as e:
        raise ReleaseError(f"{sidecar} cannot be read ({e.strerror})",
                           "keep the .sha256 that `choiros-infra release pack` wrote beside "
                           "the tarball", 2) from None
    except ToolError as e:
        raise ReleaseError(str(e), e.hint, 2) from None
    if (actual := file_sha256(tarball)) != said:
        raise ReleaseError(f"{tarball.name} does not match its .sha256 (file {actual}, "
                           f".sha256 {said})", "pack the release again", 2)
    return said


class ReleaseStore:
    """One stack's artifacts bucket, through an S3 client the caller made."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- releases

    def published_sha256(self, version: str) -> str | None:
        """The checksum object's digest of a published release; None if it is not there."""
        key = release_key(version) + ".sha256"
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(4096)
        except Exception as e:
            if _missing(e):
                return None
            raise ReleaseError(f"cannot read {self.url(key)}: {e}",
                               "check your AWS credentials and the bucket name") from e
        try:
            return parse_sha256_file(body.decode("utf-8", "replace"), tarball_name(version))
        except ToolError as e:
            raise ReleaseError(f"{self.url(key)}: {e}", "the release is damaged: publish "
                               "the build as a new version") from None

    def download(self, version: str, dest_dir: Path) -> Path:
        """The release's tarball, downloaded into ``dest_dir``."""
        key, dest = release_key(version), dest_dir / tarball_name(version)
        try:
            with dest.open("wb") as f:
                shutil.copyfileobj(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"], f,
                                   1 << 20)
        except Exception as e:
            if _missing(e):
                raise ReleaseError(f"release {version} is not in {self.url('releases/')}",
                                   f"publish it first: choiros-infra release publish "
                                   f"{tarball_name(version)} ...") from None
            raise ReleaseError(f"cannot download {self.url(key)}: {e}",
                               "check your AWS credentials and the bucket name") from e
        return dest

    def check_published(self, version: str) -> str:
        """Prove release ``version`` is in the bucket whole: download it and compare its
        sha256 with the published checksum. Returns the sha256."""
        said = self.published_sha256(version)
        if said is None:
            raise ReleaseError(f"release {version} is not in {self.url('releases/')}",
                               "publish it first: choiros-infra release publish "
                               f"{tarball_name(version)} --stack-file ... --target ...")
        with tempfile.TemporaryDirectory(prefix="choiros-check-") as tmp:
            actual = file_sha256(self.download(version, Path(tmp)))
        if actual != said:
            raise ReleaseError(f"release {version} in {self.url('releases/')} does not match "
                               f"its checksum (object {actual}, .sha256 {said})",
                               "the published release is damaged: publish the build as a new "
                               "version")
        return said

    def publish(self, tarball: Path, sha256: str) -> bool:
        """Put ``tarball`` and its checksum under ``releases/<version>/``. True: uploaded;
        False: the same bytes were already there (nothing uploaded). Other bytes under the
        version: ReleaseError, the bucket unchanged."""
        version = tarball.name.removeprefix("choiros-").removesuffix(".tar.gz")
        already = self.published_sha256(version)
        if already is not None and already != sha256:
            raise self._taken(version, already, sha256)
        key = release_key(version)
        uploaded = False
        if already is None:
            with tarball.open("rb") as body:
                uploaded = self._put_once(key, body, "application/gzip", sha256, version)
        line = sha256_line(sha256, tarball.name).encode()
        uploaded |= self._put_once(key + ".sha256", line, "text/plain", sha256, version)
        return uploaded

    def _put_once(self, key: str, body: Any, content_type: str, sha256: str,
                  version: str) -> bool:
        """Create ``key`` unless it exists (If-None-Match: *); if it does, it must hold the same
        release. True when this call wrote it."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                               ContentType=content_type)
            return True
        except Exception as e:
            if not _precondition(e):
                raise ReleaseError(f"cannot write {self.url(key)}: {e}",
                                   "check your AWS credentials (s3:PutObject on the "
                                   "artifacts bucket) and the bucket name") from e
        there = (self.published_sha256(version) if key.endswith(".sha256")
                 else self._object_sha256(key))
        if there != sha256:
            raise self._taken(version, there or "other bytes", sha256)
        return False

    def _object_sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        while chunk := body.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    def _taken(self, version: str, there: str, mine: str) -> ReleaseError:
        return ReleaseError(
            f"release {version} is already published with other bytes (bucket {there}, "
            f"yours {mine}); a version is immutable, nothing was uploaded",
            "give this build a new version: choiros-infra release pack ... --version <next>")

    # -- the wanted release

    def wanted(self) -> WantedRelease | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=WANTED_KEY)
        except Exception as e:
            if _missing(e):
                return None
            raise ReleaseError(f"cannot read {self.url(WANTED_KEY)}: {e}",
                               "check your AWS credentials and the bucket name") from e
        text = obj["Body"].read(65536)
        try:
            parsed = parse_wanted(text)
        except ToolError as e:
            raise ReleaseError(f"{self.url(WANTED_KEY)}: {e}", e.hint) from None
        doc = json.loads(text)
        return WantedRelease(parsed.version, parsed.sha256, verified=doc.get("verified") is True,
                             set_at=str(doc.get("set_at", "")), set_by=str(doc.get("set_by", "")),
                             etag=obj.get("ETag"))

    def set_wanted(self, version: str, sha256: str, *, since: WantedRelease | None,
                   verified: bool = False) -> WantedRelease:
        """Point the stack at a release, provided the pointer is still what ``since`` read."""
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        new = WantedRelease(version, sha256, verified=verified, set_at=now,
                            set_by=f"{getpass.getuser()}@{socket.gethostname()}")
        condition = {"IfMatch": since.etag} if since and since.etag else {"IfNoneMatch": "*"}
        try:
            put = self.s3.put_object(Bucket=self.bucket, Key=WANTED_KEY,
                                     Body=json.dumps(new.document(), sort_keys=True).encode(),
                                     ContentType="application/json", **condition)
        except Exception as e:
            if _precondition(e):
                raise ReleaseError(f"{self.url(WANTED_KEY)} changed while this command ran "
                                   "(another deploy?)", "look at what runs now (choiros-infra "
                                   "verify), then run the command again") from None
            raise ReleaseError(f"cannot write {self.url(WANTED_KEY)}: {e}",
                               "check your AWS credentials (s3:PutObject on the artifacts "
                               "bucket)") from e
        return WantedRelease(**{**new.__dict__, "etag": put.get("ETag")})
