"""The stand-in ChoirOS release, built from kitchen/fixture_app in the real release format.

The kitchen cannot build the Rust backend, so its releases carry the stand-in app
(kitchen/fixture_app/sandbox.py) as ``sandbox`` and its page as ``dist/``. They are written by
the same code as ``choiros-infra release pack`` (provisioning/release_format.py), so the host's
own validator has accepted every one before it exists:

  choiros-<version>.tar.gz          VERSION          "<version>\\n"
                                    dist/index.html  the stand-in page, @VERSION@ replaced
                                    sandbox          kitchen/fixture_app/sandbox.py, mode 0755
                                    UNHEALTHY        only with unhealthy=True
  choiros-<version>.tar.gz.sha256   "<64 lowercase hex>  choiros-<version>.tar.gz\\n"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provisioning.host_tools.choiros_tool import ToolError
from provisioning.release_format import Entry, write_release

FIXTURE_DIR = Path(__file__).resolve().parent / "fixture_app"


def release_files(version: str, *, unhealthy: bool = False) -> dict[str, Entry]:
    """{name in the tarball: (content, mode)} for the stand-in release of `version`."""
    files: dict[str, Entry] = {
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


def build_release(version: str, out_dir: Path, *, unhealthy: bool = False) -> Path:
    """Write choiros-<version>.tar.gz and its .sha256 into out_dir; return the tarball's path.
    An invalid version raises ValueError."""
    try:
        return write_release(release_files(version, unhealthy=unhealthy), version, out_dir)
    except ToolError as e:
        raise ValueError(str(e)) from None


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
