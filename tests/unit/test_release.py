"""kitchen/release.py builds the stand-in release through provisioning/release_format.py, in
exactly the format choiros-deploy accepts."""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

import pytest
from module_loading import host_tool, load_module

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


rel = load_module("kitchen_release_for_tests", REPO / "kitchen" / "release.py")
RELEASE_MTIME = 1_700_000_000  # provisioning/release_format.py's fixed mtime
cr = host_tool("choiros_release")


def test_builds_are_byte_for_byte_reproducible(tmp_path: Path) -> None:
    a = rel.build_release("1.2.3", tmp_path / "a")
    b = rel.build_release("1.2.3", tmp_path / "b")
    assert a.name == "choiros-1.2.3.tar.gz"
    assert a.read_bytes() == b.read_bytes()
    sha_a = a.with_name(a.name + ".sha256")
    assert sha_a.read_bytes() == b.with_name(b.name + ".sha256").read_bytes()
    assert rel.build_release("1.2.3", tmp_path / "a") == a  # rebuilding in place: same bytes
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "choiros-1.2.3.tar.gz", "choiros-1.2.3.tar.gz.sha256"]


def test_checksum_file_is_sha256sum_format(tmp_path: Path) -> None:
    tarball = rel.build_release("1.2.3", tmp_path)
    text = tarball.with_name(tarball.name + ".sha256").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}  choiros-1\.2\.3\.tar\.gz\n", text)
    assert text.split()[0] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert cr.parse_sha256_file(text, tarball.name) == text.split()[0]


def test_tarball_layout_and_metadata(tmp_path: Path) -> None:
    tarball = rel.build_release("1.2.3", tmp_path)
    data = tarball.read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] & 0x08 == 0  # no file name in the gzip header
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["VERSION", "dist", "dist/index.html", "sandbox"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {
            (RELEASE_MTIME, 0, 0, "root", "root")}
        assert {m.name: (m.type, m.mode) for m in members} == {
            "VERSION": (tarfile.REGTYPE, 0o644), "dist": (tarfile.DIRTYPE, 0o755),
            "dist/index.html": (tarfile.REGTYPE, 0o644), "sandbox": (tarfile.REGTYPE, 0o755)}

        def read(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None
            return f.read()

        assert read("VERSION") == b"1.2.3\n"
        assert read("sandbox") == (REPO / "kitchen" / "fixture_app" / "sandbox.py").read_bytes()
        assert read("sandbox").startswith(b"#!/usr/bin/python3\n")
        index = read("dist/index.html")
        assert b'<meta name="choiros-release" content="1.2.3">' in index
        assert b"@VERSION@" not in index


def test_the_deploy_tool_accepts_what_the_builder_makes(tmp_path: Path) -> None:
    for unhealthy in (False, True):
        tarball = rel.build_release("2024.11.25+abc", tmp_path / str(unhealthy),
                                    unhealthy=unhealthy)
        entries = cr.inspect_release(tarball, "2024.11.25+abc")
        names = [name for name, _ in entries]
        assert ("UNHEALTHY" in names) is unhealthy


def test_unhealthy_releases_carry_the_marker(tmp_path: Path) -> None:
    good = rel.build_release("1.0", tmp_path / "good")
    bad = rel.build_release("1.0", tmp_path / "bad", unhealthy=True)
    assert good.read_bytes() != bad.read_bytes()
    with tarfile.open(bad) as tar:
        assert "UNHEALTHY" in tar.getnames()


@pytest.mark.parametrize("version", ["", "-1", ".1", "1..2", "a/b", "x" * 65, "1 2", "ü"])
def test_invalid_versions_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(ValueError, match="invalid version"):
        rel.build_release(version, tmp_path)
    assert not any(tmp_path.iterdir())


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rel.main(["5.0", str(tmp_path), "--unhealthy"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'choiros-5.0.tar.gz'}\n"
    assert rel.main(["../5.0", str(tmp_path)]) == 2
    assert "Error: invalid version" in capsys.readouterr().err
