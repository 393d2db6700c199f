"""Deploy, roll back and promote from the workstation, keeping the stack's wanted release true.

Each flow is a short list of steps, and the wanted release moves with the host:

deploy VERSION   prove the release is published whole (download, sha256) -> set the wanted
                 release (If-Match on the pointer read) -> ``choiros-deploy VERSION --sha256 S``
                 on the host (it health-checks and switches back by itself) -> the application
                 checks of verify -> mark the wanted release verified. A host that rolled
                 itself back, or refused, gets the wanted release set back to what it was.
rollback         the host's previous release (``choiros-deploy --status``) becomes the wanted
                 one -> ``choiros-rollback`` -> checks; set back if the host refused.
promote VERSION  only what staging runs, wanted and verified: the same bytes (sha256) are
                 copied into production's bucket and deployed there.

Exit codes follow ``choiros-deploy``'s: 0 live, healthy and checked; 1 the release failed its
health check and the host went back (the wanted release too), or the checks failed after a
healthy switch; 2 usage; 3 refused before anything changed; 4 the host needs an operator.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from choiros_infra.errors import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from choiros_infra.host_access import HostAccess, check_reachable, run_on_host
from choiros_infra.release_store import (
    EXIT_REFUSED,
    ReleaseError,
    ReleaseStore,
    WantedRelease,
    file_sha256,
)
from choiros_infra.stack_target import StackTarget
from choiros_infra.verify import RUNBOOKS, SUITES
from provisioning.host_tools.choiros_release import WANTED_KEY, Wanted, valid_version
from provisioning.host_tools.choiros_tool import BROKEN

EXIT_BROKEN = BROKEN
# The application checks a deploy runs: the release on the host, /health and the site
# through Caddy, and the release runbook's own expectations.
APP_CHECKS = (SUITES / "test_layout.py", SUITES / "test_caddy.py",
              RUNBOOKS / "20-deployment" / "03-application-release.md")

Say = Callable[[str], None]
# Runs the application checks against the host; returns verify's exit code.
Checker = Callable[[StackTarget, HostAccess], int]


@dataclass(frozen=True)
class Running:
    """What a host runs (``choiros-deploy --status``)."""

    current: Wanted | None
    previous: Wanted | None


def host_status(access: HostAccess) -> Running:
    code, out = run_on_host(access, ["sudo", "-n", "choiros-deploy", "--status"],
                            echo=lambda _line: None)
    try:
        doc = json.loads(out.strip().splitlines()[-1]) if code == 0 else None
    except (ValueError, IndexError):
        doc = None
    if not isinstance(doc, dict):
        raise ReleaseError(f"cannot read what {access.address} runs (choiros-deploy --status "
                           f"exited {code}: {out.strip()[-300:]})",
                           "is the host converged? choiros-infra diagnose shows its state")

    def release(key: str) -> Wanted | None:
        item = doc.get(key)
        if not isinstance(item, dict) or not item.get("version"):
            return None
        return Wanted(str(item["version"]), str(item.get("sha256") or ""))

    return Running(release("current"), release("previous"))


def _restore(store: ReleaseStore, before: WantedRelease | None, now: WantedRelease,
             say: Say) -> None:
    """Put the wanted release back to what it was before this command."""
    if before is None:
        store.s3.delete_object(Bucket=store.bucket, Key=WANTED_KEY)
        say("wanted release: unset again (it was never set)")
        return
    store.set_wanted(before.version, before.sha256, since=now, verified=before.verified)
    say(f"wanted release: back to {before.version}")


def _switch(stack: StackTarget, access: HostAccess, store: ReleaseStore, version: str,
            sha256: str, argv: list[str], check: Checker, say: Say) -> int:
    """Set the wanted release, run the switch on the host, check, and keep the pointer true."""
    before = store.wanted()
    now = store.set_wanted(version, sha256, since=before)
    say(f"wanted release: {version} (sha256 {sha256})")
    code, _ = run_on_host(access, argv, echo=lambda line: say(f"  {access.address}: {line}"))
    if code != EXIT_OK:
        if code == EXIT_BROKEN:
            say("the host could not go back by itself: it needs an operator "
                "(docs/runbooks/40-incident-response/02-incident-response.md)")
        _restore(store, before, now, say)
        return code if code in (EXIT_FAILED, EXIT_UNUSABLE, EXIT_REFUSED, EXIT_BROKEN) else (
            EXIT_BROKEN)
    say("application checks…")
    if (checked := check(stack, access)) != EXIT_OK:
        say(f"the application checks failed (exit {checked}); {version} stays the wanted "
            "release, not marked verified")
        return EXIT_FAILED
    store.set_wanted(version, sha256, since=now, verified=True)
    say(f"{version} is live, healthy and verified")
    return EXIT_OK


def deploy(stack: StackTarget, access: HostAccess, version: str, *, check: Checker,
           say: Say, sha256: str | None = None) -> int:
    if not valid_version(version):
        raise ReleaseError(f"invalid version {version!r}", "give a published version, e.g. "
                           "1.4.2", EXIT_UNUSABLE)
    store = stack.releases()
    say(f"checking release {version} in {store.url('releases/')}…")
    published = store.check_published(version)
    if sha256 is not None and sha256 != published:
        raise ReleaseError(f"release {version} in {store.url('releases/')} has sha256 "
                           f"{published}, not {sha256}", "promote the bytes staging verified")
    check_reachable(access)
    return _switch(stack, access, store, version, published,
                   ["sudo", "-n", "choiros-deploy", version, "--sha256", published], check, say)


def rollback(stack: StackTarget, access: HostAccess, *, check: Checker, say: Say) -> int:
    check_reachable(access)
    running = host_status(access)
    if running.previous is None or running.current is None:
        raise ReleaseError(f"{access.address} has no previous release to roll back to",
                           "choiros-infra deploy VERSION deploys a specific release")
    store = stack.releases()
    previous = running.previous
    sha256 = previous.sha256 or store.check_published(previous.version)
    say(f"rolling back {running.current.version} -> {previous.version}")
    return _switch(stack, access, store, previous.version, sha256,
                   ["sudo", "-n", "choiros-rollback"], check, say)


def promote(version: str, staging: StackTarget, staging_access: HostAccess,
            production: StackTarget, production_access: HostAccess, *, check: Checker,
            say: Say) -> int:
    """Deploy to production exactly the bytes staging runs and verified."""
    if staging.cfg.stack == production.cfg.stack:
        raise ReleaseError(f"staging and production are the same stack ({staging.cfg.stack})",
                           "promote from a staging stack to a production stack", EXIT_UNUSABLE)
    wanted = staging.releases().wanted()
    if wanted is None or wanted.version != version:
        raise ReleaseError(f"staging ({staging.cfg.stack}) does not want {version} (it wants "
                           f"{wanted.version if wanted else 'nothing'})",
                           f"deploy {version} to staging first, and verify it there")
    if not wanted.verified:
        raise ReleaseError(f"{version} did not pass verify on staging ({staging.cfg.stack})",
                           f"choiros-infra deploy {version} to staging again, until its "
                           "checks pass")
    check_reachable(staging_access)
    running = host_status(staging_access).current
    if running is None or running.version != version or running.sha256 != wanted.sha256:
        raise ReleaseError(f"staging's host runs {running.version if running else 'nothing'}, "
                           f"not {version} with sha256 {wanted.sha256}",
                           "deploy it to staging again, then promote")
    source, target = staging.releases(), production.releases()
    with tempfile.TemporaryDirectory(prefix="choiros-promote-") as tmp:
        tarball = source.download(version, Path(tmp))
        if (actual := file_sha256(tarball)) != wanted.sha256:
            raise ReleaseError(f"staging's bucket holds other bytes for {version} ({actual})",
                               "publish the build as a new version and start again")
        uploaded = target.publish(tarball, wanted.sha256)
    say(f"{version} (sha256 {wanted.sha256}) "
        + ("copied to " if uploaded else "already in ") + target.url("releases/"))
    return deploy(production, production_access, version, check=check, say=say,
                  sha256=wanted.sha256)
