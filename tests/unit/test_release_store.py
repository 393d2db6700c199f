"""The artifacts bucket side of releases, against moto's S3 (which honours If-None-Match: *
and If-Match on PutObject): publish once, refuse other bytes without a race, keep the wanted
release pointer consistent; and the deploy flow keeping that pointer true."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from choiros_infra import release_flow
from choiros_infra.host_access import HostAccess
from choiros_infra.release_store import ReleaseError, ReleaseStore, sidecar_sha256
from choiros_infra.stack_target import StackTarget
from choiros_infra.targets import TargetChoice
from infra.config import load_stack_file
from kitchen.release import build_release
from provisioning.host_tools.choiros_release import Wanted, parse_wanted, release_key

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket="artifacts",
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def objects(s3: Any) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket="artifacts").get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket="artifacts", Key=o["Key"])["Body"].read()
            for o in listed}


def test_publish_puts_both_objects_then_the_same_bytes_are_a_no_op(
        s3: Any, tmp_path: Path) -> None:
    tarball = build_release("2.0.0", tmp_path)
    store = ReleaseStore(s3, "artifacts")
    assert store.publish(tarball, sidecar_sha256(tarball)) is True
    before = objects(s3)
    assert set(before) == {"releases/2.0.0/choiros-2.0.0.tar.gz",
                           "releases/2.0.0/choiros-2.0.0.tar.gz.sha256"}
    assert before["releases/2.0.0/choiros-2.0.0.tar.gz"] == tarball.read_bytes()
    assert store.publish(tarball, sidecar_sha256(tarball)) is False
    assert objects(s3) == before
    assert store.check_published("2.0.0") == hashlib.sha256(tarball.read_bytes()).hexdigest()


def test_other_bytes_under_a_used_version_are_refused_and_the_bucket_is_unchanged(
        s3: Any, tmp_path: Path) -> None:
    good = build_release("2.0.0", tmp_path / "good")
    other = build_release("2.0.0", tmp_path / "other", unhealthy=True)
    store = ReleaseStore(s3, "artifacts")
    store.publish(good, sidecar_sha256(good))
    before = objects(s3)
    with pytest.raises(ReleaseError, match="already published with other bytes") as refused:
        store.publish(other, sidecar_sha256(other))
    assert refused.value.code == 3
    assert objects(s3) == before


def test_the_conditional_write_refuses_even_when_the_checksum_is_not_there_yet(
        s3: Any, tmp_path: Path) -> None:
    """A writer that lost the race: the tarball key exists (another upload in flight, no
    .sha256 yet). S3's If-None-Match refuses the write; the bytes decide."""
    good = build_release("3.0.0", tmp_path / "good")
    other = build_release("3.0.0", tmp_path / "other", unhealthy=True)
    s3.put_object(Bucket="artifacts", Key=release_key("3.0.0"), Body=good.read_bytes())
    with pytest.raises(ReleaseError, match="other bytes"):
        ReleaseStore(s3, "artifacts").publish(other, sidecar_sha256(other))
    assert objects(s3) == {release_key("3.0.0"): good.read_bytes()}
    assert ReleaseStore(s3, "artifacts").publish(good, sidecar_sha256(good)) is True


def test_a_damaged_published_release_is_found(s3: Any, tmp_path: Path) -> None:
    tarball = build_release("2.0.0", tmp_path)
    store = ReleaseStore(s3, "artifacts")
    store.publish(tarball, sidecar_sha256(tarball))
    s3.put_object(Bucket="artifacts", Key=release_key("2.0.0"), Body=b"truncated")
    with pytest.raises(ReleaseError, match="does not match its checksum"):
        store.check_published("2.0.0")
    with pytest.raises(ReleaseError, match="is not in"):
        store.check_published("9.9.9")


def test_the_pointer_is_written_only_over_what_was_read(s3: Any) -> None:
    store = ReleaseStore(s3, "artifacts")
    assert store.wanted() is None
    first = store.set_wanted("1.0.0", "a" * 64, since=None)
    read = store.wanted()
    assert read is not None and (read.version, read.sha256, read.verified) == (
        "1.0.0", "a" * 64, False)
    with pytest.raises(ReleaseError, match="changed while this command ran"):
        store.set_wanted("2.0.0", "b" * 64, since=None)  # someone set it meanwhile
    second = store.set_wanted("2.0.0", "b" * 64, since=first, verified=True)
    with pytest.raises(ReleaseError, match="changed while this command ran"):
        store.set_wanted("3.0.0", "c" * 64, since=first)  # first is stale now
    assert store.wanted() == second
    assert parse_wanted(objects(s3)["wanted-release.json"]) == Wanted("2.0.0",
                                                                                "b" * 64)


# --- the deploy flow keeps the pointer true ----------------------------------------------

class FakeHost:
    """choiros-deploy's exit status as the host would give it; records what ran."""

    def __init__(self, code: int) -> None:
        self.code, self.ran = code, []

    def __call__(self, access: HostAccess, argv: list[str], **_: Any) -> tuple[int, str]:
        self.ran.append(argv)
        return self.code, ""


@pytest.fixture
def stack(s3: Any, tmp_path: Path) -> StackTarget:
    cfg = load_stack_file(ROOT / "Pulumi.example.yaml")
    target = StackTarget(ROOT / "Pulumi.example.yaml", cfg, TargetChoice.kitchen,
                         "123456789012", "artifacts")
    object.__setattr__(target, "s3", lambda: s3)
    store = ReleaseStore(s3, "artifacts")
    for version in ("1.0.0", "2.0.0"):
        tarball = build_release(version, tmp_path / version)
        store.publish(tarball, sidecar_sha256(tarball))
    store.set_wanted("1.0.0", store.check_published("1.0.0"), since=None, verified=True)
    return target


@pytest.mark.parametrize(("host_code", "checks", "exit_code", "wanted", "verified"), [
    (0, 0, 0, "2.0.0", True),     # live, healthy, checked
    (0, 1, 1, "2.0.0", False),    # healthy but the checks failed: wanted, not verified
    (1, 0, 1, "1.0.0", True),     # unhealthy, the host switched back: so does the pointer
    (3, 0, 3, "1.0.0", True),     # refused on the host: nothing changed
    (4, 0, 4, "1.0.0", True),     # needs an operator: the last good release stays wanted
])
def test_deploy_moves_the_wanted_release_with_the_host(
        stack: StackTarget, monkeypatch: pytest.MonkeyPatch, host_code: int, checks: int,
        exit_code: int, wanted: str, verified: bool) -> None:
    fake = FakeHost(host_code)
    monkeypatch.setattr(release_flow, "run_on_host", fake)
    monkeypatch.setattr(release_flow, "check_reachable", lambda access: None)
    said: list[str] = []
    code = release_flow.deploy(stack, HostAccess("ssh://admin@192.0.2.1"), "2.0.0",
                               check=lambda s, a: checks, say=said.append)
    assert code == exit_code, said
    sha = stack.releases().check_published("2.0.0")
    assert fake.ran == [["sudo", "-n", "choiros-deploy", "2.0.0", "--sha256", sha]]
    now = stack.releases().wanted()
    assert now is not None and (now.version, now.verified) == (wanted, verified)


def test_deploy_refuses_an_unpublished_version_before_touching_anything(
        stack: StackTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeHost(0)
    monkeypatch.setattr(release_flow, "run_on_host", fake)
    before = stack.releases().wanted()
    with pytest.raises(ReleaseError, match="is not in") as refused:
        release_flow.deploy(stack, HostAccess("ssh://admin@192.0.2.1"), "7.0.0",
                            check=lambda s, a: 0, say=lambda _: None)
    assert refused.value.code == 3
    assert fake.ran == [] and stack.releases().wanted() == before


# --- promote: only what staging runs and verified --------------------------------------------

@pytest.fixture
def production(s3: Any) -> StackTarget:
    s3.create_bucket(Bucket="prod-artifacts",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    cfg = load_stack_file(ROOT / "Pulumi.example.yaml")
    target = StackTarget(ROOT / "Pulumi.production.yaml", replace(cfg, stack="production"),
                         TargetChoice.kitchen, "123456789012", "prod-artifacts")
    object.__setattr__(target, "s3", lambda: s3)
    return target


def staging_runs(monkeypatch: pytest.MonkeyPatch, version: str, sha256: str) -> FakeHost:
    monkeypatch.setattr(release_flow, "host_status", lambda access: release_flow.Running(
        Wanted(version, sha256), None))
    monkeypatch.setattr(release_flow, "check_reachable", lambda access: None)
    fake = FakeHost(0)
    monkeypatch.setattr(release_flow, "run_on_host", fake)
    return fake


def promote(stack: StackTarget, production: StackTarget, version: str) -> int:
    access = HostAccess("ssh://admin@192.0.2.1")
    return release_flow.promote(version, stack, access, production, access,
                                check=lambda s, a: 0, say=lambda _: None)


def test_promote_copies_the_verified_bytes_and_deploys_them(
        stack: StackTarget, production: StackTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = stack.releases().check_published("1.0.0")
    fake = staging_runs(monkeypatch, "1.0.0", sha)
    assert promote(stack, production, "1.0.0") == 0
    assert production.releases().check_published("1.0.0") == sha
    assert fake.ran == [["sudo", "-n", "choiros-deploy", "1.0.0", "--sha256", sha]]
    wanted = production.releases().wanted()
    assert wanted is not None and (wanted.version, wanted.sha256, wanted.verified) == (
        "1.0.0", sha, True)


@pytest.mark.parametrize(("setup", "says"), [
    ("not-wanted", "does not want 2.0.0"),
    ("not-verified", "did not pass verify on staging"),
    ("runs-other", "staging's host runs 1.0.0"),
])
def test_promote_refuses_what_staging_did_not_run_and_verify(
        stack: StackTarget, production: StackTarget, monkeypatch: pytest.MonkeyPatch,
        setup: str, says: str) -> None:
    store = stack.releases()
    sha2 = store.check_published("2.0.0")
    if setup != "not-wanted":
        store.set_wanted("2.0.0", sha2, since=store.wanted(), verified=setup != "not-verified")
    fake = staging_runs(monkeypatch, "1.0.0" if setup == "runs-other" else "2.0.0", sha2)
    with pytest.raises(ReleaseError, match=says):
        promote(stack, production, "2.0.0")
    assert fake.ran == [] and production.releases().wanted() is None
    assert production.releases().published_sha256("2.0.0") is None
