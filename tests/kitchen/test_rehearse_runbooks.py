"""Every marked procedure in docs/runbooks, followed as written on one kitchen host through
the real CLI (`choiros-infra rehearse`), then each runbook's expect blocks; a green run stamps
the runbooks' `Last verified:` lines. A procedure that breaks fails here at its file:line,
with the command and the tail of its output.

One host for all of them, and the rehearsal's own second host (``<scratch>``) for the
procedures that boot a host of their own or need two: local development boots it, "already
exists" destroys and boots it again, the promote between two kitchen hosts deploys to it. The
rehearsal removes it when it ends. Its stack is a throwaway copy of the example with
its own SSM parameters too: the security runbook rotates one.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from guest_kit import host_name, stack_host

from choiros_infra.kitchen_stack import remove_stack_objects, throwaway_stack
from choiros_infra.rehearse import read_runbooks
from choiros_infra.rehearse_scratch import scratch_name
from choiros_infra.verify import PROJECT_ROOT, RUNBOOKS
from infra.config import load_stack_file
from kitchen import cloud
from kitchen import paths as kitchen_paths
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

CLI = PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"


@pytest.fixture(scope="module")
def rehearsal_stack(kitchen_cloud: cloud.CloudInfo,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml",
                           tmp_path_factory.mktemp("stack"), prefix="kt", own_parameters=True)
    try:
        yield path
    finally:
        remove_stack_objects(load_stack_file(path))


@pytest.fixture(scope="module")
def host(rehearsal_stack: Path) -> Iterator[HostState]:
    with stack_host(host_name("rehearse"), rehearsal_stack) as host:
        yield host


def test_every_marked_procedure_runs_as_written(host: HostState) -> None:
    result = subprocess.run([str(CLI), "rehearse", "--name", host.name, "--json",
                             "--stamp-runbooks", "kitchen"], capture_output=True, text=True,
                            check=False, timeout=1500, cwd=PROJECT_ROOT)
    assert result.stdout.strip(), result.stderr[-4000:]
    report = json.loads(result.stdout)
    failures = [r["failure"] for r in report["runbooks"] if r["failure"]]
    assert not failures, "\n".join(
        f"{RUNBOOKS.relative_to(PROJECT_ROOT)}/{f['file']}:{f['line']}: step failed "
        f"(exit {f['status']}): {f['command']}\n{f['tail']}" for f in failures)
    assert result.returncode == 0 and report["passed"], result.stderr[-4000:]
    assert "rehearse: booting kitchen host" not in result.stderr, \
        "local development boots the second host; nothing else should"
    assert not (kitchen_paths.hosts_dir() / scratch_name(host.name)).exists(), \
        "the rehearsal's second host outlived it"
    rehearsed = {r.file for r in read_runbooks(RUNBOOKS) if r.steps}
    assert {r["file"] for r in report["runbooks"]} == rehearsed
    today = datetime.now(UTC).date().isoformat()
    stamped = [name for name in sorted(rehearsed)
               if "\nLast verified:" in (RUNBOOKS / name).read_text()]
    assert stamped, "no rehearsed runbook has a Last verified line"
    for name in stamped:
        text = (RUNBOOKS / name).read_text()
        assert f"Last verified: {today} against kitchen (updated by CI)" in text, name
