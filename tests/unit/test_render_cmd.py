"""`choiros-infra render`: the exact user-data and its decoded cloud-config, for the account
the stack really lives in, into a directory that never keeps a stale file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choiros_infra.cli import app

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "Pulumi.example.yaml"


def render(out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["render", "--stack-file", str(EXAMPLE), "--out", str(out),
                                      *extra])
    return result.exit_code, result.output


def test_aws_needs_the_account_and_it_must_be_one(tmp_path: Path) -> None:
    code, output = render(tmp_path / "r")
    assert code == 2 and "--target aws needs --account-id" in output and "Try:" in output
    code, output = render(tmp_path / "r", "--account-id", "abc")
    assert code == 2 and "'abc' is not an AWS account id (12 digits)" in output
    assert not (tmp_path / "r").exists()


def test_the_cloud_config_is_written_decoded_beside_the_user_data(tmp_path: Path) -> None:
    code, output = render(tmp_path / "r", "--account-id", "210987654321")
    assert code == 0, output
    assert "account 210987654321" in output
    user_data = (tmp_path / "r" / "user-data").read_bytes()
    cloud_config = (tmp_path / "r" / "cloud-config.yaml").read_bytes()
    assert cloud_config.startswith(b"#cloud-config")
    assert cloud_config == (gzip.decompress(user_data) if user_data[:2] == b"\x1f\x8b"
                            else user_data)
    assert b"choiros-example-artifacts-210987654321" in cloud_config


def test_a_second_render_leaves_no_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert render(out, "--target", "kitchen")[0] == 0
    stale = out / "files" / "etc" / "stale.conf"
    stale.write_text("from an older template")
    assert render(out, "--target", "kitchen")[0] == 0
    assert not stale.exists()
    assert (out / "manifest.json").is_file()


def test_a_directory_that_is_not_a_render_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, output = render(out, "--target", "kitchen")
    assert code == 2 and "is not empty and holds more than an earlier render" in output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_refused_out_directory_is_named_with_its_brackets(tmp_path: Path) -> None:
    out = tmp_path / "out [1]"
    out.mkdir()
    (out / "stray").write_text("not a render")
    code, output = render(out, "--target", "kitchen")
    assert code == 2
    assert f"Error: --out {out} is not empty" in output
    assert (out / "stray").read_text() == "not a render"
