"""Shared fixtures for the unit tests."""

from __future__ import annotations

import pytest

from infra import preview


@pytest.fixture
def pulumi_mocks() -> preview.Recorder:
    """Fresh recording Pulumi mocks (project choiros, stack example, eu-west-1), installed
    before the test body runs: tests that declare resources take this fixture and are
    decorated with ``@pulumi.runtime.test``."""
    return preview.install("choiros", "example", "eu-west-1")
