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


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws warns about its own deprecated V2 classes when its modules are imported,
    # whether or not a program uses them. Use of deprecated resources or properties is caught
    # by the plan tests instead: those log a Pulumi warning the plan records.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws")
