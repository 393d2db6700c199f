"""Managed files: every file in the render manifest is on the host with the rendered sha256,
mode and owner. One test item per path, so a hand edit is reported by its path; one command
reads every file's stat and checksum."""

from __future__ import annotations

import pytest
from expectations import Expectations, for_run
from host_facts import FileFacts, file_facts, file_facts_command
from testinfra.host import Host

from choiros_infra.expect.probes import HostCommand


def _read(expected: Expectations) -> HostCommand:
    return file_facts_command([entry["path"] for entry in expected.rendering.manifest()],
                              checksums=True)


def host_commands(config: pytest.Config) -> list[HostCommand]:
    """What this module reads on the host (verify reads it ahead: choiros_infra/verify_batch)."""
    return [_read(for_run(config))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "managed_path" in metafunc.fixturenames:
        paths = [entry["path"] for entry in for_run(metafunc.config).rendering.manifest()]
        metafunc.parametrize("managed_path", paths)


@pytest.fixture(scope="module")
def on_host(host: Host, expected: Expectations) -> dict[str, FileFacts]:
    return file_facts(host.run(*_read(expected)).stdout)


def test_managed_file(on_host: dict[str, FileFacts], expected: Expectations,
                      managed_path: str) -> None:
    """Runbook: 20-deployment/02-infrastructure.md#verify

    The file is as rendered: sha256, mode, owner (a hand edit is drift: redeploy, or change the
    stack).
    """
    entry = next(e for e in expected.rendering.manifest() if e["path"] == managed_path)
    facts = on_host.get(managed_path)
    assert facts is not None, f"{managed_path}: missing on the host"
    problems = []
    if facts.sha256 != entry["sha256"]:
        problems.append(f"content changed (sha256 {facts.sha256 or facts.kind}, "
                        f"rendered {entry['sha256']})")
    if f"{facts.mode:04o}" != entry["mode"]:
        problems.append(f"mode {facts.mode:04o}, rendered {entry['mode']}")
    if facts.ownership != entry["owner"]:
        problems.append(f"owner {facts.ownership}, rendered {entry['owner']}")
    assert not problems, f"{managed_path}: " + "; ".join(problems)
