"""The ChoirOS release format, as the host checks it and the workstation writes it.

Installed as /usr/local/lib/choiros/choiros_release.py (used by choiros_deploy.py); the
repository imports it as provisioning.host_tools.choiros_release (provisioning/release_format.py
packs releases and checks them with inspect_release; the release commands name the same keys).

Artifacts bucket keys, <version> matching VERSION_RE, without "..":
  releases/<version>/choiros-<version>.tar.gz         gzip-compressed tar
  releases/<version>/choiros-<version>.tar.gz.sha256  "<64 hex>  choiros-<version>.tar.gz\\n"
The tar holds at top level (a leading "./" is ignored) `sandbox`, a non-empty regular file with
the owner execute bit, `dist/index.html` (and other dist/ files), optionally `VERSION` (then its
stripped text must be <version>); only regular files and directories: no absolute names, "..",
links, devices or duplicates; at most MAX_MEMBERS entries and MAX_UNPACKED bytes. Owners and
modes in the tar are ignored: files unpack as root, 0755 if executable, else 0644.
A version is immutable: never upload other bytes under a version already used.

The wanted release of the stack lives outside the host, in the artifacts bucket:
  wanted-release.json  {"version": <version>, "sha256": <64 hex>, ...}
written only by the operator's deploy commands (the instance role may read it, never write it).
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # in the repository; on the host, a sibling module
    from provisioning.host_tools.choiros_tool import ToolError
else:
    from choiros_tool import ToolError

VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
WANTED_KEY = "wanted-release.json"
MAX_TARBALL, MAX_UNPACKED, MAX_MEMBERS = 512 << 20, 2 << 30, 20000
Entries = list[tuple[str, tarfile.TarInfo]]


def parse_sha256_file(text: str, name: str) -> str:
    m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](\S+)\n?", text)
    if not m or m.group(2) != name:
        raise ToolError(f"malformed checksum file for {name}",
                        f'make it one line "<sha256>  {name}" (sha256sum output)')
    return m.group(1).lower()


def valid_version(version: str) -> bool:
    return bool(VERSION_RE.fullmatch(version)) and ".." not in version


def tarball_name(version: str) -> str:
    return f"choiros-{version}.tar.gz"


def release_key(version: str) -> str:
    """The artifacts bucket key of a release's tarball; its checksum is this plus .sha256."""
    return f"releases/{version}/{tarball_name(version)}"


def sha256_line(digest: str, name: str) -> str:
    """The .sha256 file format (sha256sum's output), which parse_sha256_file reads back."""
    return f"{digest}  {name}\n"


@dataclass(frozen=True)
class Wanted:
    """The stack's wanted release: what its hosts must run."""

    version: str
    sha256: str


def parse_wanted(text: str | bytes) -> Wanted:
    """The wanted-release.json document (extra keys are kept by its writer, ignored here)."""
    try:
        doc = json.loads(text)
        version, digest = doc["version"], doc["sha256"]
    except (ValueError, TypeError, KeyError) as e:
        raise ToolError(f"{WANTED_KEY} is not a JSON object with version and sha256 ({e})",
                        "set it again with: choiros-infra deploy VERSION") from e
    if not (isinstance(version, str) and valid_version(version) and isinstance(digest, str)
            and SHA256_RE.fullmatch(digest)):
        raise ToolError(f"{WANTED_KEY} names an invalid version or sha256",
                        "set it again with: choiros-infra deploy VERSION")
    return Wanted(version, digest)


def inspect_release(tarball: Path, version: str) -> Entries:
    """Check a tarball against the release format, unpacking nothing: its entries."""

    def bad(why: str) -> ToolError:
        return ToolError(f"release {version} refused: {why}",
                         "rebuild it in the release format (see choiros_release.py) and upload it")

    if tarball.stat().st_size > MAX_TARBALL:
        raise bad("it is too large")
    try:
        with gzip.open(tarball) as gz:  # read it all: catches truncation and bad CRCs early
            total = 0
            while chunk := gz.read(1 << 20):
                if (total := total + len(chunk)) > MAX_UNPACKED + (64 << 20):
                    raise bad("it is too large")
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            vfile = [m for m in members if m.name in ("VERSION", "./VERSION") and m.isreg()]
            stream = tar.extractfile(vfile[0]) if vfile else None
            said = stream.read(256).decode("utf-8", "replace").strip() if stream else version
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise bad(f"not a valid .tar.gz ({e})") from e
    entries: Entries = []
    for m in members:
        name = m.name.removeprefix("./").rstrip("/")
        parts = name.split("/")
        if m.isdir() and name in ("", "."):
            continue
        if (name.startswith("/") or {"", ".", ".."} & set(parts)
                or any(ord(c) < 32 or c in "\\\x7f" for c in name)):
            raise bad(f"unsafe path {m.name!r}")
        if not (m.isreg() or m.isdir()) or m.issparse():
            raise bad(f"{m.name!r} is not a regular file or directory")
        entries.append((name, m))
    byname, files = dict(entries), {n for n, m in entries if not m.isdir()}
    if len(byname) != len(entries):
        raise bad("duplicate entries")
    if len(entries) > MAX_MEMBERS or sum(m.size for _, m in entries) > MAX_UNPACKED:
        raise bad("it is too large")
    for name in byname:
        parts = name.split("/")
        if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
            raise bad(f"{name!r} is inside a file")
    sandbox, index = byname.get("sandbox"), byname.get("dist/index.html")
    if sandbox is None or not sandbox.isreg():
        raise bad("no sandbox binary at the top level")
    if not sandbox.size:
        raise bad("sandbox is empty")
    if not sandbox.mode & 0o100:
        raise bad("sandbox is not executable")
    if index is None or not index.isreg():
        raise bad("dist/index.html is missing")
    if said != version:
        raise bad(f"its VERSION file says {said!r}")
    return entries

