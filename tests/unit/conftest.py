"""Shared fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from testinfra.backend.local import LocalBackend

from choiros_infra.host_batch import ReadAhead, install, uninstall
from infra import preview

# What print_at_end records: a report property, because xdist's workers send their reports'
# properties to the controller, while their own output is never shown.
SUMMARY_PROPERTY = "summary"


@pytest.fixture
def print_at_end(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """A line for the end of the run's output (the docs lint's rehearsal coverage), printed
    whether the test ran in this process or in an xdist worker."""
    return lambda line: record_property(SUMMARY_PROPERTY, line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [str(value) for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, "user_properties", ())
             if name == SUMMARY_PROPERTY]
    for line in dict.fromkeys(lines):
        terminalreporter.write_line(line)


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
