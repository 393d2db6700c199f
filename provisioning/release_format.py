"""Writing ChoirOS release tarballs on the workstation, checked by the host's own validator.

The format belongs to its consumer, ``choiros-deploy`` (see the docstring of
``host_tools/choiros_release.py``). This module writes it and then hands the bytes to that same
``inspect_release`` before anything reaches the output directory, so a release the host would
refuse is never written: there is one validator, the host's.

Tarballs are deterministic: entries sorted by name, a directory entry for every parent, mtime
RELEASE_MTIME, owner root (uid/gid 0), modes 0755 (executable) or 0644, PAX format, gzip header
with mtime 0 and no file name. The same files give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

from provisioning.host_tools.choiros_release import (
    inspect_release,
    sha256_line,
    tarball_name,
    valid_version,
)
from provisioning.host_tools.choiros_tool import USAGE, ToolError

RELEASE_MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z, fixed for reproducible tarballs

# name in the tarball -> (content, mode) for a file, or the target of a symbolic link (which
# the validator refuses: a release holds only regular files and directories).
Entry = tuple[bytes, int] | str


def tarball_bytes(files: dict[str, Entry]) -> bytes:
    """A deterministic .tar.gz of ``files``, with a directory entry for every parent."""
    dirs = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    buf = io.BytesIO()
    with (gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz,
          tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar):
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = (
                RELEASE_MTIME, 0, 0, "root", "root")
            entry = files.get(name)
            if entry is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(entry, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry, 0o777
                tar.addfile(info)
            else:
                data, info.mode = entry
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def files_from(sandbox: Path, dist: Path, version: str) -> dict[str, Entry]:
    """The tarball's entries from a build: the backend binary as ``sandbox`` (its execute bit
    kept), ``dist/`` as found (links stay links, for the validator to refuse), ``VERSION``."""
    if not sandbox.is_file() or sandbox.is_symlink():
        raise ToolError(f"--sandbox {sandbox} is not a regular file",
                        "give the built backend binary (target/release/sandbox)", USAGE)
    if not dist.is_dir() or dist.is_symlink():
        raise ToolError(f"--dist {dist} is not a directory",
                        "give the frontend build's dist/ directory (dx build --release)", USAGE)
    mode = 0o755 if os.stat(sandbox).st_mode & 0o100 else 0o644
    files: dict[str, Entry] = {"sandbox": (sandbox.read_bytes(), mode),
                               "VERSION": (f"{version}\n".encode(), 0o644)}
    for path in sorted(dist.rglob("*")):
        name = "dist/" + path.relative_to(dist).as_posix()
        if path.is_symlink():
            files[name] = os.readlink(path)
        elif path.is_file():
            files[name] = (path.read_bytes(), 0o755 if path.stat().st_mode & 0o100 else 0o644)
        elif not path.is_dir():
            files[name] = f"<{path.name} is neither a file nor a directory>"
    return files


def write_release(files: dict[str, Entry], version: str, out_dir: Path) -> Path:
    """Write ``choiros-<version>.tar.gz`` and its ``.sha256`` into ``out_dir``, only once the
    host's validator accepted the bytes; nothing is written on refusal. Returns the tarball."""
    if not valid_version(version):
        raise ToolError(f"invalid version {version!r}", "use up to 64 of [0-9A-Za-z._+-], "
                        "starting with a letter or digit, no '..' (e.g. 1.4.2)", USAGE)
    data = tarball_bytes(files)
    name = tarball_name(version)
    with tempfile.TemporaryDirectory(prefix="choiros-pack-") as tmp:
        candidate = Path(tmp) / name
        candidate.write_bytes(data)
        inspect_release(candidate, version)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    tarball = out_dir / name
    _write_atomic(tarball, data)
    _write_atomic(out_dir / f"{name}.sha256", sha256_line(digest, name).encode())
    return tarball


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
