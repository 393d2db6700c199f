"""choiros-deploy and choiros-rollback end to end, on a temporary app_root.

A fake `systemctl` first on PATH really (re)starts the current release's `sandbox` (the stand-in
app built by kitchen/release.py) on a free port, so every deploy and rollback is health-checked
against a live server, and a release that fails its health check is really rolled back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from module_loading import host_tool, load_module
from moto import mock_aws

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "provisioning" / "host_tools"


tool = host_tool("choiros_tool")
cr = host_tool("choiros_release")
cd = host_tool("choiros_deploy")
rel = load_module("kitchen_release_for_tests", REPO / "kitchen" / "release.py")

def upload(s3: Any, tarball: Path) -> None:
    """Publish a release as an operator would (tarball, then its checksum)."""
    key = cr.release_key(tarball.name.removeprefix("choiros-").removesuffix(".tar.gz"))
    s3.put_object(Bucket="artifacts", Key=key, Body=tarball.read_bytes())
    s3.put_object(Bucket="artifacts", Key=key + ".sha256",
                  Body=tarball.with_name(tarball.name + ".sha256").read_bytes())


FAKE_SYSTEMCTL = '''#!{python}
"""Fake systemctl: `restart UNIT` (re)starts $FAKE_APP_ROOT/current/sandbox on $FAKE_PORT."""
import os, signal, socket, subprocess, sys, time
from pathlib import Path

state = Path(os.environ["FAKE_STATE"])
with (state / "calls.log").open("a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:2] != ["restart"]:
    sys.exit("fake systemctl only restarts")
port = int(os.environ["FAKE_PORT"])
pidfile = state / "backend.pid"
if pidfile.exists():
    try:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the old server has let go of the port
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            break
        time.sleep(0.02)
sandbox = Path(os.environ["FAKE_APP_ROOT"]) / "current" / "sandbox"
if not sandbox.is_file():
    sys.exit("no current release")
log = (state / "backend.log").open("ab")
env = {{**os.environ, "PORT": str(port), "BIND": "127.0.0.1",
       "DATABASE_URL": str(state / "events.db")}}
proc = subprocess.Popen([sys.executable, str(sandbox)], stdout=log, stderr=log, env=env,
                        start_new_session=True)
pidfile.write_text(str(proc.pid))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under root, byte for byte, including directory mtimes."""
    out: dict[str, tuple[Any, ...]] = {".": ("dir", root.stat().st_mode, root.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st, key = p.lstat(), str(p.relative_to(root))
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_dir():
                out[key] = ("dir", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
            else:
                out[key] = ("file", st.st_mode, st.st_uid, st.st_gid, p.read_bytes())
    return out


@dataclass
class Host:
    root: Path
    config: Path
    state: Path
    port: int
    artifacts: Path
    tmp: Path

    def deploy(self, *args: str) -> int:
        code: int = cd.deploy_main([*args, "--config", str(self.config)])
        return code

    def rollback(self) -> int:
        code: int = cd.rollback_main(["--config", str(self.config)])
        return code

    def configure(self, **changes: Any) -> None:
        cfg = json.loads(self.config.read_text())
        cfg.update(changes)
        self.config.write_text(json.dumps(cfg))

    def link(self, name: str) -> str | None:
        p = self.root / name
        return os.readlink(p) if p.is_symlink() else None

    def history(self) -> list[dict[str, Any]]:
        p = self.root / "deploy-history.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def restarts(self) -> int:
        p = self.state / "calls.log"
        return len(p.read_text().splitlines()) if p.exists() else 0

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def build(self, version: str, *, unhealthy: bool = False) -> Path:
        tarball: Path = rel.build_release(version, self.artifacts, unhealthy=unhealthy)
        return tarball

    def releases(self) -> set[str]:
        """The release directories; each has its checksum record beside it, and a pruned
        release takes its record with it."""
        entries = list((self.root / "releases").iterdir())
        dirs = {p.name for p in entries if p.is_dir()}
        assert {p.name for p in entries if not p.is_dir()} == {f"{d}.sha256" for d in dirs}
        return dirs


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    root, state, artifacts, tmp, bin_dir = (tmp_path / n for n in
                                            ("opt", "state", "artifacts", "tmp", "bin"))
    for d in (root, state, artifacts, tmp, bin_dir):
        d.mkdir()
    port = free_port()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    systemctl.chmod(0o755)
    config = tmp_path / "host.json"
    config.write_text(json.dumps({
        "region": "eu-west-1", "artifacts_bucket": "artifacts", "app_root": str(root),
        "backups_bucket": "backups", "backup_prefix": "hosts/test/",
        "backend_unit": "choiros-backend.service", "keep_releases": 5,
        "health_url": f"http://127.0.0.1:{port}/health", "health_timeout_seconds": 5,
        "env_file": str(tmp_path / "backend.env"), "secrets": []}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CHOIROS_SYSTEMCTL", raising=False)
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_PORT", str(port))
    monkeypatch.setenv("FAKE_APP_ROOT", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield Host(root, config, state, port, artifacts, tmp)
    pidfile = state / "backend.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": "/dev/null",
                 "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="artifacts",
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield s3


# ---- good deploys ------------------------------------------------------------------------------

def test_first_deploy_from_the_bucket_goes_live(host: Host, bucket: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    upload(bucket, host.build("1.0.0"))

    assert host.deploy("1.0.0") == 0

    assert host.link("current") == "releases/1.0.0"
    assert host.link("previous") is None
    assert host.health() == (200, {"status": "healthy", "service": "choiros-sandbox",
                                   "version": "1.0.0"})
    assert "1.0.0 is live and healthy" in capsys.readouterr().out
    release = host.root / "releases" / "1.0.0"
    assert sorted(p.relative_to(release).as_posix() for p in release.rglob("*")) == [
        "VERSION", "dist", "dist/index.html", "sandbox"]
    modes = {p.name: p.stat().st_mode & 0o7777 for p in [release, *release.rglob("*")]}
    assert modes == {"1.0.0": 0o755, "VERSION": 0o644, "dist": 0o755, "index.html": 0o644,
                     "sandbox": 0o755}
    assert {p.stat().st_uid for p in release.rglob("*")} == {os.getuid()}
    assert b'content="1.0.0"' in (release / "dist" / "index.html").read_bytes()
    [line] = host.history()
    assert set(line) == {"time", "action", "from", "to", "sha256", "result", "reason"}
    digest = hashlib.sha256(host.build("1.0.0").read_bytes()).hexdigest()
    assert line["sha256"] == digest
    assert (host.root / "releases" / "1.0.0.sha256").read_text() == (
        f"{digest}  choiros-1.0.0.tar.gz\n")
    assert line["time"].endswith("Z")
    assert (line["action"], line["from"], line["to"], line["result"], line["reason"]) == (
        "deploy", None, "1.0.0", "ok", None)
    assert (host.state / "calls.log").read_text() == "restart choiros-backend.service\n"
    assert list(host.tmp.iterdir()) == []


def test_second_deploy_keeps_previous_and_same_version_is_a_noop(
        host: Host, bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for v in ("1.0.0", "2.0.0"):
        upload(bucket, host.build(v))
    assert host.deploy("1.0.0") == 0
    assert host.deploy("2.0.0") == 0
    assert (host.link("current"), host.link("previous")) == ("releases/2.0.0", "releases/1.0.0")
    assert host.health()[1]["version"] == "2.0.0"
    before, restarts = snapshot(host.root), host.restarts()
    capsys.readouterr()

    assert host.deploy("2.0.0") == 0

    assert "Release 2.0.0 is already current; nothing to do." in capsys.readouterr().out
    assert snapshot(host.root) == before
    assert host.restarts() == restarts
    assert [(h["from"], h["to"]) for h in host.history()] == [(None, "1.0.0"), ("1.0.0", "2.0.0")]


def test_redeploying_the_previous_release_replaces_its_copy(host: Host) -> None:
    for v in ("1.0.0", "2.0.0", "1.0.0"):
        assert host.deploy(str(host.build(v))) == 0
    assert (host.link("current"), host.link("previous")) == ("releases/1.0.0", "releases/2.0.0")
    assert host.health()[1]["version"] == "1.0.0"
    assert host.releases() == {"1.0.0", "2.0.0"}


def test_local_tarball_with_sha256_flag_and_no_sidecar(host: Host) -> None:
    tarball = host.build("3.1.4")
    sidecar = tarball.with_name(tarball.name + ".sha256")
    digest = sidecar.read_text().split()[0]
    sidecar.unlink()
    assert host.deploy(str(tarball)) == 2  # no checksum at all: refused as a usage error
    assert host.deploy(str(tarball), "--sha256", digest.upper()) == 0
    assert host.health()[1]["version"] == "3.1.4"


# ---- refused artifacts: nothing on the host changes ------------------------------------------

def _entry(name: str, data: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
    return info, data


SANDBOX = b"#!/usr/bin/python3\nprint('hi')\n"
GOOD = [_entry("dist", kind=tarfile.DIRTYPE, mode=0o755), _entry("dist/index.html", b"<html>"),
        _entry("sandbox", SANDBOX, 0o755)]


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]], compression: str = "gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _without(name: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [e for e in GOOD if e[0].name != name]


BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "missing-sandbox": (lambda: _tar(_without("sandbox")), "no sandbox binary"),
    "sandbox-not-executable": (lambda: _tar([*_without("sandbox"), _entry("sandbox", SANDBOX)]),
                               "sandbox is not executable"),
    "sandbox-empty": (lambda: _tar([*_without("sandbox"), _entry("sandbox", b"", 0o755)]),
                      "sandbox is empty"),
    "sandbox-is-a-directory": (lambda: _tar([*_without("sandbox"), _entry(
        "sandbox", kind=tarfile.DIRTYPE, mode=0o755)]), "no sandbox binary"),
    "missing-index": (lambda: _tar(_without("dist/index.html")), "dist/index.html is missing"),
    "dotdot": (lambda: _tar([*GOOD, _entry("../x", b"x")]), "unsafe path '../x'"),
    "dotdot-inside": (lambda: _tar([*GOOD, _entry("dist/../../x", b"x")]), "unsafe path"),
    "absolute": (lambda: _tar([*GOOD, _entry("/etc/cron.d/x", b"x")]), "unsafe path"),
    "control-char": (lambda: _tar([*GOOD, _entry("dist/a\nb", b"x")]), "unsafe path"),
    "symlink-escaping": (lambda: _tar([*GOOD, _entry("dist/passwd", kind=tarfile.SYMTYPE,
                                                     link="../../../../etc/passwd")]),
                         "'dist/passwd' is not a regular file"),
    "symlink-sandbox": (lambda: _tar([*_without("sandbox"), _entry(
        "sandbox", kind=tarfile.SYMTYPE, link="/bin/sh", mode=0o777)]), "not a regular file"),
    "hardlink": (lambda: _tar([*GOOD, _entry("dist/x", kind=tarfile.LNKTYPE,
                                             link="/etc/shadow")]), "not a regular file"),
    "device": (lambda: _tar([*GOOD, _entry("dist/mem", kind=tarfile.CHRTYPE)]),
               "not a regular file"),
    "fifo": (lambda: _tar([*GOOD, _entry("dist/p", kind=tarfile.FIFOTYPE)]),
             "not a regular file"),
    "duplicate": (lambda: _tar([*GOOD, _entry("sandbox", b"#!/bin/sh\n", 0o755)]),
                  "duplicate entries"),
    "inside-a-file": (lambda: _tar([*GOOD, _entry("dist/index.html/x", b"x")]),
                      "inside a file"),
    "version-mismatch": (lambda: _tar([*GOOD, _entry("VERSION", b"9.9.9\n")]),
                         "VERSION file says '9.9.9'"),
    "uncompressed-tar": (lambda: _tar(GOOD, compression=""), "not a valid .tar.gz"),
    "garbage": (lambda: b"\x1f\x8b" + os.urandom(2000), "not a valid .tar.gz"),
    "truncated-half": (lambda: (lambda b: b[: len(b) // 2])(_tar(GOOD)), "not a valid .tar.gz"),
    "truncated-gzip-trailer": (lambda: _tar(GOOD)[:-4], "not a valid .tar.gz"),
}


def _deployed_host(host: Host) -> Host:
    assert host.deploy(str(host.build("1.0.0"))) == 0
    return host


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_artifact_is_refused_and_the_host_is_untouched(
        host: Host, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    make, why = BAD[case]
    _deployed_host(host)
    tarball = host.artifacts / "choiros-2.0.0.tar.gz"
    tarball.write_bytes(make())  # the checksum matches: the content itself must be refused
    sidecar = tarball.with_name(tarball.name + ".sha256")
    sidecar.write_text(f"{hashlib.sha256(tarball.read_bytes()).hexdigest()}  {tarball.name}\n")
    before, restarts = snapshot(host.root), host.restarts()
    capsys.readouterr()

    assert host.deploy(str(tarball)) == 3

    err = capsys.readouterr().err
    assert err.startswith("Error: release 2.0.0 refused: ")
    assert why in err
    assert "\nTry: " in err
    assert snapshot(host.root) == before
    assert host.restarts() == restarts
    assert list(host.tmp.iterdir()) == []
    assert host.health()[1]["version"] == "1.0.0"


def test_wrong_checksum_in_the_bucket_is_refused_and_the_host_is_untouched(
        host: Host, bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upload(bucket, host.build("1.0.0"))
    assert host.deploy("1.0.0") == 0
    tarball = host.build("2.0.0")
    key = cr.release_key("2.0.0")
    sha_key = key + ".sha256"
    bucket.put_object(Bucket="artifacts", Key=key, Body=tarball.read_bytes()[:-100])
    bucket.put_object(Bucket="artifacts", Key=sha_key,
                      Body=tarball.with_name(tarball.name + ".sha256").read_bytes())
    before = snapshot(host.root)
    capsys.readouterr()

    assert host.deploy("2.0.0") == 3

    err = capsys.readouterr().err
    assert "Error: checksum mismatch for choiros-2.0.0.tar.gz" in err
    assert snapshot(host.root) == before
    assert list(host.tmp.iterdir()) == []


@pytest.mark.parametrize(("sha_text", "why"), [
    ("not a checksum\n", "malformed checksum file"),
    (f"{'0' * 64}  choiros-other.tar.gz\n", "malformed checksum file"),
    (f"{'0' * 64}  choiros-2.0.0.tar.gz\n", "checksum mismatch"),
])
def test_bad_local_checksum_files_are_refused(host: Host, sha_text: str, why: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _deployed_host(host)
    tarball = host.build("2.0.0")
    tarball.with_name(tarball.name + ".sha256").write_text(sha_text)
    before = snapshot(host.root)
    assert host.deploy(str(tarball)) == 3
    assert why in capsys.readouterr().err
    assert snapshot(host.root) == before


def test_release_missing_from_the_bucket(host: Host, bucket: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert host.deploy("4.0.0") == 3
    err = capsys.readouterr().err
    assert "Error: release 4.0.0 not found at s3://artifacts/releases/4.0.0/" in err
    assert "Try: list releases with: aws s3 ls s3://artifacts/releases/" in err
    assert not (host.root / "releases").exists()


def test_deploying_a_version_needs_the_artifacts_bucket(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.configure(artifacts_bucket="")
    assert host.deploy("1.0.0") == 2
    assert "Error: artifacts_bucket is not set" in capsys.readouterr().err


@pytest.mark.parametrize("arg", ["../1.0", "a..b", "x" * 65, "v1/../../etc.tar.gz",
                                 "1.0 ", ".hidden"])
def test_invalid_versions_are_usage_errors(host: Host, arg: str) -> None:
    assert host.deploy(arg) == 2
    assert snapshot(host.root) == {".": snapshot(host.root)["."]}


def test_a_second_deploy_at_the_same_time_is_refused(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    fd = os.open(host.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert host.deploy(str(host.build("1.0.0"))) == 3
        assert "another deploy or rollback is running" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert not (host.root / "releases").exists()


# ---- health checks and automatic rollback -------------------------------------------------------

def test_unhealthy_release_is_rolled_back_automatically(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.configure(health_timeout_seconds=1.5)  # a 503 is retried until the deadline
    _deployed_host(host)
    capsys.readouterr()

    assert host.deploy(str(host.build("2.0.0", unhealthy=True))) == 1

    err = capsys.readouterr().err
    assert "Error: deploy to 2.0.0 failed its health check" in err
    assert "HTTP 503" in err
    assert "rolled back to 1.0.0, which is healthy" in err
    assert (host.link("current"), host.link("previous")) == ("releases/1.0.0", None)
    assert host.health() == (200, {"status": "healthy", "service": "choiros-sandbox",
                                   "version": "1.0.0"})
    assert host.restarts() == 3
    history = host.history()
    assert [(h["action"], h["from"], h["to"], h["result"]) for h in history] == [
        ("deploy", None, "1.0.0", "ok"), ("deploy", "1.0.0", "2.0.0", "failed"),
        ("auto-rollback", "2.0.0", "1.0.0", "ok")]
    assert "HTTP 503" in history[1]["reason"]


def test_a_release_that_never_answers_is_rolled_back_after_the_deadline(host: Host) -> None:
    _deployed_host(host)
    host.configure(health_timeout_seconds=1.5)
    tarball = host.artifacts / "choiros-2.0.0.tar.gz"
    tarball.write_bytes(_tar([*_without("sandbox"),
                              _entry("sandbox", b"import sys\nsys.exit(3)\n", 0o755)]))
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    started = time.monotonic()

    assert host.deploy(str(tarball), "--sha256", digest) == 1

    assert 1.5 <= time.monotonic() - started < 8
    assert host.link("current") == "releases/1.0.0"
    failed = host.history()[1]
    assert failed["result"] == "failed"
    assert "not healthy after 1.5s" in failed["reason"]
    assert host.health()[1]["version"] == "1.0.0"


def test_an_unhealthy_first_deploy_has_nothing_to_go_back_to(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.configure(health_timeout_seconds=1.5)  # a 503 is retried until the deadline
    assert host.deploy(str(host.build("1.0.0", unhealthy=True))) == 4
    err = capsys.readouterr().err
    assert "there is no earlier release to go back to" in err
    assert "Try: tail -n 100 " in err and "logs/backend-error.log" in err
    assert [h["result"] for h in host.history()] == ["failed"]


def test_a_failing_restart_command_counts_as_unhealthy(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    _deployed_host(host)
    monkeypatch.setenv("CHOIROS_SYSTEMCTL", "/bin/false")
    assert host.deploy(str(host.build("2.0.0"))) == 4  # and the way back fails the same way
    assert [h["reason"] for h in host.history()[1:]] == [
        "/bin/false restart choiros-backend.service exited 1: "] * 2


def test_a_backend_held_back_by_a_failed_dependency_points_at_the_failed_units(
        host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """As on a new host whose restore at boot refused the backup: systemd does not start the
    backend at all, so its logs are empty and the failed units are where to look."""
    refusing = tmp_path / "systemctl-dependency-failed"
    refusing.write_text("#!/bin/sh\necho \"A dependency job for $2 failed. See 'journalctl "
                        "-xe' for details.\" >&2\nexit 1\n")
    refusing.chmod(0o755)
    monkeypatch.setenv("CHOIROS_SYSTEMCTL", str(refusing))
    assert host.deploy(str(host.build("1.0.0"))) == 4
    err = capsys.readouterr().err
    assert "A dependency job for choiros-backend.service failed" in err
    assert "Try: systemctl --failed" in err and "choiros-restore-at-boot" in err, err
    assert "backend-error.log" not in err


class _Health(BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, bytes]]] = []

    def do_GET(self) -> None:
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("answers", "expected"), [
    ([(503, b"{}"), (200, b"not json"), (200, b'{"status":"healthy"}')], None),
    ([(200, b'{"status":"starting"}')], "status is 'starting'"),
    ([(200, b"[1]")], "status is [1]"),
    ([(500, b"")], "HTTP 500"),
])
def test_wait_healthy_polls_until_the_status_is_healthy(
        answers: list[tuple[int, bytes]], expected: str | None) -> None:
    _Health.answers = list(answers)
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        reason = tool.wait_healthy(f"http://127.0.0.1:{server.server_port}/health", 0.5)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    if expected is None:
        assert reason is None
        assert elapsed < 0.5
    else:
        assert reason is not None
        assert expected in reason
        assert "not healthy after 0.5s" in reason


# ---- rollback ------------------------------------------------------------------------------

def test_rollback_switches_to_previous_and_back_again(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    for v in ("1.0.0", "2.0.0"):
        assert host.deploy(str(host.build(v))) == 0

    assert host.rollback() == 0
    assert (host.link("current"), host.link("previous")) == ("releases/1.0.0", "releases/2.0.0")
    assert host.health()[1]["version"] == "1.0.0"
    assert "rollback: 1.0.0 is live and healthy" in capsys.readouterr().out

    assert host.rollback() == 0  # a second rollback rolls forward again
    assert (host.link("current"), host.link("previous")) == ("releases/2.0.0", "releases/1.0.0")
    assert host.health()[1]["version"] == "2.0.0"
    assert [(h["action"], h["from"], h["to"], h["result"]) for h in host.history()[2:]] == [
        ("rollback", "2.0.0", "1.0.0", "ok"), ("rollback", "1.0.0", "2.0.0", "ok")]


def test_rollback_to_an_unhealthy_previous_switches_forward_again(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.configure(health_timeout_seconds=1.5)  # a 503 is retried until the deadline
    for v in ("1.0.0", "2.0.0"):
        assert host.deploy(str(host.build(v))) == 0
    (host.root / "releases" / "1.0.0" / "UNHEALTHY").touch()

    assert host.rollback() == 1

    assert "rollback to 1.0.0 failed its health check" in capsys.readouterr().err
    assert (host.link("current"), host.link("previous")) == ("releases/2.0.0", "releases/1.0.0")
    assert host.health()[1]["version"] == "2.0.0"
    assert [(h["action"], h["to"], h["result"]) for h in host.history()[2:]] == [
        ("rollback", "1.0.0", "failed"), ("auto-rollback", "2.0.0", "ok")]


def test_rollback_without_a_previous_release_is_refused(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    assert host.rollback() == 3
    _deployed_host(host)
    before = snapshot(host.root)
    assert host.rollback() == 3
    assert "Error: there is no previous release to roll back to" in capsys.readouterr().err
    assert snapshot(host.root) == before


# ---- keeping the last N releases ----------------------------------------------------------------

def test_keep_releases_prunes_the_oldest(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.configure(keep_releases=3)
    for v in ("1", "2", "3", "4", "5"):
        assert host.deploy(str(host.build(v))) == 0
    assert host.releases() == {"3", "4", "5"}
    assert "Removed old releases: 2" in capsys.readouterr().out


def test_pruning_never_removes_current_or_previous(host: Host) -> None:
    host.configure(keep_releases=2)
    for v in ("1", "2", "3"):
        assert host.deploy(str(host.build(v))) == 0
    assert host.rollback() == 0  # current 2, previous 3
    (host.root / "releases" / ".incoming-9-stale").mkdir()  # left by a crashed deploy
    assert host.deploy(str(host.build("4"))) == 0  # current 4, previous 2
    assert (host.link("current"), host.link("previous")) == ("releases/4", "releases/2")
    assert host.releases() == {"2", "4"}  # 3 is newer than 2 but not protected


# ---- the installed command lines -----------------------------------------------------------------

DEBIAN_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="needs the system python3")
def test_cli_scripts_run_under_the_system_python_without_boto3(host: Host) -> None:
    """The scripts as installed: system python3, no boto3, config from the environment."""
    env = {**os.environ, "CHOIROS_HOST_CONFIG": str(host.config),
           "CHOIROS_SYSTEMCTL": str(host.root.parent / "bin" / "systemctl")}
    env.pop("PYTHONPATH", None)
    tarball = host.build("1.0.0")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DEBIAN_PYTHON), *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    done = run(str(TOOLS / "choiros-deploy"), str(tarball))
    assert done.returncode == 0, done.stderr
    assert host.health()[1]["version"] == "1.0.0"
    done = run(str(TOOLS / "choiros-rollback"))
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        "Error: there is no previous release to roll back to",
        "Try: choiros-deploy VERSION deploys a specific release"]
    done = run("-c", f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import choiros_deploy; "
                     "print('boto3' in sys.modules)")
    assert done.stdout == "False\n"  # boto3 is only imported when AWS is used


# ---- the stack's wanted release (first boot) and what runs (--status) ------------------------

def wanted(s3: Any, version: str, sha256: str) -> None:
    s3.put_object(Bucket="artifacts", Key=cr.WANTED_KEY,
                  Body=json.dumps({"version": version, "sha256": sha256, "verified": True}))


def test_wanted_with_no_pointer_deploys_nothing(host: Host, bucket: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(host.root)
    assert host.deploy("--wanted") == 0
    assert "No wanted release is set" in capsys.readouterr().out
    assert snapshot(host.root) == before and host.restarts() == 0


def test_wanted_deploys_the_pointer_and_status_reports_it(
        host: Host, bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for v in ("1.0.0", "2.0.0"):
        upload(bucket, host.build(v))
    digest = {v: hashlib.sha256(host.build(v).read_bytes()).hexdigest() for v in ("1.0.0", "2.0.0")}
    wanted(bucket, "1.0.0", digest["1.0.0"])
    assert host.deploy("--wanted") == 0
    wanted(bucket, "2.0.0", digest["2.0.0"])
    assert host.deploy("--wanted") == 0
    capsys.readouterr()
    assert host.deploy("--status") == 0
    assert json.loads(capsys.readouterr().out) == {
        "current": {"version": "2.0.0", "sha256": digest["2.0.0"]},
        "previous": {"version": "1.0.0", "sha256": digest["1.0.0"]}}
    assert [h["sha256"] for h in host.history()] == [digest["1.0.0"], digest["2.0.0"]]


def test_a_pointer_whose_sha256_is_not_the_releases_is_refused(
        host: Host, bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upload(bucket, host.build("1.0.0"))
    wanted(bucket, "1.0.0", "0" * 64)
    before = snapshot(host.root)
    assert host.deploy("--wanted") == 3
    assert "the bucket's checksum of 1.0.0 is not --sha256" in capsys.readouterr().err
    assert snapshot(host.root) == before


@pytest.mark.parametrize("body", [b"not json", b'{"version": "../x", "sha256": "' + b"0" * 64
                                  + b'"}', b'{"version": "1.0.0", "sha256": "short"}'])
def test_a_malformed_pointer_is_refused(host: Host, bucket: Any, body: bytes,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bucket.put_object(Bucket="artifacts", Key=cr.WANTED_KEY, Body=body)
    assert host.deploy("--wanted") == 3
    assert "wanted-release.json" in capsys.readouterr().err


def test_the_current_version_with_other_bytes_is_refused(
        host: Host, bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upload(bucket, host.build("1.0.0"))
    assert host.deploy("1.0.0") == 0
    capsys.readouterr()
    assert host.deploy("1.0.0", "--sha256", "f" * 64) == 3
    assert "is current with other bytes" in capsys.readouterr().err
