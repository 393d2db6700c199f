"""Services: what runs, what starts at boot, and the backend's systemd sandbox as systemd
applies it (``systemctl show``), not as the drop-in file says."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from expectations import (
    APP_USER,
    BACKEND_UNIT,
    HARDENING_DROP_IN,
    MAX_BACKEND_EXPOSURE,
    RUNNING_UNITS,
    SECRETS_UNIT,
    Expectations,
    for_run,
)
from host_facts import exposure, key_values
from testinfra.host import Host

from choiros_infra.expect.kinds import service
from choiros_infra.expect.probes import HostCommand

# How `systemctl show` spells a value the drop-in writes differently.
SHOWN_AS = {("SystemCallErrorNumber", "EPERM"): "1"}
# Set more than once (a list systemd merges): checked by its effect below, not by text.
MERGED = frozenset({"SystemCallFilter"})
# Calls the sandbox must refuse: @privileged and @resources, which the drop-in removes.
REFUSED_SYSCALLS = ("mount", "umount2", "reboot", "swapon", "pivot_root", "chroot",
                    "init_module", "kexec_load", "setuid", "ptrace", "bpf", "setrlimit",
                    "sched_setscheduler", "setpriority")
APT_TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer")

# What this module reads on the host (verify reads it all ahead, in one round trip:
# choiros_infra/verify_batch.py).
SECRETS_STATE = HostCommand("systemctl show %s -p UnitFileState,ActiveState,SubState,Result",
                            (SECRETS_UNIT,))
FAILED_UNITS = HostCommand("systemctl list-units --state=failed --no-legend --plain")
BACKEND_OWNER = HostCommand('ps -o user= -p "$(systemctl show -p MainPID --value %s)"',
                            (BACKEND_UNIT,))
SYSCALL_FILTER = HostCommand("systemctl show %s -p SystemCallFilter --value", (BACKEND_UNIT,))
SECURITY_REPORT = HostCommand("systemd-analyze security --no-pager %s", (BACKEND_UNIT,))


def _backend_show(expected: Expectations) -> HostCommand:
    names = [*expected.hardening(), "MainPID", "DropInPaths", "User", "Group"]
    return HostCommand("systemctl show %s -p %s", (BACKEND_UNIT, ",".join(names)))


def host_commands(config: pytest.Config) -> list[HostCommand]:
    units = (*RUNNING_UNITS, *APT_TIMERS)
    return [_backend_show(for_run(config)), SECRETS_STATE, FAILED_UNITS, BACKEND_OWNER,
            SYSCALL_FILTER, SECURITY_REPORT, *map(service.show, units)]


@dataclass(frozen=True)
class Service:
    """A unit as ``systemctl is-enabled`` and ``is-active`` would answer (testinfra's
    meaning), read with the runbooks' service statements' one ``systemctl show``."""

    is_enabled: bool
    is_running: bool


def _service(host: Host, unit: str) -> Service:
    facts = service.parse_systemctl_show(host.check_output(*service.show(unit)))
    return Service(facts.unit_file in service.ENABLED_STATES, facts.active == "active")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hardening_property" in metafunc.fixturenames:
        properties = for_run(metafunc.config).hardening()
        metafunc.parametrize("hardening_property", [p for p in properties if p not in MERGED])


@pytest.fixture(scope="module")
def backend(host: Host, expected: Expectations) -> dict[str, str]:
    """Every property the tests below read, in one ``systemctl show``."""
    return key_values(host.check_output(*_backend_show(expected)))


@pytest.mark.parametrize("unit", RUNNING_UNITS)
def test_service_is_enabled_and_running(host: Host, unit: str) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#2-services

    Every ChoirOS service starts at boot and runs.
    """
    service = _service(host, unit)
    assert service.is_enabled, f"{unit} is not enabled"
    assert service.is_running, f"{unit} is not running"


def test_secrets_unit_ran_at_boot(host: Host) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#2-services

    The choiros-secrets unit fetched the secrets (oneshot, enabled, exited successfully).
    """
    props = key_values(host.check_output(*SECRETS_STATE))
    assert props.get("UnitFileState") == "enabled", props
    assert (props.get("ActiveState"), props.get("Result")) == ("active", "success"), props


@pytest.mark.parametrize("timer", APT_TIMERS)
def test_apt_timer_is_active(host: Host, timer: str) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#2-services

    The apt daily timers drive the unattended upgrades.
    """
    service = _service(host, timer)
    assert service.is_enabled and service.is_running, f"{timer} is not enabled and active"


def test_no_unit_failed(host: Host) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#2-services

    No systemd unit is in the failed state.
    """
    failed = host.check_output(*FAILED_UNITS)
    assert not failed.strip(), f"failed units:\n{failed}"


def test_backend_runs_as_the_app_user(host: Host, backend: dict[str, str]) -> None:
    """Runbook: 30-operations/01-monitoring-and-alerting.md#2-services

    The backend process runs as choiros.
    """
    pid = backend.get("MainPID", "0")
    assert pid != "0", "the backend has no main process"
    owner = host.check_output(*BACKEND_OWNER).strip()
    assert owner == APP_USER, f"backend pid {pid} runs as {owner}"


def test_backend_hardening_drop_in_is_loaded(backend: dict[str, str]) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    systemd loaded the hardening drop-in.
    """
    assert HARDENING_DROP_IN in backend.get("DropInPaths", "").split(), backend.get("DropInPaths")


def test_backend_hardening_property(backend: dict[str, str], expected: Expectations,
                                    hardening_property: str) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    The backend's sandbox is in effect.
    """
    (written,) = expected.hardening()[hardening_property]
    want = SHOWN_AS.get((hardening_property, written), written)
    shown = backend.get(hardening_property)
    assert shown == want, f"systemctl show: {hardening_property}={shown}, drop-in says {want}"


def test_backend_syscall_filter_refuses_privileged_calls(host: Host) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    The system call filter allows no privileged or resource-changing call.
    """
    shown = host.check_output(*SYSCALL_FILTER)
    assert shown and not shown.startswith("~"), f"not an allow-list: {shown[:80]}"
    allowed = set(shown.split())
    assert not allowed & set(REFUSED_SYSCALLS), sorted(allowed & set(REFUSED_SYSCALLS))


def test_backend_exposure_score(host: Host, request: pytest.FixtureRequest) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    `systemd-analyze security` rates the backend's exposure at most 2.0 (the figure is recorded on
    the report).
    """
    report = host.run(*SECURITY_REPORT)
    score = exposure(report.stdout)
    assert score is not None, report.stdout[-500:] + report.stderr
    request.node.user_properties.append(("exposure", f"{score:.1f}"))
    assert score <= MAX_BACKEND_EXPOSURE, report.stdout[-2000:]
