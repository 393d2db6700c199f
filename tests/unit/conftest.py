"""Shared fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testinfra.backend.local import LocalBackend

from choiros_infra.host_batch import ReadAhead, install, uninstall
from infra import preview


@pytest.fixture
def pulumi_mocks() -> preview.Recorder:
    """Fresh recording Pulumi mocks (project choiros, stack example, eu-west-1), installed
    before the test body runs: tests that declare resources take this fixture and are
    decorated with ``@pulumi.runtime.test``."""
    return preview.install("choiros", "example", "eu-west-1")


@pytest.fixture
def read_ahead() -> Iterator[ReadAhead]:
    """verify's read-ahead installed on testinfra's local backend: commands a test runs
    through ``testinfra.get_host("local://")`` are answered by the host program here."""
    state = ReadAhead()
    original = install(state, LocalBackend)
    try:
        yield state
    finally:
        uninstall(LocalBackend, original)
