"""Library of the ChoirOS host tools choiros-deploy and choiros-rollback.

Installed as /usr/local/lib/choiros/choiros_deploy.py beside choiros_tool.py (config, errors,
AWS clients, the lock, the health wait) and choiros_release.py (the release format it checks).

`choiros-deploy --wanted` deploys the stack's wanted release (choiros_release.WANTED_KEY in the
artifacts bucket): at first boot, a new or replaced host runs what the stack wants, not a
version frozen into its user-data.

Host layout in app_root: releases/<version>/ and releases/<version>.sha256 (the checksum it was
deployed with, in the .sha256 file format), current and previous (relative symlinks to
releases/<version>, replaced atomically), deploy-history.jsonl (a JSON object per switch:
time, action, from, to, sha256, result, reason). A refused release changes nothing on the host.
`choiros-deploy --status` prints what runs (read-only, no lock).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:  # in the repository; on the host, a sibling module
    from provisioning.host_tools.choiros_release import (
        WANTED_KEY,
        Entries,
        Wanted,
        inspect_release,
        parse_sha256_file,
        parse_wanted,
        release_key,
        sha256_line,
        tarball_name,
        valid_version,
    )
else:
    from choiros_release import (
        WANTED_KEY,
        Entries,
        Wanted,
        inspect_release,
        parse_sha256_file,
        parse_wanted,
        release_key,
        sha256_line,
        tarball_name,
        valid_version,
    )
if TYPE_CHECKING or __package__:  # in the repository; on the host, a sibling module
    from provisioning.host_tools.choiros_tool import (
        BROKEN,
        OK,
        UNDONE,
        USAGE,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        locked,
        run_tool,
        wait_healthy,
    )
else:
    from choiros_tool import (
        BROKEN,
        OK,
        UNDONE,
        USAGE,
        Config,
        ToolError,
        aws_client,
        aws_errors,
        locked,
        run_tool,
        wait_healthy,
    )

def read_wanted(cfg: Config) -> Wanted | None:
    """The stack's wanted release from the artifacts bucket; None when none was ever set."""
    if not cfg.artifacts_bucket:
        raise ToolError("artifacts_bucket is not set", "set it in host.json", USAGE)
    try:
        body = aws_client(cfg, "s3").get_object(Bucket=cfg.artifacts_bucket, Key=WANTED_KEY)
        return parse_wanted(body["Body"].read(65536))
    except aws_errors() as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise ToolError(f"cannot read s3://{cfg.artifacts_bucket}/{WANTED_KEY}: {e}",
                        "check the instance role, the bucket and the network") from e


def fetch_release(cfg: Config, version: str, workdir: Path) -> tuple[Path, str]:
    """Download a release into workdir: (tarball, sha256 from its .sha256 object)."""
    name, bucket = tarball_name(version), cfg.artifacts_bucket
    if not bucket:
        raise ToolError("artifacts_bucket is not set", "set it in host.json", USAGE)
    key, dest, s3 = release_key(version), workdir / name, aws_client(cfg, "s3")
    try:
        sha_text = s3.get_object(Bucket=bucket, Key=key + ".sha256")["Body"].read(4096)
        with dest.open("wb") as f:
            shutil.copyfileobj(s3.get_object(Bucket=bucket, Key=key)["Body"], f, 1 << 20)
    except aws_errors() as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise ToolError(f"release {version} not found at s3://{bucket}/{key}[.sha256]",
                            f"list releases with: aws s3 ls s3://{bucket}/releases/") from e
        raise ToolError(f"cannot download s3://{bucket}/{key}: {e}",
                        "check the instance role, the bucket and the network") from e
    return dest, parse_sha256_file(sha_text.decode("utf-8", "replace"), name)


def install_release(root: Path, tarball: Path, entries: Entries, version: str,
                    digest: str) -> None:
    """Write checked entries afresh (owner root, no tar metadata) into releases/.incoming-*,
    then rename that to releases/<version>, and record its checksum beside it."""
    releases = root / "releases"
    releases.mkdir(0o755, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=releases))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for name, m in entries:
                target = staging / name
                target.parent.mkdir(0o755, parents=True, exist_ok=True)
                if m.isdir():
                    target.mkdir(0o755, exist_ok=True)
                    continue
                mode = 0o755 if m.mode & 0o111 else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, mode), "wb") as out:
                    if src := tar.extractfile(m):
                        shutil.copyfileobj(src, out, 1 << 20)
        staging.chmod(0o755)
        final, trash = releases / version, releases / f".trash-{version}-{os.getpid()}"
        if final.exists() or final.is_symlink():  # an earlier copy that is not current
            os.rename(final, trash)
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
        checksum = releases / f"{version}.sha256"
        checksum.with_name(f".{checksum.name}.new").write_text(
            sha256_line(digest, tarball_name(version)), encoding="utf-8")
        os.replace(checksum.with_name(f".{checksum.name}.new"), checksum)
        os.sync()
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ToolError(f"cannot unpack release {version}: {e}",
                        f"check free space in {root}") from e


def prune(root: Path, keep: int) -> list[str]:
    """Keep current, previous, the newest others up to `keep`; drop temp dirs."""
    kept = {v for v in (link(root, "current"), link(root, "previous")) if v}
    dirs = [p for p in (root / "releases").iterdir() if p.is_dir() and not p.is_symlink()]
    removed = []
    for p in sorted(dirs, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        if p.name.startswith("."):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name not in kept and len(kept) < keep:
            kept.add(p.name)
        elif p.name not in kept:
            shutil.rmtree(p)
            (p.parent / f"{p.name}.sha256").unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def installed_sha256(root: Path, version: str | None) -> str | None:
    """The checksum a release on this host was deployed with (None: unknown or none)."""
    if version is None:
        return None
    try:
        text = (root / "releases" / f"{version}.sha256").read_text("utf-8", "replace")
        return parse_sha256_file(text, tarball_name(version))
    except (OSError, ToolError):
        return None


def status(root: Path) -> dict[str, Any]:
    """What this host runs, as the deploy commands and verify read it."""
    def release(name: str) -> dict[str, str | None] | None:
        version = link(root, name)
        return None if version is None else {"version": version,
                                             "sha256": installed_sha256(root, version)}
    return {"current": release("current"), "previous": release("previous")}


# -- switching, restarting, health

def link(root: Path, name: str) -> str | None:  # the version current or previous is
    try:
        return Path(os.readlink(root / name)).name
    except OSError:
        return None


def switch(root: Path, current: str, previous: str | None) -> None:
    """Point previous, then current, at releases/<version>: new link, atomic rename."""
    for name, version in (("previous", previous), ("current", current)):
        (root / f".{name}.new").unlink(missing_ok=True)
        if version is None:
            (root / name).unlink(missing_ok=True)
            continue
        os.symlink(f"releases/{version}", root / f".{name}.new")
        os.replace(root / f".{name}.new", root / name)


def restart_and_check(cfg: Config) -> str | None:
    """Restart the backend and wait for health: None, or why it is not healthy."""
    cmd = [os.environ.get("CHOIROS_SYSTEMCTL", "systemctl"), "restart", cfg.backend_unit]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)} failed: {e}"
    if r.returncode:
        return f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-300:]}"
    return wait_healthy(cfg.health_url, cfg.health_timeout_seconds)


def record(root: Path, action: str, frm: str | None, to: str, reason: str | None,
           result: str = "") -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    line = {"time": now, "action": action, "from": frm, "to": to,
            "sha256": installed_sha256(root, to),
            "result": result or ("failed" if reason else "ok"), "reason": reason}
    with (root / "deploy-history.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def where_to_look(cfg: Config, reason: str) -> str:
    """The first place to look when the backend did not come up: its logs, unless systemd
    never started it because a unit it requires failed (on a new host, typically the restore
    at boot refusing the backup), which no backend log mentions."""
    if "dependency job" in reason.lower():
        return ("systemctl --failed (a unit the backend requires failed; for "
                "choiros-restore-at-boot: journalctl -u choiros-restore-at-boot -o cat and the "
                "database runbook)")
    return cfg.backend_logs


def go_live(cfg: Config, action: str, new: str, old: str | None, old_previous: str | None) -> int:
    """Make new current (old previous), restart, check; if unhealthy switch back, raise."""
    root = cfg.app_root
    switch(root, new, old)
    print(f"{action}: current -> {new} (was {old or 'none'}); restarting {cfg.backend_unit}")
    reason = restart_and_check(cfg)
    record(root, action, old, new, reason)
    if reason is None:
        print(f"{action}: {new} is live and healthy")
        return OK
    logs = where_to_look(cfg, reason)
    what = f"{action} to {new} failed its health check ({reason})"
    if old is None:
        raise ToolError(f"{what}; there is no earlier release to go back to",
                        f"{logs}; then deploy a fixed release", BROKEN)
    print(f"{action}: {new} is unhealthy; switching back to {old}")
    switch(root, old, old_previous)
    again = restart_and_check(cfg)
    record(root, "auto-rollback", new, old, again or reason, "failed" if again else "ok")
    if again:
        raise ToolError(f"{what}, and {old} is unhealthy too ({again})",
                        f"{logs}; choiros-deploy <a known good version>", BROKEN)
    raise ToolError(f"{what}; rolled back to {old}, which is healthy",
                    f"{logs} to see why {new} failed", UNDONE)


def deploy_wanted(cfg: Config) -> int:
    """Deploy the stack's wanted release (first boot, or a host catching up)."""
    wanted = read_wanted(cfg)
    if wanted is None:
        print(f"No wanted release is set in s3://{cfg.artifacts_bucket}/{WANTED_KEY}; "
              "nothing to deploy (choiros-infra deploy VERSION sets it).")
        return OK
    print(f"The stack wants release {wanted.version} (sha256 {wanted.sha256}).")
    return deploy(cfg, wanted.version, wanted.sha256)


def deploy(cfg: Config, release: str, sha256: str | None = None) -> int:
    root, local, version = cfg.app_root, release.endswith(".tar.gz") or "/" in release, release
    if local:
        m = re.fullmatch(r"choiros-(.+)\.tar\.gz", Path(release).name)
        version = m.group(1) if m else ""
    if not valid_version(version):
        raise ToolError(f"invalid release {release!r}", "give a version (up to 64 of "
                        "[0-9A-Za-z._+-]) or a path to choiros-<version>.tar.gz", USAGE)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ToolError("--sha256 must be 64 hex digits", code=USAGE)
    with locked(root):
        old, old_previous = link(root, "current"), link(root, "previous")
        if old == version and sha256 is not None and (
                installed_sha256(root, old) not in (None, sha256.lower())):
            raise ToolError(f"release {version} is current with other bytes (sha256 "
                            f"{installed_sha256(root, old)}, not {sha256.lower()})",
                            "a version is immutable: publish the new bytes as a new version")
        if old == version:
            print(f"Release {version} is already current; nothing to do.")
            return OK
        with tempfile.TemporaryDirectory(prefix="choiros-deploy-") as tmp:
            if local:
                sidecar = Path(release + ".sha256")
                if not Path(release).is_file() or not (sha256 or sidecar.is_file()):
                    raise ToolError(f"{release} or its checksum is missing", "pass --sha256 HEX"
                                    f" or put {sidecar.name} beside it", USAGE)
                tarball = Path(shutil.copy(release, tmp))  # check and unpack the same bytes
                expected = (sha256 or parse_sha256_file(
                    sidecar.read_text("utf-8", "replace"), tarball.name)).lower()
            else:
                tarball, expected = fetch_release(cfg, version, Path(tmp))
                if sha256 and sha256.lower() != expected:
                    raise ToolError(f"the bucket's checksum of {version} is not --sha256")
            with tarball.open("rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
            if actual != expected:
                raise ToolError(f"checksum mismatch for {tarball.name}: expected {expected}, got "
                                f"{actual}", "the artifact is corrupt; build and upload it again")
            install_release(root, tarball, inspect_release(tarball, version), version, actual)
        code = go_live(cfg, "deploy", version, old, old_previous)
        if removed := prune(root, cfg.keep_releases):
            print(f"Removed old releases: {', '.join(removed)}")
        return code


def rollback(cfg: Config) -> int:
    with locked(root := cfg.app_root):
        cur, prev = link(root, "current"), link(root, "previous")
        if not prev or prev == cur or not (root / "releases" / prev / "sandbox").is_file():
            raise ToolError("there is no previous release to roll back to",
                            "choiros-deploy VERSION deploys a specific release")
        return go_live(cfg, "rollback", prev, cur, prev)


def deploy_main(argv: list[str] | None = None) -> int:
    def setup(p: argparse.ArgumentParser) -> None:
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("release", metavar="VERSION|PATH", nargs="?", help="a version in the "
                          "bucket, or a path to choiros-<version>.tar.gz (has a / or ends in "
                          ".tar.gz)")
        what.add_argument("--wanted", action="store_true", help=f"deploy the stack's wanted "
                          f"release ({WANTED_KEY} in the artifacts bucket; none set: nothing "
                          "to do)")
        what.add_argument("--status", action="store_true", help="print what runs, as JSON "
                          "({current, previous: {version, sha256}}); changes nothing")
        p.add_argument("--sha256", metavar="HEX", help="expected checksum (default: .sha256 file)")

    def action(cfg: Config, a: argparse.Namespace) -> int:
        if a.status:
            print(json.dumps(status(cfg.app_root), sort_keys=True))
            return OK
        if a.wanted:
            if a.sha256:
                raise ToolError("--wanted takes its sha256 from the pointer", "drop --sha256",
                                USAGE)
            return deploy_wanted(cfg)
        return deploy(cfg, a.release, a.sha256)

    os.umask(0o022)
    return run_tool(argv, "choiros-deploy", "Deploy a ChoirOS release: check, unpack, switch, "
                    "restart, health-check;\nswitch back when it is unhealthy.", action, setup)


def rollback_main(argv: list[str] | None = None) -> int:
    return run_tool(argv, "choiros-rollback", "Switch to the previous ChoirOS release, restart, "
                    "health-check;\nswitch back when it is unhealthy.",
                    lambda cfg, a: rollback(cfg))

