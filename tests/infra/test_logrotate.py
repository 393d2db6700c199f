"""Log rotation: logrotate accepts the backend's rotation and would rotate both logs."""

from __future__ import annotations

import pytest
from expectations import APP_ROOT, Expectations
from host_facts import logrotate_errors
from testinfra.host import Host

from choiros_infra.expect.probes import HostCommand

CONFIG = "/etc/logrotate.d/choiros"
BACKEND_LOGS = (f"{APP_ROOT}/logs/backend.log", f"{APP_ROOT}/logs/backend-error.log")
DRY_RUN = HostCommand("logrotate -d %s 2>&1", (CONFIG,))


def host_commands(config: pytest.Config) -> list[HostCommand]:
    """What this module reads on the host (verify reads it ahead: choiros_infra/verify_batch)."""
    return [DRY_RUN]


@pytest.fixture(scope="module")
def dry_run(host: Host) -> tuple[int, str]:
    """``logrotate -d``: parses the config and says what it would do, changing nothing."""
    result = host.run(*DRY_RUN)
    return result.rc, result.stdout


def test_logrotate_config_is_clean(dry_run: tuple[int, str]) -> None:
    """Runbook: 30-operations/02-logs.md#where-each-log-is

    `logrotate -d /etc/logrotate.d/choiros` reports no error (a group-writable logs/ needs the
    config's `su` line, or both logs are skipped).
    """
    rc, output = dry_run
    errors = logrotate_errors(output)
    assert rc == 0 and not errors, f"logrotate -d exit {rc}:\n" + "\n".join(errors or [output])


def test_logrotate_rotates_the_backend_logs(dry_run: tuple[int, str],
                                           expected: Expectations) -> None:
    """Runbook: 30-operations/02-logs.md#where-each-log-is

    Both backend logs, daily, 14 kept.
    """
    _, output = dry_run
    keep = f"({expected.spec.log_rotation.rotate} rotations)"
    assert keep in output, f"logrotate -d does not keep {keep}:\n{output[-800:]}"
    missing = [log for log in BACKEND_LOGS if f"considering log {log}" not in output]
    assert not missing, f"logrotate -d does not consider {missing}"
