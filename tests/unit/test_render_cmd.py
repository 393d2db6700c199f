"""``choiros-infra render``: account ids named, output directories never mixed, the decoded
cloud-config beside the user-data."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from choiros_infra import cli

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "Pulumi.example.yaml"
ACCOUNT = "210987654321"


def render(out: Path, *flags: str) -> Any:
    return CliRunner().invoke(cli.app, ["render", "--stack-file", str(EXAMPLE), "--out",
                                        str(out), *flags], env={"COLUMNS": "200"})


def test_aws_needs_an_account_id_and_writes_nothing_without_one(tmp_path: Path) -> None:
    result = render(tmp_path / "out", "--target", "aws")
    assert result.exit_code == 2, result.stdout
    assert "Error: --target aws needs --account-id" in result.stderr
    assert "Try: --account-id $(aws sts get-caller-identity" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["abc", "12345", "1234567890123", "12345678901x"])
def test_an_account_id_that_is_not_twelve_digits_is_refused(tmp_path: Path, bad: str) -> None:
    result = render(tmp_path / "out", "--target", "aws", "--account-id", bad)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("Error: choiros:account-id = ")
    assert "12 digits" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_bucket_names_end_in_the_given_account_and_cloud_config_is_decoded(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = render(out, "--target", "aws", "--account-id", ACCOUNT)
    assert result.exit_code == 0, result.stderr
    assert f"account {ACCOUNT}" in result.stdout
    cloud_config = (out / "cloud-config.yaml").read_text()
    assert gzip.decompress((out / "user-data").read_bytes()).decode() == cloud_config
    assert f"choiros-example-backups-{ACCOUNT}" in (out / "files/etc/choiros/host.json").read_text()


def test_the_kitchen_uses_its_own_account_by_default(tmp_path: Path) -> None:
    result = render(tmp_path / "out", "--target", "kitchen")
    assert result.exit_code == 0, result.stderr
    assert "account 123456789012" in result.stdout


def test_a_second_render_replaces_the_first_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert render(out, "--target", "kitchen").exit_code == 0
    stale = out / "files" / "etc" / "stale.conf"
    stale.write_text("from an older render\n")
    assert render(out, "--target", "aws", "--account-id", ACCOUNT).exit_code == 0
    assert not stale.exists()
    assert f"choiros-example-backups-{ACCOUNT}" in (out / "files/etc/choiros/host.json").read_text()


@pytest.mark.parametrize("other", ["notes.txt", "user-data"])
def test_a_directory_with_anything_else_is_refused_and_left_alone(tmp_path: Path,
                                                                  other: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / other).write_text("keep me\n")
    result = render(out, "--target", "kitchen")
    assert result.exit_code == 2, result.stdout
    assert f"--out {out} is not empty and not an earlier render" in result.stderr
    assert (out / other).read_text() == "keep me\n"
    assert sorted(p.name for p in out.iterdir()) == [other]
