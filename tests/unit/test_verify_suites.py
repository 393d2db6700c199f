"""The host suites (tests/infra) without a host: the parsers of the host's tool output (fed
outputs recorded on a kitchen host), the expectations derived from the rendering, the shared
outside connects, and the rule that every suite test names the runbook section it proves."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from choiros_infra import markdown_doc
from choiros_infra.expect import probes

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "tests" / "infra"
sys.path.insert(0, str(INFRA))

import host_facts  # noqa: E402 - tests/infra is not a package; its modules import by name
import outside_connect  # noqa: E402
from expectations import load_expectations  # noqa: E402

pytestmark = pytest.mark.unit
pytest_plugins = ["pytester"]

UFW_VERBOSE = """\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere
80/tcp                     ALLOW IN    Anywhere
443/tcp                    ALLOW IN    Anywhere
8080/tcp                   ALLOW IN    203.0.113.0/24
22/tcp (v6)                ALLOW IN    Anywhere (v6)
"""

APT_DUMP = """\
APT::Periodic::Unattended-Upgrade "1";
Unattended-Upgrade "";
Unattended-Upgrade::Origins-Pattern "";
Unattended-Upgrade::Origins-Pattern:: "origin=Debian,codename=${distro_codename}-security";
Unattended-Upgrade::Automatic-Reboot "false";
"""

STAT_AND_SHA = """\
/etc/caddy/Caddyfile|regular file|644|root|root
/opt/choiros|directory|755|root|root
--choiros-verify-sha256--
2078c790fc1c0533efee6c22a06302e031ef7a27d714196d22938c9c5227e940  /etc/caddy/Caddyfile
"""

LOGROTATE_D = """\
reading config file /etc/logrotate.d/choiros
rotating pattern: /opt/choiros/logs/backend.log /opt/choiros/logs/backend-error.log  after 1 \
days (14 rotations)
considering log /opt/choiros/logs/backend.log
error: skipping "/opt/choiros/logs/backend.log" because parent directory has insecure permissions
"""


def test_ufw_status_is_read_into_defaults_and_rules() -> None:
    status = host_facts.ufw_status(UFW_VERBOSE)
    assert status.active
    assert status.defaults == {"incoming": "deny", "outgoing": "allow", "routed": "disabled"}
    assert [(r.port, r.action, r.source) for r in status.rules] == [
        ("22/tcp", "ALLOW IN", "Anywhere"), ("80/tcp", "ALLOW IN", "Anywhere"),
        ("443/tcp", "ALLOW IN", "Anywhere"), ("8080/tcp", "ALLOW IN", "203.0.113.0/24"),
        ("22/tcp", "ALLOW IN", "Anywhere (v6)")]
    assert not host_facts.ufw_status("Status: inactive\n").active


def test_apt_config_keeps_list_entries() -> None:
    values = host_facts.apt_config(APT_DUMP)
    assert values["Unattended-Upgrade::Origins-Pattern"] == [
        "", "origin=Debian,codename=${distro_codename}-security"]
    assert values["Unattended-Upgrade::Automatic-Reboot"] == ["false"]


def test_sshd_and_systemctl_outputs() -> None:
    sshd = host_facts.sshd_effective("port 22\npermitrootlogin no\nlistenaddress [::]:22\n"
                                     "listenaddress 0.0.0.0:22\n")
    assert sshd["permitrootlogin"] == ["no"]
    assert sshd["listenaddress"] == ["[::]:22", "0.0.0.0:22"]
    shown = host_facts.key_values("ProtectSystem=strict\nCapabilityBoundingSet=\nMainPID=42\n")
    assert shown == {"ProtectSystem": "strict", "CapabilityBoundingSet": "", "MainPID": "42"}


def test_exposure_jails_and_logrotate_errors() -> None:
    assert host_facts.exposure(
        "→ Overall exposure level for choiros-backend.service: 1.1 OK 🙂\n") == 1.1
    assert host_facts.exposure("Unit x.service not found.\n") is None
    assert host_facts.fail2ban_jails(
        "Status\n|- Number of jail:\t2\n`- Jail list:\tsshd, recidive\n") == ["sshd", "recidive"]
    assert host_facts.logrotate_errors(LOGROTATE_D) == [
        'error: skipping "/opt/choiros/logs/backend.log" because parent directory has insecure '
        'permissions']


def test_file_facts_from_one_command() -> None:
    facts = host_facts.file_facts(STAT_AND_SHA)
    caddyfile = facts["/etc/caddy/Caddyfile"]
    assert (caddyfile.kind, caddyfile.mode, caddyfile.ownership) == ("regular file", 0o644,
                                                                     "root:root")
    assert caddyfile.sha256 == "2078c790fc1c0533efee6c22a06302e031ef7a27d714196d22938c9c5227e940"
    assert facts["/opt/choiros"].sha256 is None
    assert "/nonexist" not in facts


class RecordingHost:
    def __init__(self, output: str) -> None:
        self.output = output
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append((command, args))
        return subprocess.CompletedProcess(command, 0, self.output, "")


def test_every_file_is_read_with_one_quoted_command() -> None:
    host = RecordingHost(STAT_AND_SHA)
    facts = host_facts.read_file_facts(host, ["/etc/caddy/Caddyfile", "/opt/choiros"],
                                       checksums=True)
    (command, args), = host.calls
    assert command.count("%s") == len(args) == 6  # testinfra quotes every argument
    assert args[0] == host_facts.STAT_FORMAT and host_facts.SECTION_MARK in args
    assert set(facts) == {"/etc/caddy/Caddyfile", "/opt/choiros"}


def test_release_facts_are_read_without_knowing_the_wanted_version() -> None:
    """The releases' files and entries are read with one command each, planned before the
    wanted release is known: a glob over every release, then the check picks its own."""
    command = host_facts.files_in_every_subdirectory_command("/opt/choiros/releases",
                                                             ["sandbox", "dist/index.html"])
    quoted = command.template % tuple(shlex.quote(a) for a in command.args)
    assert quoted == ("LC_ALL=C stat -L -c '%n|%F|%a|%U|%G' -- /opt/choiros/releases/*/sandbox "
                      "/opt/choiros/releases/*/dist/index.html")
    facts = host_facts.stat_lines(
        "/opt/choiros/releases/1.0.0/sandbox|regular file|755|root|root\n")
    assert facts["/opt/choiros/releases/1.0.0/sandbox"].mode == 0o755
    entries = host_facts.entries_command("/opt/choiros/releases")
    assert entries.template % tuple(shlex.quote(a) for a in entries.args) == (
        "LC_ALL=C find /opt/choiros/releases -mindepth 1 -maxdepth 1 ! -name '.*' "
        "-printf '%f|%Y\\n'")
    assert host_facts.entry_types("1.0.0|d\n1.0.0.sha256|f\nold|N\n") == {
        "1.0.0": "d", "1.0.0.sha256": "f", "old": "N"}


def test_the_listing_and_types_match_ls_and_test_d(tmp_path: Path) -> None:
    """find's listing is ls's (no dot files) and its type letter is test -d's (links
    followed): what test_releases_are_pruned read before, one command per entry."""
    (tmp_path / "1.0.0").mkdir()
    (tmp_path / "1.0.0.sha256").write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "1.0.0")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    command = host_facts.entries_command(str(tmp_path))
    out = subprocess.run(["sh", "-c", command.template % tuple(shlex.quote(a)
                                                               for a in command.args)],
                         capture_output=True, text=True, check=True).stdout
    entries = host_facts.entry_types(out)
    listed = subprocess.run(["ls", "-1", "-q", "--", str(tmp_path)], capture_output=True,
                            text=True, check=True).stdout.split()
    assert sorted(entries) == sorted(listed)
    assert {name for name, kind in entries.items() if kind == "d"} == {
        name for name in listed if (tmp_path / name).is_dir()} == {"1.0.0", "linked"}


# --- expectations from the rendering ---------------------------------------------------------


def test_expectations_come_from_the_rendering() -> None:
    expected = load_expectations(REPO / "Pulumi.example.yaml", "kitchen", None)
    # The kitchen converges the example stack's own TLS mode: off, plain HTTP on 80.
    assert expected.tls_mode == "off" and expected.scheme == "http"
    assert expected.served_ports == (22, 80)
    sshd = expected.sshd_settings()
    assert sshd["permitrootlogin"] == ["no"] and sshd["passwordauthentication"] == ["no"]
    assert sshd["hostkey"] == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]
    hardening = expected.hardening()
    assert hardening["ProtectSystem"] == ["strict"]
    assert len(hardening["SystemCallFilter"]) == 2  # set twice: merged by systemd
    assert {e["path"] for e in expected.rendering.manifest()} >= {"/etc/caddy/Caddyfile"}


def test_an_aws_host_without_tls_serves_plain_http_only() -> None:
    expected = load_expectations(REPO / "Pulumi.example.yaml", "aws", "111122223333")
    assert (expected.tls_mode, expected.scheme, expected.site_name) == ("off", "http", None)
    assert expected.served_ports == (22, 80)


# --- outside connects, shared by the run -----------------------------------------------------


def test_each_port_is_tried_once_and_tries_run_side_by_side() -> None:
    calls: list[tuple[str, int]] = []
    lock = threading.Lock()

    def slow_connect(address: str, port: int, timeout: float) -> tuple[bool, str]:
        with lock:
            calls.append((address, port))
        time.sleep(0.2)
        return port == 22, f"tried {port}"

    shared = outside_connect.SharedConnects(slow_connect)
    started = time.monotonic()
    for port in (22, 8080, 9000):
        shared.start("192.0.2.1", port)
    assert shared("192.0.2.1", 22) == (True, "tried 22")
    assert shared("192.0.2.1", 8080, 3.0) == (False, "tried 8080")
    assert shared("192.0.2.1", 9000) == (False, "tried 9000")
    assert shared("192.0.2.1", 8080) == (False, "tried 8080")
    assert time.monotonic() - started < 0.5  # three 0.2 s tries, in parallel
    assert sorted(calls) == [("192.0.2.1", 22), ("192.0.2.1", 8080), ("192.0.2.1", 9000)]
    shared.close()


def test_an_error_reaches_every_caller() -> None:
    def unresolvable(address: str, port: int, timeout: float) -> tuple[bool, str]:
        raise probes.ProbeError(f"cannot resolve {address}")

    shared = outside_connect.SharedConnects(unresolvable)
    for _ in range(2):
        with pytest.raises(probes.ProbeError, match="cannot resolve nowhere"):
            shared("nowhere", 80)
    shared.close()


def test_install_routes_the_runbook_probes_through_the_memo() -> None:
    original = probes.connect_from_outside
    shared = outside_connect.install()
    try:
        assert probes.connect_from_outside is shared
        again = outside_connect.install()  # a second install wraps the original, not the memo
        assert again._connect is original
        outside_connect.uninstall(again)
    finally:
        outside_connect.uninstall(shared)
        probes.connect_from_outside = original
    assert probes.connect_from_outside is original


# --- every suite test names its runbook section ----------------------------------------------


def suite_tests() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(INFRA.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found.append((path.name, node.name, ast.get_docstring(node) or ""))
    return found


def test_every_suite_test_names_a_runbook_section() -> None:
    tests = suite_tests()
    assert len(tests) > 40
    missing = [f"{f}::{n}" for f, n, doc in tests
               if not re.match(r"^Runbook: [\w./-]+\.md#[\w-]+$", doc.splitlines()[0] if doc
                               else "")]
    assert not missing, missing


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    return {heading.anchor for heading in markdown_doc.parse(markdown).headings}


def test_every_runbook_reference_resolves_to_a_heading() -> None:
    """A suite test's `Runbook: <file>#<section>` links to a heading that exists, so the
    report's groups are the runbooks' own sections."""
    runbooks = REPO / "docs" / "runbooks"
    references = {doc.splitlines()[0].removeprefix("Runbook: ") for _, _, doc in suite_tests()}
    broken = []
    for reference in sorted(references):
        file, _, section = reference.partition("#")
        path = runbooks / file
        if not path.is_file() or section not in github_anchors(path.read_text()):
            broken.append(reference)
    assert not broken, f"no such runbook heading: {broken}"


def test_suites_collect_without_a_host(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(INFRA), f"--rootdir={REPO}", "-p",
         "no:cacheprovider", "--collect-only", "-q", "--hosts=ssh://admin@192.0.2.1",
         f"--stack-file={REPO / 'Pulumi.example.yaml'}", "--target=kitchen"],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert int(re.search(r"(\d+) tests? collected", result.stdout)[1]) >= 100  # type: ignore[index]


def test_a_suite_test_without_a_runbook_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    infra = pytester.path / "tests" / "infra"
    infra.mkdir(parents=True)
    for name in ("conftest.py", "expectations.py", "outside_connect.py", "host_facts.py"):
        shutil.copy(INFRA / name, infra / name)
    (infra / "test_x.py").write_text(
        'def test_named(host):\n    """Runbook: 30-operations/04-security.md#ssh\n\n    x."""\n'
        "\n\ndef test_unnamed(host):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "tests/infra", "--collect-only", "-q", "--hosts=ssh://admin@192.0.2.1",
        f"--stack-file={REPO / 'Pulumi.example.yaml'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*names the runbook section it proves*",
                                 "*test_x.py::test_unnamed*"])
    assert "test_named" not in result.stderr.str()

