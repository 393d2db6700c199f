"""The application's layout on disk: releases, the current symlink, data, logs and config with
their modes and owners (one ``stat`` for all of them)."""

from __future__ import annotations

import json

import pytest
from expectations import APP_ROOT, APP_USER, CONFIG_DIR, SECRETS_ENV_FILE, Expectations
from host_facts import FileFacts, file_facts_command, read_file_facts
from testinfra.host import Host

from choiros_infra.expect.probes import HostCommand

DIRECTORY = "directory"
REGULAR = "regular file"

# path -> (kind, mode, owner:group), as the runbook states them.
LAYOUT: dict[str, tuple[str, int, str]] = {
    APP_ROOT: (DIRECTORY, 0o755, "root:root"),
    f"{APP_ROOT}/releases": (DIRECTORY, 0o755, "root:root"),
    f"{APP_ROOT}/data": (DIRECTORY, 0o750, f"{APP_USER}:{APP_USER}"),
    f"{APP_ROOT}/logs": (DIRECTORY, 0o770, f"{APP_USER}:caddy"),
    CONFIG_DIR: (DIRECTORY, 0o750, f"root:{APP_USER}"),
    SECRETS_ENV_FILE: (REGULAR, 0o640, f"root:{APP_USER}"),
}
DATABASE = f"{APP_ROOT}/data/events.db"


def host_commands(config: pytest.Config) -> list[HostCommand]:
    """What verify reads ahead for this module (choiros_infra/verify_batch.py)."""
    return [file_facts_command([*LAYOUT, DATABASE])]


@pytest.fixture(scope="module")
def layout(host: Host) -> dict[str, FileFacts]:
    return read_file_facts(host, [*LAYOUT, DATABASE])


@pytest.fixture
def deployed(expected: Expectations) -> str:
    """The wanted release's version; a stack that wants none has nothing to check here
    (test_the_host_runs_the_wanted_release proves that nothing is deployed then)."""
    if expected.wanted is None:
        pytest.skip("the stack wants no release yet: nothing deployed")
    return expected.wanted.version


@pytest.mark.parametrize("path", list(LAYOUT))
def test_path_kind_mode_and_owner(layout: dict[str, FileFacts], path: str) -> None:
    """Runbook: 90-reference/host-reference.md#paths

    The app's directories and config have the runbook's modes and owners.
    """
    kind, mode, ownership = LAYOUT[path]
    facts = layout.get(path)
    assert facts is not None, f"{path} is missing"
    observed = (facts.kind, f"{facts.mode:04o}", facts.ownership)
    assert observed == (kind, f"{mode:04o}", ownership), (
        f"{path}: observed {' '.join(observed)}, expected {kind} {mode:04o} {ownership}")


def test_the_host_runs_the_wanted_release(host: Host, expected: Expectations) -> None:
    """Runbook: 20-deployment/03-application-release.md#verify

    The host runs the stack's wanted release (the pointer in its artifacts bucket), deployed
    with the wanted sha256; a stack that wants none has no release deployed.
    """
    wanted = expected.wanted
    status = json.loads(host.check_output("choiros-deploy --status"))
    if wanted is None:
        assert status["current"] is None, f"the stack wants no release, the host runs {status}"
        return
    assert status["current"] == {"version": wanted.version, "sha256": wanted.sha256}, (
        f"the host runs {status['current']}, the stack wants {wanted.version} "
        f"(sha256 {wanted.sha256})")


def test_current_points_at_the_deployed_release(host: Host, deployed: str) -> None:
    """Runbook: 90-reference/host-reference.md#paths

    The current symlink points at releases/<the wanted version>.
    """
    current = host.file(f"{APP_ROOT}/current")
    assert current.is_symlink, f"{APP_ROOT}/current is not a symlink"
    resolved = host.check_output("readlink -f %s", f"{APP_ROOT}/current")
    assert resolved == f"{APP_ROOT}/releases/{deployed}", f"current -> {resolved}"


@pytest.mark.parametrize(("name", "executable"), [("sandbox", True),
                                                  ("dist/index.html", False)])
def test_current_release_is_complete(host: Host, deployed: str, name: str,
                                     executable: bool) -> None:
    """Runbook: 90-reference/host-reference.md#paths

    The release holds the backend binary and the built frontend.
    """
    release_file = host.file(f"{APP_ROOT}/releases/{deployed}/{name}")
    assert release_file.is_file, f"releases/{deployed}/{name} is missing"
    if executable:
        assert release_file.mode & 0o111, f"releases/{deployed}/{name} is not executable"


def test_releases_are_pruned(host: Host, expected: Expectations) -> None:
    """Runbook: 20-deployment/03-application-release.md#b-deploy-it

    At most keep_releases releases are kept, each with its checksum record beside it, and
    no record outlives its release.
    """
    entries = host.file(f"{APP_ROOT}/releases").listdir()
    releases = [e for e in entries if host.file(f"{APP_ROOT}/releases/{e}").is_directory]
    assert len(releases) <= expected.spec.keep_releases, releases
    assert sorted(set(entries) - set(releases)) == sorted(f"{r}.sha256" for r in releases), (
        entries)


def test_database_belongs_to_the_backend(layout: dict[str, FileFacts], deployed: str) -> None:
    """Runbook: 30-operations/03-database.md#where-the-data-is

    The event store exists under data/ and belongs to choiros.
    """
    facts = layout.get(DATABASE)
    assert facts is not None, f"{DATABASE} is missing"
    assert facts.kind == REGULAR and facts.owner == APP_USER, (
        f"{DATABASE}: {facts.kind} owned by {facts.ownership}")
