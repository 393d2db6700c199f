"""A first boot that meets what a new EC2 instance meets: the artifacts and the SSM parameters
are not readable yet when the converge starts. The converge retries, and the host converges.

The kitchen cloud starts with the stack's buckets only. A watcher publishes the artifacts (and
the stack's wanted release) once the host has failed to fetch them twice, and writes the SSM
parameter a while after the host installed its tools, so the secrets unit fails a few reads
first.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from choiros_infra.kitchen_stack import (
    FIRST_RELEASE,
    publish_stand_in,
    put_stack_role,
    replica_of,
)
from choiros_infra.kitchen_stack import test_secret_value as secret_value
from choiros_infra.release_store import ReleaseStore
from choiros_infra.targets import KITCHEN_ACCOUNT, TargetChoice, rendering_for
from infra.config import StackConfig, load_stack_file
from infra.user_data import bucket_names
from kitchen import cloud, lifecycle
from kitchen.artifacts import publish_artifacts
from kitchen.paths import HostPaths
from provisioning.render import published_artifacts

pytestmark = pytest.mark.kitchen

SECRETS_DELAY = 20.0  # after the tools are installed: the secrets unit's reads fail meanwhile


def _wait(what: str, check: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


class LateCloud(threading.Thread):
    """Publishes the stack's artifacts, release and parameter late, as a slow AWS would."""

    def __init__(self, name: str, cfg: StackConfig) -> None:
        super().__init__(daemon=True)
        self.rootfs = HostPaths(name).rootfs
        self.cfg = cfg
        self.error: BaseException | None = None

    def _log(self) -> str:
        path = self.rootfs / "var/log/cloud-init-output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(self) -> None:
        try:
            names = bucket_names(self.cfg, KITCHEN_ACCOUNT)
            s3 = cloud.aws_client("s3", self.cfg.region)
            _wait("two failed fetches",
                  lambda: self._log().count("choiros-retry: fetching the artifacts failed") >= 2)
            publish_artifacts(s3, names.artifacts, published_artifacts())
            store = ReleaseStore(s3, names.artifacts)
            with tempfile.TemporaryDirectory(prefix="choiros-release-") as out:
                sha256 = publish_stand_in(store, FIRST_RELEASE, Path(out))
            store.set_wanted(FIRST_RELEASE, sha256, since=None, verified=True)
            _wait("the tools installed",
                  lambda: (self.rootfs / "usr/local/lib/choiros/choiros_tool.py").exists())
            time.sleep(SECRETS_DELAY)
            cloud.seed_cloud(parameters={p: secret_value(p) for p in self.cfg.secrets},
                             region=self.cfg.region)
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def late_stack(stack_file: Path, tmp_path: Path) -> Iterator[Path]:
    """The throwaway stack with a parameter of its own, absent from the kitchen cloud."""
    cfg = load_stack_file(stack_file)
    own = f"/choiros/{cfg.stack}/OPENAI_API_KEY"
    path = tmp_path / stack_file.name
    path.write_text(stack_file.read_text().replace("/choiros/example/OPENAI_API_KEY", own))
    ssm = cloud.aws_client("ssm", cfg.region)
    try:
        yield path
    finally:
        ssm.delete_parameters(Names=[own])


def test_a_host_whose_artifacts_and_secrets_come_late_still_converges(late_stack: Path) -> None:
    cfg = load_stack_file(late_stack)
    assert cfg.secrets and all(cfg.stack in p for p in cfg.secrets)
    names = bucket_names(cfg, KITCHEN_ACCOUNT)
    name = f"kt-late-{secrets.token_hex(2)}"
    watcher = LateCloud(name, cfg)

    def buckets_only(_info: cloud.CloudInfo) -> str:
        cloud.seed_cloud([names.artifacts, names.backups], region=cfg.region)
        watcher.start()
        return put_stack_role(cfg)

    try:
        st = lifecycle.up(name, rendering_for(cfg, TargetChoice.kitchen).user_data,
                          prepare_cloud=buckets_only, replica=replica_of(cfg))
        watcher.join(timeout=60)
        assert watcher.error is None, f"the watcher failed: {watcher.error!r}"

        log = lifecycle.exec_in(st.name, ["cat", "/var/log/cloud-init-output.log"]).stdout
        assert log.count("choiros-retry: fetching the artifacts failed (exit 3") >= 2, log[-3000:]
        assert "choiros-retry: fetching the artifacts succeeded at attempt" in log
        assert "choiros-converge: done" in log and "FAILED" not in log, log[-3000:]
        journal = lifecycle.exec_in(st.name, ["journalctl", "-u", "choiros-secrets", "-o",
                                              "cat", "--no-pager"]).stdout
        assert "choiros-retry: reading the SSM parameters failed" in journal, journal
        assert "choiros-retry: reading the SSM parameters succeeded at attempt" in journal
        health = lifecycle.exec_in(st.name, ["curl", "-sf", "-m", "5",
                                             "http://127.0.0.1:8080/health"])
        assert health.returncode == 0 and '"healthy"' in health.stdout, health
        env = lifecycle.exec_in(st.name, ["cat", "/etc/choiros/backend.env"]).stdout
        assert secret_value(cfg.secrets[0]) in env

        # Safe to run again by hand: it changes nothing and ends as before.
        again = lifecycle.exec_in(st.name, ["/usr/local/sbin/choiros-converge"], timeout=300)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().endswith("choiros-converge: done"), again.stdout
    finally:
        lifecycle.destroy(name)
