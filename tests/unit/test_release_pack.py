"""`choiros-infra release pack`: a build becomes a release the host's own validator accepted,
or nothing is written and the error names the bad input."""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from choiros_infra.cli import app
from provisioning.host_tools.choiros_release import inspect_release, parse_sha256_file

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def build(tmp_path: Path) -> tuple[Path, Path]:
    sandbox = tmp_path / "target" / "sandbox"
    sandbox.parent.mkdir()
    sandbox.write_bytes(b"\x7fELF stand-in binary")
    sandbox.chmod(0o755)
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>choiros</html>")
    (dist / "assets" / "app.wasm").write_bytes(b"\0asm")
    return sandbox, dist


def pack(sandbox: Path, dist: Path, version: str, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["release", "pack", "--sandbox", str(sandbox),
                                      "--dist", str(dist), "--version", version,
                                      "--out", str(out)])
    return result.exit_code, result.output


def test_pack_writes_a_release_the_host_accepts(build: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = pack(*build, "1.4.2", out)
    assert code == 0, output
    tarball = out / "choiros-1.4.2.tar.gz"
    assert output.splitlines() == [str(tarball), f"{tarball}.sha256"]
    names = [n for n, _ in inspect_release(tarball, "1.4.2")]
    assert sorted(names) == ["VERSION", "dist", "dist/assets", "dist/assets/app.wasm",
                             "dist/index.html", "sandbox"]
    sha = parse_sha256_file((out / "choiros-1.4.2.tar.gz.sha256").read_text(),
                                 tarball.name)
    assert sha == __import__("hashlib").sha256(tarball.read_bytes()).hexdigest()
    with tarfile.open(tarball) as tar:
        assert tar.getmember("sandbox").mode == 0o755
    again = tmp_path / "again"
    assert pack(*build, "1.4.2", again)[0] == 0
    assert (again / tarball.name).read_bytes() == tarball.read_bytes(), "reproducible"


def _no_index(sandbox: Path, dist: Path) -> None:
    (dist / "index.html").unlink()


def _link_in_dist(sandbox: Path, dist: Path) -> None:
    os.symlink("/etc/passwd", dist / "passwd")


def _not_executable(sandbox: Path, dist: Path) -> None:
    sandbox.chmod(0o644)


def _empty(sandbox: Path, dist: Path) -> None:
    sandbox.write_bytes(b"")


@pytest.mark.parametrize(("spoil", "version", "says", "exit_code"), [
    (_no_index, "1.0.0", "dist/index.html is missing", 2),
    (_link_in_dist, "1.0.0", "'dist/passwd' is not a regular file or directory", 2),
    (_not_executable, "1.0.0", "sandbox is not executable", 2),
    (_empty, "1.0.0", "sandbox is empty", 2),
    (lambda s, d: None, "1..0", "invalid version '1..0'", 2),
    (lambda s, d: None, "-rc", "invalid version '-rc'", 2),
    (lambda s, d: None, "a/b", "invalid version 'a/b'", 2),
])
def test_bad_input_is_refused_and_nothing_is_written(
        build: tuple[Path, Path], tmp_path: Path, spoil: object, version: str, says: str,
        exit_code: int) -> None:
    spoil(*build)  # type: ignore[operator]
    out = tmp_path / "out"
    code, output = pack(*build, version, out)
    assert code == exit_code, output
    assert f"Error: {says}" in output or f"refused: {says}" in output, output
    assert "Try:" in output
    assert not out.exists() or not any(out.iterdir())


def test_missing_inputs_name_the_option(build: tuple[Path, Path], tmp_path: Path) -> None:
    sandbox, dist = build
    code, output = pack(tmp_path / "nope", dist, "1.0.0", tmp_path / "out")
    assert code == 2 and "Error: --sandbox" in output and "Try:" in output
    code, output = pack(sandbox, tmp_path / "nodist", "1.0.0", tmp_path / "out")
    assert code == 2 and "Error: --dist" in output


# --- release publish, through the CLI, against moto's S3 ------------------------------------

@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"
                 }.items():
        monkeypatch.setenv(k, v)
    shutil.copy(ROOT / "Pulumi.example.yaml", tmp_path / "Pulumi.example.yaml")
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="choiros-example-artifacts-210987654321",
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield s3


def publish(tarball: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["release", "publish", str(tarball), "--stack", "example",
                                      "--account-id", "210987654321"])
    return result.exit_code, result.output


def test_publish_once_then_same_bytes_then_other_bytes(
        build: tuple[Path, Path], tmp_path: Path, bucket: Any) -> None:
    assert pack(*build, "1.4.2", tmp_path / "a")[0] == 0
    code, output = publish(tmp_path / "a" / "choiros-1.4.2.tar.gz")
    assert code == 0 and "1.4.2: published" in output, output
    code, output = publish(tmp_path / "a" / "choiros-1.4.2.tar.gz")
    assert code == 0 and "already published with the same bytes; nothing uploaded" in output
    (build[1] / "index.html").write_text("<html>other</html>")
    assert pack(*build, "1.4.2", tmp_path / "b")[0] == 0
    code, output = publish(tmp_path / "b" / "choiros-1.4.2.tar.gz")
    assert code == 3, output
    assert "Error: release 1.4.2 is already published with other bytes" in output


def test_publish_refuses_a_tarball_without_its_checksum_or_not_a_release(
        build: tuple[Path, Path], tmp_path: Path, bucket: Any) -> None:
    assert pack(*build, "1.4.2", tmp_path / "a")[0] == 0
    tarball = tmp_path / "a" / "choiros-1.4.2.tar.gz"
    (tmp_path / "a" / "choiros-1.4.2.tar.gz.sha256").unlink()
    code, output = publish(tarball)
    assert code == 2 and ".sha256 cannot be read" in output, output
    renamed = tmp_path / "release.tgz"
    renamed.write_bytes(tarball.read_bytes())
    code, output = publish(renamed)
    assert code == 2 and "is not named choiros-VERSION.tar.gz" in output, output
    assert "Contents" not in bucket.list_objects_v2(Bucket="choiros-example-artifacts-"
                                                    "210987654321")
