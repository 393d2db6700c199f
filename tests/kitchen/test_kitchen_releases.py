"""Releases from the workstation, on real kitchen hosts, through the real CLI: pack, publish,
deploy, rollback, promote, with the stack's wanted release kept in its (kitchen) artifacts
bucket, and no request failing through Caddy while the backend switches.

Two stacks, staging and production, each with its own kitchen host, as two AWS stacks would
have. The tests run in file order on the same hosts: each step starts where the last one left.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from choiros_infra.kitchen_site import site_url
from choiros_infra.kitchen_stack import (
    remove_stack_objects,
    replace_host,
    stack_up,
    throwaway_stack,
)
from choiros_infra.release_store import ReleaseStore
from choiros_infra.targets import KITCHEN_ACCOUNT, kitchen
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from infra.user_data import bucket_names
from kitchen import cloud, lifecycle
from kitchen.load import Load
from kitchen.release import build_release
from kitchen.state import HostState

pytestmark = pytest.mark.kitchen

CLI = PROJECT_ROOT / ".venv" / "bin" / "choiros-infra"
FIXTURE = PROJECT_ROOT / "kitchen" / "fixture_app"
# The load the switches must survive: at least 30 requests a second through Caddy.
RATE = 40.0


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *argv], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=PROJECT_ROOT)


def said(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout[-3000:] + "\n" + result.stderr[-3000:]).strip()


class Stack:
    """A throwaway stack and its kitchen host."""

    def __init__(self, prefix: str, workdir: Path) -> None:
        self.file = throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml", workdir, prefix=prefix)
        self.cfg = load_stack_file(self.file)
        self.name = f"kt-{self.cfg.stack}"
        self.host: HostState = stack_up(self.name, self.file)

    @property
    def store(self) -> ReleaseStore:
        return ReleaseStore(cloud.aws_client("s3", self.cfg.region),
                            bucket_names(self.cfg, KITCHEN_ACCOUNT).artifacts)

    def on_host(self, *argv: str) -> str:
        result = lifecycle.exec_in(self.name, list(argv))
        assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
        return str(result.stdout)

    def running(self) -> dict[str, str | None]:
        return dict(json.loads(self.on_host("choiros-deploy", "--status"))["current"])

    def wanted(self) -> tuple[str, str, bool]:
        wanted = self.store.wanted()
        assert wanted is not None
        return wanted.version, wanted.sha256, wanted.verified

    def load(self) -> Load:
        address = lifecycle.status(self.name).address
        return Load(tuple(site_url(self.cfg, kitchen(), address, path)
                          for path in ("/health", "/api/events/count")), rate=RATE)

    def destroy(self) -> None:
        lifecycle.destroy(self.name)
        remove_stack_objects(self.cfg)


@pytest.fixture(scope="module")
def staging(kitchen_cloud: cloud.CloudInfo,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack("stg", tmp_path_factory.mktemp("staging"))
    try:
        yield stack
    finally:
        stack.destroy()


@pytest.fixture(scope="module")
def release_2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    result = cli("release", "pack", "--sandbox", str(FIXTURE / "sandbox.py"),
                 "--dist", str(FIXTURE / "dist"), "--version", "2.0.0", "--out", str(out))
    assert result.returncode == 0, said(result)
    return out / "choiros-2.0.0.tar.gz"


def publish(stack: Stack, tarball: Path) -> subprocess.CompletedProcess[str]:
    return cli("release", "publish", str(tarball), "--stack-file", str(stack.file),
               "--target", "kitchen")


def switch_under_load(stack: Stack, *argv: str) -> tuple[subprocess.CompletedProcess[str], Load]:
    """Run a CLI command while RATE requests a second go through Caddy."""
    with stack.load() as load:
        time.sleep(1.0)
        result = cli(*argv)
        time.sleep(1.0)
    return result, load


def assert_no_failed_requests(load: Load) -> None:
    seconds = load.outcomes[-1].started - load.outcomes[0].started
    assert len(load.outcomes) / seconds >= 30, f"only {len(load.outcomes)} in {seconds:.1f} s"
    failed = load.failed()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed: {failed[:5]}"


def test_a_new_stack_runs_its_first_wanted_release(staging: Stack) -> None:
    assert staging.wanted()[:2] == ("1.0.0", staging.running()["sha256"])
    assert staging.running()["version"] == "1.0.0"


def test_pack_publish_and_deploy_with_no_failed_request(staging: Stack, release_2: Path) -> None:
    published = publish(staging, release_2)
    assert published.returncode == 0 and "2.0.0: published" in published.stdout, said(published)
    result, load = switch_under_load(staging, "kitchen", "deploy", "2.0.0",
                                     "--name", staging.name)
    assert result.returncode == 0, said(result)
    assert "2.0.0 is live, healthy and verified" in result.stderr
    sha = release_2.with_name(release_2.name + ".sha256").read_text().split()[0]
    assert staging.running() == {"version": "2.0.0", "sha256": sha}
    assert staging.wanted() == ("2.0.0", sha, True)
    assert_no_failed_requests(load)


def test_after_a_deploy_verify_passes_and_drift_finds_none(staging: Stack, tmp_path: Path) -> None:
    verify = cli("kitchen", "verify", "--name", staging.name)
    assert verify.returncode == 0, said(verify)
    st = lifecycle.status(staging.name)
    drift = cli("drift", "--stack-file", str(staging.file), "--target", "kitchen",
                "--host", f"ssh://{st.ssh_user}@{st.address}", "--ssh-key", st.ssh_key,
                "--known-hosts", st.known_hosts, "--json")
    assert drift.returncode == 0, said(drift)
    assert json.loads(drift.stdout)["host"]["outcome"] == "no-drift"


def test_other_bytes_under_a_published_version_are_refused(staging: Stack,
                                                           tmp_path: Path) -> None:
    s3 = staging.store.s3
    bucket = staging.store.bucket

    def listing() -> dict[str, str]:
        return {o["Key"]: o["ETag"] for o in s3.list_object_versions(Bucket=bucket)
                .get("Versions", []) if o["Key"].startswith("releases/2.0.0/")}

    before = listing()
    other = build_release("2.0.0", tmp_path, unhealthy=True)
    result = publish(staging, other)
    assert result.returncode == 3, said(result)
    assert "already published with other bytes" in result.stderr
    assert listing() == before


def test_a_release_failing_its_health_check_leaves_the_wanted_release(
        staging: Stack, tmp_path: Path) -> None:
    bad = build_release("3.0.0-bad", tmp_path, unhealthy=True)
    assert publish(staging, bad).returncode == 0
    before = staging.wanted()
    result = cli("kitchen", "deploy", "3.0.0-bad", "--name", staging.name)
    assert result.returncode == 1, said(result)
    assert "wanted release: back to 2.0.0" in result.stderr
    assert staging.wanted() == before
    assert staging.running()["version"] == "2.0.0"


def test_rollback_under_load_then_verify(staging: Stack) -> None:
    result, load = switch_under_load(staging, "kitchen", "rollback", "--name", staging.name)
    assert result.returncode == 0, said(result)
    assert staging.running()["version"] == "1.0.0"
    assert staging.wanted()[0::2] == ("1.0.0", True)
    assert_no_failed_requests(load)
    verify = cli("kitchen", "verify", "--name", staging.name)
    assert verify.returncode == 0, said(verify)


def test_a_backend_restart_under_load_fails_no_request(staging: Stack) -> None:
    with staging.load() as load:
        time.sleep(1.0)
        staging.on_host("systemctl", "restart", "choiros-backend")
        time.sleep(2.0)
    assert_no_failed_requests(load)


def test_a_replaced_host_boots_the_wanted_release_with_every_event(staging: Stack) -> None:
    deploy = cli("kitchen", "deploy", "2.0.0", "--name", staging.name)
    assert deploy.returncode == 0, said(deploy)
    address = lifecycle.status(staging.name).address
    acknowledged = [staging.on_host("curl", "-sf", "-X", "POST", "-d", f'{{"n": {i}}}',
                                    "-H", "Content-Type: application/json",
                                    "http://127.0.0.1:8080/api/events") for i in range(20)]
    assert all('"id"' in a for a in acknowledged)
    time.sleep(2.0)  # Litestream's sync interval is 1 s: what a hard kill may lose at most
    staging.host = replace_host(staging.name, staging.file, hard=True)
    assert staging.running()["version"] == "2.0.0"
    count = json.loads(staging.on_host("curl", "-sf", "http://127.0.0.1:8080/api/events/count"))
    assert count["count"] >= len(acknowledged), (count, address)


def test_promote_deploys_the_bytes_staging_verified(
        staging: Stack, kitchen_cloud: cloud.CloudInfo,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    production = Stack("prd", tmp_path_factory.mktemp("production"))
    try:
        refused = cli("kitchen", "promote", "1.0.0", "--from", staging.name,
                      "--to", production.name)
        assert refused.returncode == 3, said(refused)
        assert "does not want 1.0.0" in refused.stderr
        result = cli("kitchen", "promote", "2.0.0", "--from", staging.name,
                     "--to", production.name)
        assert result.returncode == 0, said(result)
        assert production.running() == staging.running()
        assert production.running()["version"] == "2.0.0"
        assert production.wanted() == staging.wanted()
    finally:
        production.destroy()
