"""Build and upload ChoirOS release artifacts from the stand-in application (kitchen/fixture_app).

The release format is defined by its consumer, choiros-deploy (docstring of
provisioning/host_tools/choiros_host.py). This module produces exactly that format:

  choiros-<version>.tar.gz          gzip-compressed tar with, at top level,
                                      VERSION          "<version>\\n"
                                      dist/index.html  the stand-in page, @VERSION@ replaced
                                      sandbox          kitchen/fixture_app/sandbox.py, mode 0755
                                      UNHEALTHY        only with unhealthy=True
                                    (plus a `dist` directory entry and any other dist/ files)
  choiros-<version>.tar.gz.sha256   "<64 lowercase hex>  choiros-<version>.tar.gz\\n"

uploaded as releases/<version>/<file name> in the artifacts bucket.

Builds are deterministic: entries sorted by name, mtime RELEASE_MTIME, uid/gid 0 (root), modes
0755/0644, PAX format, gzip header with mtime 0 and no file name. Same input, same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Protocol

FIXTURE_DIR = Path(__file__).resolve().parent / "fixture_app"
# The same rule as choiros_host.VERSION_RE (a unit test keeps them equal); ".." is refused too.
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
RELEASE_MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z, fixed for reproducible tarballs
TARBALL_RE = re.compile(r"choiros-(.+)\.tar\.gz")


class S3Putter(Protocol):
    def put_object(self, **kwargs: Any) -> Any: ...


def release_files(version: str, *, unhealthy: bool = False) -> dict[str, tuple[bytes, int]]:
    """{name in the tarball: (content, mode)} for the stand-in release of `version`."""
    files = {
        "VERSION": (f"{version}\n".encode(), 0o644),
        "sandbox": ((FIXTURE_DIR / "sandbox.py").read_bytes(), 0o755),
    }
    dist = FIXTURE_DIR / "dist"
    for path in sorted(dist.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".html":
                data = data.replace(b"@VERSION@", version.encode())
            files["dist/" + path.relative_to(dist).as_posix()] = (data, 0o644)
    if unhealthy:
        files["UNHEALTHY"] = (b"made by build_release(..., unhealthy=True)\n", 0o644)
    return files


def tarball_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic .tar.gz of files, with a directory entry for every parent directory."""
    dirs = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    buf = io.BytesIO()
    with (gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz,
          tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar):
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = (
                RELEASE_MTIME, 0, 0, "root", "root")
            if name in dirs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data, info.mode = files[name]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_release(version: str, out_dir: Path, *, unhealthy: bool = False) -> Path:
    """Write choiros-<version>.tar.gz and its .sha256 into out_dir; return the tarball's path."""
    if not VERSION_RE.fullmatch(version) or ".." in version:
        raise ValueError(f"invalid release version {version!r}")
    data = tarball_bytes(release_files(version, unhealthy=unhealthy))
    out_dir.mkdir(parents=True, exist_ok=True)
    tarball = out_dir / f"choiros-{version}.tar.gz"
    _write_atomic(tarball, data)
    digest = hashlib.sha256(data).hexdigest()
    _write_atomic(out_dir / f"{tarball.name}.sha256", f"{digest}  {tarball.name}\n".encode())
    return tarball


def release_keys(tarball: Path) -> tuple[str, str]:
    """The bucket keys of a tarball and of its checksum."""
    m = TARBALL_RE.fullmatch(tarball.name)
    if not m:
        raise ValueError(f"{tarball.name} is not named choiros-<version>.tar.gz")
    key = f"releases/{m.group(1)}/{tarball.name}"
    return key, f"{key}.sha256"


def upload_release(s3_client: S3Putter, bucket: str, tarball: Path) -> list[str]:
    """Put a built tarball and then its .sha256 sibling into bucket; return the keys."""
    key, sha_key = release_keys(tarball)
    sha_file = tarball.with_name(f"{tarball.name}.sha256")
    s3_client.put_object(Bucket=bucket, Key=key, Body=tarball.read_bytes(),
                         ContentType="application/gzip")
    s3_client.put_object(Bucket=bucket, Key=sha_key, Body=sha_file.read_bytes(),
                         ContentType="text/plain")
    return [key, sha_key]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build a stand-in ChoirOS release tarball.")
    p.add_argument("version")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--unhealthy", action="store_true", help="a release whose /health is 503")
    args = p.parse_args(argv)
    try:
        print(build_release(args.version, args.out_dir, unhealthy=args.unhealthy))
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
