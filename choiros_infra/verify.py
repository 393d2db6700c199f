"""Running the host suites (tests/infra) against one host over SSH.

The suites are plain pytest + testinfra; this module only builds the command line: which host,
how to log in, which stack file and target the host was built from. pytest runs in a child
process so its exit code is the verdict (0 all passed, 1 something failed).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUITES = PROJECT_ROOT / "tests" / "infra"


@dataclass(frozen=True)
class HostAccess:
    """How testinfra reaches the host: ``ssh://USER@ADDR`` and an ssh_config or a key."""

    url: str
    ssh_config: Path | None = None
    ssh_key: Path | None = None


def pytest_argv(access: HostAccess, stack_file: Path, target: str,
                extra: tuple[str, ...] = ()) -> list[str]:
    argv = [
        sys.executable, "-m", "pytest", str(SUITES),
        f"--rootdir={PROJECT_ROOT}", "-p", "no:cacheprovider",
        f"--hosts={access.url}", "--sudo",
        f"--stack-file={stack_file}", f"--target={target}",
    ]
    if access.ssh_config is not None:
        argv.append(f"--ssh-config={access.ssh_config}")
    if access.ssh_key is not None:
        argv.append(f"--ssh-identity-file={access.ssh_key}")
    return [*argv, *extra]


def run_suites(access: HostAccess, stack_file: Path, target: str,
               extra: tuple[str, ...] = ()) -> int:
    """Run the suites, output to the terminal; return pytest's exit code."""
    return subprocess.run(pytest_argv(access, stack_file, target, extra), check=False,
                          cwd=PROJECT_ROOT).returncode
