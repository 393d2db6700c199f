"""Security: SSH, firewall, what listens, fail2ban, automatic updates, permissions, the app user.

Each setting is read as the running daemon or tool sees it (``sshd -T``, ``ufw status``,
``fail2ban-client``, ``apt-config dump``), not from the files that should have set it: a file
that is right but not loaded fails here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from expectations import (
    APP_ROOT,
    APP_USER,
    BACKEND_PORT,
    CONFIG_DIR,
    OPEN_TCP_PORTS,
    SECRETS_ENV_FILE,
    Expectations,
    for_run,
)
from host_facts import (
    UfwStatus,
    apt_config,
    fail2ban_jails,
    sshd_effective,
    ufw_status,
)
from outside_connect import SharedConnects
from testinfra.host import Host

from choiros_infra.expect.kinds import fail2ban, sshd, ufw
from choiros_infra.expect.kinds.port import LISTENING, parse_ss_listening
from choiros_infra.expect.probes import HostCommand
from choiros_infra.redaction import variable_of

SECURITY_ORIGIN = "-security"
JAIL_KEYS = ("bantime", "findtime", "maxretry")

# What this module reads on the host, each once (verify reads them all ahead, in one round
# trip: choiros_infra/verify_batch.py). The facts the runbooks' typed statements also read
# are their kinds' commands, so a verify reads each once.
SSHD_T = sshd.EFFECTIVE
UFW_STATUS = ufw.STATUS

JAILS = fail2ban.STATUS
APT_CONFIG = HostCommand("apt-config dump")
SUDO_RIGHTS = HostCommand("sudo -l -U %s", (APP_USER,))
PASSWORD_STATUS = HostCommand("passwd --status %s", (APP_USER,))
APP_ACCOUNT = HostCommand("getent passwd %s", (APP_USER,))
APP_GROUPS = HostCommand("id -Gn %s", (APP_USER,))
# The secrets' file by its variable names only: the names before each "=", never a value.
SECRET_NAMES = HostCommand("sed -n %s %s", ("s/=.*//p", SECRETS_ENV_FILE))


def _jail(key: str) -> HostCommand:
    return fail2ban.get("sshd", key)


def _world_writable(root: str) -> HostCommand:
    return HostCommand("find %s -xdev -perm -0002 ! -type l", (root,))


def host_commands(config: pytest.Config) -> list[HostCommand]:
    return [SSHD_T, UFW_STATUS, LISTENING, JAILS, APT_CONFIG, SUDO_RIGHTS, PASSWORD_STATUS,
            APP_ACCOUNT, APP_GROUPS, *(_jail(k) for k in (*JAIL_KEYS, "journalmatch", "actions")),
            *(_world_writable(root) for root in (APP_ROOT, CONFIG_DIR)), SECRET_NAMES]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sshd_directive" in metafunc.fixturenames:
        metafunc.parametrize("sshd_directive", sorted(for_run(metafunc.config).sshd_settings()))


# --- SSH -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(host: Host) -> dict[str, list[str]]:
    result = host.run(*SSHD_T)
    assert result.rc == 0, f"sshd -T failed: {result.stderr}"
    return sshd_effective(result.stdout)


def test_sshd_effective_setting(sshd: dict[str, list[str]], expected: Expectations,
                                sshd_directive: str) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    The running sshd has the drop-in's value.
    """
    want = expected.sshd_settings()[sshd_directive]
    seen = [value.lower() for value in sshd.get(sshd_directive, [])]
    assert seen == want, (
        f"sshd -T: {sshd_directive} is {sshd.get(sshd_directive)}, the drop-in says {want}")


# --- firewall --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ufw(host: Host) -> UfwStatus:
    return ufw_status(host.check_output(*UFW_STATUS))


def test_ufw_is_active(ufw: UfwStatus) -> None:
    """Runbook: 30-operations/04-security.md#firewall-and-security-group

    The firewall (ufw) is enabled.
    """
    assert ufw.active, "ufw status: not active"


def test_ufw_denies_incoming_by_default(ufw: UfwStatus) -> None:
    """Runbook: 30-operations/04-security.md#firewall-and-security-group

    Default deny incoming, allow outgoing.
    """
    assert ufw.defaults.get("incoming") == "deny", ufw.defaults
    assert ufw.defaults.get("outgoing") == "allow", ufw.defaults


@pytest.mark.parametrize("port", OPEN_TCP_PORTS)
def test_ufw_allows_port(ufw: UfwStatus, port: int) -> None:
    """Runbook: 30-operations/04-security.md#firewall-and-security-group

    22, 80 and 443 allowed from anywhere.
    """
    sources = {r.source for r in ufw.rules if r.port == f"{port}/tcp" and r.action == "ALLOW IN"}
    assert {"Anywhere", "Anywhere (v6)"} <= sources, f"{port}/tcp allowed from {sources}"


def test_ufw_allows_nothing_else(ufw: UfwStatus) -> None:
    """Runbook: 30-operations/04-security.md#firewall-and-security-group

    No allow rule beyond 22, 80, 443.
    """
    allowed = {f"{p}/tcp" for p in OPEN_TCP_PORTS}
    extra = [f"{r.to} {r.action} {r.source}" for r in ufw.rules
             if r.action.startswith("ALLOW") and r.port not in allowed]
    assert not extra, f"ufw allows more than {sorted(allowed)}: {extra}"


# --- what listens, and what answers from outside ---------------------------------------------


@pytest.fixture(scope="module")
def listening(host: Host) -> list[tuple[str, int]]:
    return parse_ss_listening(host.check_output(*LISTENING))


def _exposed(listening: list[tuple[str, int]]) -> set[int]:
    """Ports bound to something other than loopback."""
    return {port for address, port in listening
            if address not in ("127.0.0.1", "::1") and not address.startswith("127.")}


@pytest.fixture(scope="module")
def from_outside(outside: str, listening: list[tuple[str, int]],
                 connects: SharedConnects) -> dict[int, tuple[bool, str]]:
    """Every interesting port tried from here: the tries were started at collection and run
    side by side, since a closed port costs the whole connect timeout (the firewall drops)."""
    ports = sorted(set(OPEN_TCP_PORTS) | {BACKEND_PORT} | _exposed(listening))
    for port in ports:
        connects.start(outside, port)
    return {port: connects(outside, port) for port in ports}


def test_only_expected_ports_listen_beyond_loopback(listening: list[tuple[str, int]]) -> None:
    """Runbook: 90-reference/host-reference.md#ports

    Only SSH, Caddy and the backend listen on non-loopback addresses (the backend binds every
    interface; ufw keeps it in).
    """
    unexpected = sorted(_exposed(listening) - {*OPEN_TCP_PORTS, BACKEND_PORT})
    assert not unexpected, (
        f"listening beyond loopback on {unexpected}: "
        f"{sorted((a, p) for a, p in listening if p in unexpected)}")


@pytest.mark.parametrize("port", OPEN_TCP_PORTS)
def test_served_port_is_open_from_outside(from_outside: dict[int, tuple[bool, str]],
                                          expected: Expectations, port: int) -> None:
    """Runbook: 90-reference/host-reference.md#ports

    SSH and Caddy answer from outside.
    """
    if port not in expected.served_ports:
        pytest.skip(f"tls_mode {expected.tls_mode}: nothing serves {port}")
    is_open, observed = from_outside[port]
    assert is_open, f"port {port} from outside: {observed}"


def test_backend_port_is_closed_from_outside(from_outside: dict[int, tuple[bool, str]],
                                             listening: list[tuple[str, int]]) -> None:
    """Runbook: 90-reference/host-reference.md#ports

    The backend (8080) is reached through Caddy only.
    """
    assert any(p == BACKEND_PORT for _, p in listening), "the backend is not listening at all"
    is_open, observed = from_outside[BACKEND_PORT]
    assert not is_open, f"port {BACKEND_PORT} from outside: {observed}"


def test_other_listeners_are_closed_from_outside(from_outside: dict[int, tuple[bool, str]],
                                                 listening: list[tuple[str, int]]) -> None:
    """Runbook: 90-reference/host-reference.md#ports

    Whatever else listens is not reachable from outside.
    """
    others = _exposed(listening) - {*OPEN_TCP_PORTS, BACKEND_PORT}
    reachable = {p: from_outside[p][1] for p in sorted(others) if from_outside[p][0]}
    assert not reachable, f"reachable from outside: {reachable}"


# --- fail2ban --------------------------------------------------------------------------------


def _jail_value(host: Host, key: str) -> str:
    return host.check_output(*_jail(key)).strip()


def test_fail2ban_sshd_jail_is_running(host: Host) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    The sshd jail is up.
    """
    jails = fail2ban_jails(host.check_output(*JAILS))
    assert "sshd" in jails, f"fail2ban jails: {jails}"


@pytest.mark.parametrize("key", JAIL_KEYS)
def test_fail2ban_sshd_jail_value(host: Host, expected: Expectations, key: str) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    The jail bans for 3600 s after 3 failures within 600 s.
    """
    want = str(getattr(expected.spec.fail2ban, key))
    assert _jail_value(host, key) == want, f"fail2ban sshd {key}: expected {want}"


def test_fail2ban_sshd_jail_reads_the_journal(host: Host) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    Backend systemd (Debian 12 has no auth.log).
    """
    result = host.run(*_jail("journalmatch"))
    assert result.rc == 0, f"the sshd jail has no journal backend: {result.stdout}{result.stderr}"
    assert "sshd" in result.stdout, f"journal match: {result.stdout.strip()}"


def test_fail2ban_bans_through_ufw(host: Host) -> None:
    """Runbook: 30-operations/04-security.md#the-layers-as-built

    Bans are ufw rules.
    """
    actions = _jail_value(host, "actions")
    assert "ufw" in actions.split(), f"sshd jail actions: {actions}"


# --- unattended upgrades ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def apt(host: Host) -> dict[str, list[str]]:
    return apt_config(host.check_output(*APT_CONFIG))


def test_unattended_upgrades_take_security_updates_only(apt: dict[str, list[str]]) -> None:
    """Runbook: 30-operations/04-security.md#security-updates

    Security origin only.
    """
    origins = [o for o in apt.get("Unattended-Upgrade::Origins-Pattern", []) if o]
    assert origins, "no Unattended-Upgrade::Origins-Pattern"
    assert all(SECURITY_ORIGIN in o for o in origins), f"origins: {origins}"
    allowed = [o for o in apt.get("Unattended-Upgrade::Allowed-Origins", []) if o]
    assert not allowed, f"Unattended-Upgrade::Allowed-Origins also set: {allowed}"


@pytest.mark.parametrize(("key", "value"), [
    ("Unattended-Upgrade::Automatic-Reboot", "false"),
    ("Unattended-Upgrade::Remove-Unused-Dependencies", "true"),
    ("APT::Periodic::Update-Package-Lists", "1"),
    ("APT::Periodic::Unattended-Upgrade", "1"),
])
def test_unattended_upgrades_setting(apt: dict[str, list[str]], key: str, value: str) -> None:
    """Runbook: 30-operations/04-security.md#security-updates

    No automatic reboot, unused dependencies removed, the daily run enabled.
    """
    assert apt.get(key) == [value], f"apt-config: {key} is {apt.get(key)}, expected {value!r}"


# --- permissions and the app user ------------------------------------------------------------


@pytest.mark.parametrize("root", [APP_ROOT, CONFIG_DIR])
def test_nothing_world_writable(host: Host, root: str) -> None:
    """Runbook: 90-reference/host-reference.md#paths

    Nothing under the app's directories is world-writable.
    """
    found = host.check_output(*_world_writable(root))
    assert not found.strip(), f"world-writable under {root}:\n{found}"


def test_app_user_has_no_sudo(host: Host) -> None:
    """Runbook: 90-reference/host-reference.md#users

    The app user choiros may not use sudo.
    """
    groups = host.check_output(*APP_GROUPS).split()
    assert not {"sudo", "admin", "wheel"} & set(groups), f"{APP_USER} groups: {groups}"
    listing = host.check_output(*SUDO_RIGHTS)
    assert "is not allowed to run sudo" in listing, listing


def test_app_user_cannot_log_in(host: Host) -> None:
    """Runbook: 90-reference/host-reference.md#users

    The app user choiros: system user, nologin shell, locked password.
    """
    user = _account(host.run(*APP_ACCOUNT))
    assert user.exists, f"no user {APP_USER}"
    assert user.shell == "/usr/sbin/nologin", f"{APP_USER} shell: {user.shell}"
    assert user.uid < 1000, f"{APP_USER} uid {user.uid} is not a system uid"
    status = host.check_output(*PASSWORD_STATUS).split()
    assert status[1:2] == ["L"], f"passwd --status {APP_USER}: {' '.join(status)}"


def test_secrets_file_holds_exactly_the_stacks_secret_names(host: Host,
                                                            expected: Expectations) -> None:
    """Runbook: 30-operations/04-security.md#secrets

    backend.env assigns each of the stack's secrets (choiros:secrets) once and nothing else;
    read by variable names only, so a failure never shows a value.
    """
    result = host.run(*SECRET_NAMES)
    assert result.rc == 0, f"cannot read {SECRETS_ENV_FILE}: {result.stderr.strip()}"
    found = result.stdout.split()
    wanted = sorted(variable_of(p) for p in expected.spec.secrets)
    assert sorted(found) == wanted, (
        f"{SECRETS_ENV_FILE} assigns {', '.join(sorted(found)) or 'nothing'}; the stack's "
        f"secrets are {', '.join(wanted) or 'none'}")


@dataclass(frozen=True)
class Account:
    """The app user's passwd entry (``getent passwd``)."""

    exists: bool
    uid: int = -1
    shell: str = ""


def _account(result: Any) -> Account:
    fields = result.stdout.strip().split(":") if result.rc == 0 else []
    return Account(True, int(fields[2]), fields[6]) if len(fields) >= 7 else Account(False)
