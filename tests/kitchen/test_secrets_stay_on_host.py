"""Secrets never leave the host: a known secret value is planted on a real host through the
path the host takes (SSM, then ``choiros-secrets`` into backend.env and the backend's
environment), every check that touches backend.env is broken, the value is leaked where
checks and diagnose read (a hand edit into a file a failing check quotes, the backend's error
log), and then verify, drift and diagnose run with every reporter. Not one of their outputs
or files holds the value, while each shows the mask where the value was: without the
redaction the same run prints it.

One host (``kt-secrets-<hex>``, from a throwaway copy of the example stack) for the module.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from guest_kit import host_name

from choiros_infra.kitchen_stack import stack_up
from choiros_infra.redaction import MASK, variable_of
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from kitchen import cloud, lifecycle
from kitchen.state import HostState
from provisioning.spec import BACKEND_UNIT, LOGS_DIR, SECRETS_ENV_FILE, SECRETS_UNIT

pytestmark = pytest.mark.kitchen

CLI = PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"
ERROR_LOG = f"{LOGS_DIR}/backend-error.log"  # diagnose tails it
# A managed file a runbook statement checks with `contains`, whose failure quotes the file.
QUOTED_FILE = "/etc/issue.net"


@dataclass(frozen=True)
class Planted:
    host: HostState
    stack_file: Path
    value: str
    name: str  # the variable it fills


def on_host(host: HostState, *argv: str) -> str:
    result = lifecycle.exec_in(host.name, list(argv))
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


def backend_holds(host: HostState, value: str, timeout: float = 60) -> None:
    """Until the restarted backend runs with ``value`` in its environment: systemd reads the
    env file when it starts the process, so breaking the file earlier would keep it out."""
    holds = (f"pid=$(systemctl show -p MainPID --value {BACKEND_UNIT}); "
             f"[ \"$pid\" != 0 ] && grep -q -F -e {value} /proc/$pid/environ")
    deadline = time.monotonic() + timeout
    while lifecycle.exec_in(host.name, ["sh", "-c", holds]).returncode != 0:
        assert time.monotonic() < deadline, f"no backend with the value after {timeout:g} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def planted(stack_file: Path) -> Iterator[Planted]:
    cfg = load_stack_file(stack_file)
    [parameter] = cfg.secrets
    value = f"planted-secret-{secrets.token_hex(12)}"
    name = host_name("secrets")
    try:
        host = stack_up(name, stack_file)
        cloud.seed_cloud(parameters={parameter: value}, region=cfg.region)
        on_host(host, "systemctl", "restart", SECRETS_UNIT)  # the backend restarts with it
        assert value in on_host(host, "cat", SECRETS_ENV_FILE), "the value was not written"
        backend_holds(host, value)
        variable = variable_of(parameter)
        # Break every check of backend.env: mode, owner and group, the header, a bad name, the
        # stack's variable missing (the running backend still holds its value).
        on_host(host, "sh", "-c", f"printf 'lower-case=1\\n' > {SECRETS_ENV_FILE}")
        on_host(host, "chown", "root:root", SECRETS_ENV_FILE)
        on_host(host, "chmod", "0604", SECRETS_ENV_FILE)
        # The value where a failing check and diagnose quote: a hand edit, an app's log line.
        on_host(host, "sh", "-c", f"printf '%s\\n' '{value}' > {QUOTED_FILE}")
        on_host(host, "sh", "-c", f"echo 'auth failed for key {value}' >> {ERROR_LOG}")
        yield Planted(host, stack_file, value, variable)
    finally:
        lifecycle.destroy(name)


def run(*argv: str) -> str:
    """A choiros-infra command; its stdout and stderr together."""
    done = subprocess.run([str(CLI), *argv], capture_output=True, text=True, check=False,
                          timeout=600)
    return done.stdout + done.stderr


def ssh_options(host: HostState) -> list[str]:
    return ["--host", f"ssh://{host.ssh_user}@{host.address}", "--ssh-key", host.ssh_key,
            "--known-hosts", host.known_hosts]


@pytest.fixture(scope="module")
def outputs(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Everything verify, drift and diagnose printed and wrote, by where it went."""
    out = tmp_path_factory.mktemp("reports")
    host, stack = planted.host, str(planted.stack_file)
    printed = {
        "kitchen verify": run("kitchen", "verify", "--name", host.name, "--junit",
                              str(out / "kv.xml"), "--report", str(out / "kv.md"), "--json",
                              str(out / "kv.json")),
        "verify": run("verify", "--stack-file", stack, "--target", "kitchen",
                      *ssh_options(host), "--junit", str(out / "v.xml"), "--report",
                      str(out / "v.md"), "--json", str(out / "v.json")),
        "drift": run("drift", "--stack-file", stack, "--target", "kitchen", *ssh_options(host),
                     "--report", str(out / "drift.md"), "--junit", str(out / "drift.xml")),
        "drift --json": run("drift", "--stack-file", stack, "--target", "kitchen",
                            *ssh_options(host), "--json"),
        "diagnose": run("diagnose", "--host", f"ssh://{host.ssh_user}@{host.address}",
                        "--ssh-key", host.ssh_key, "--known-hosts", host.known_hosts,
                        "--out", str(out / "diagnose.md")),
        "kitchen diagnose": run("kitchen", "diagnose", "--name", host.name),
    }
    written = {path.name: path.read_text() for path in sorted(out.iterdir())}
    assert len(written) == 9, sorted(written)
    return {**printed, **written}


def test_no_output_holds_the_value(planted: Planted, outputs: dict[str, str]) -> None:
    leaks = [where for where, text in outputs.items() if planted.value in text]
    assert leaks == [], f"the secret value is in: {', '.join(leaks)}"


def test_the_broken_checks_failed_and_showed_the_mask_where_the_value_was(
        planted: Planted, outputs: dict[str, str]) -> None:
    """The runs saw the broken file and the leaked value: without redaction they print it."""
    checks = json.loads(outputs["v.json"])["checks"]
    failed = {c["subject"]: c["observed"] for c in checks if c["status"] == "failed"}
    backend_env = [s for s in failed if SECRETS_ENV_FILE in s]
    assert f"file {SECRETS_ENV_FILE}" in failed, sorted(failed)
    assert len(backend_env) >= 3, backend_env  # mode/owner, the header, the names
    assert any("test_secrets_file_holds_exactly" in s and planted.name in failed[s]
               for s in failed), sorted(failed)
    assert any("test_path_kind_mode_and_owner" in s and SECRETS_ENV_FILE in s for s in failed)
    assert MASK in failed[f"file {QUOTED_FILE}"], failed[f"file {QUOTED_FILE}"]
    for where in ("kitchen verify", "verify", "drift", "kv.md", "v.md", "drift.md", "kv.xml",
                  "v.xml", "drift.xml", "drift --json", "kv.json"):
        assert MASK in outputs[where], f"{where} shows no masked value"
    for where in ("diagnose.md", "kitchen diagnose"):
        assert f"auth failed for key {MASK}" in outputs[where], where
