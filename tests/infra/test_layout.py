"""The application's layout on disk: releases, the current symlink, data, logs and config with
their modes and owners (one ``stat`` for all of them).

Every command here is declared in ``host_commands``, so verify reads them all ahead, though the
wanted release is only read (from the stack's bucket) when a check runs: the releases'
files are read for every release, and the check picks the wanted one."""

from __future__ import annotations

import json

import pytest
from expectations import APP_ROOT, APP_USER, CONFIG_DIR, SECRETS_ENV_FILE, Expectations
from host_facts import (
    FileFacts,
    entries_command,
    entry_types,
    file_facts_command,
    files_in_every_subdirectory_command,
    read_file_facts,
    stat_lines,
)
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
RELEASES = f"{APP_ROOT}/releases"
CURRENT = f"{APP_ROOT}/current"
# What a release holds: name -> must be executable.
RELEASE_FILES = {"sandbox": True, "dist/index.html": False}
RELEASE_FILE_FACTS = files_in_every_subdirectory_command(RELEASES, list(RELEASE_FILES))
RELEASE_ENTRIES = entries_command(RELEASES)
CURRENT_IS_LINK = HostCommand("test -L %s", (CURRENT,))
CURRENT_TARGET = HostCommand("readlink -f %s", (CURRENT,))


def host_commands(config: pytest.Config) -> list[HostCommand]:
    """What verify reads ahead for this module (choiros_infra/verify_batch.py)."""
    return [file_facts_command([*LAYOUT, DATABASE]), RELEASE_FILE_FACTS, RELEASE_ENTRIES,
            CURRENT_IS_LINK, CURRENT_TARGET]


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
    assert host.run(*CURRENT_IS_LINK).rc == 0, f"{CURRENT} is not a symlink"
    resolved = host.check_output(*CURRENT_TARGET)
    assert resolved == f"{RELEASES}/{deployed}", f"current -> {resolved}"


@pytest.mark.parametrize(("name", "executable"), list(RELEASE_FILES.items()))
def test_current_release_is_complete(host: Host, deployed: str, name: str,
                                     executable: bool) -> None:
    """Runbook: 90-reference/host-reference.md#paths

    The release holds the backend binary and the built frontend.
    """
    release_file = stat_lines(host.run(*RELEASE_FILE_FACTS).stdout).get(
        f"{RELEASES}/{deployed}/{name}")
    assert release_file is not None and release_file.kind == REGULAR, (
        f"releases/{deployed}/{name} is missing")
    if executable:
        assert release_file.mode & 0o111, f"releases/{deployed}/{name} is not executable"


def test_releases_are_pruned(host: Host, expected: Expectations) -> None:
    """Runbook: 20-deployment/03-application-release.md#b-deploy-it

    At most keep_releases releases are kept, each with its checksum record beside it, and
    no record outlives its release.
    """
    entries = entry_types(host.check_output(*RELEASE_ENTRIES))
    releases = [name for name, kind in entries.items() if kind == "d"]
    assert len(releases) <= expected.spec.keep_releases, releases
    assert sorted(set(entries) - set(releases)) == sorted(f"{r}.sha256" for r in releases), (
        sorted(entries))


def test_database_belongs_to_the_backend(layout: dict[str, FileFacts], deployed: str) -> None:
    """Runbook: 30-operations/03-database.md#where-the-data-is

    The event store exists under data/ and belongs to choiros.
    """
    facts = layout.get(DATABASE)
    assert facts is not None, f"{DATABASE} is missing"
    assert facts.kind == REGULAR and facts.owner == APP_USER, (
        f"{DATABASE}: {facts.kind} owned by {facts.ownership}")
