"""The stand-in `sandbox` (kitchen/fixture_app) honours the ChoirOS backend contract.

Each test runs the `sandbox` of a release built by kitchen/release.py, unpacked into a temporary
directory and started through its own shebang (the system python3), on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from module_loading import host_tool, load_module

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3"),
]

REPO = Path(__file__).resolve().parents[2]


rel = load_module("kitchen_release_for_tests", REPO / "kitchen" / "release.py")
cr = host_tool("choiros_release")
cd = host_tool("choiros_deploy")

# choiros-deploy's umask on the host (provisioning/host_tools/choiros_deploy.py, deploy_main).
DEPLOY_UMASK = 0o022
# choiros-restore's umask (choiros_backup.py): what its in-process tests leave behind.
RESTORE_UMASK = 0o027

# Run the child with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE survives execve).
MDWE_EXEC = ("import ctypes, os, sys\n"
             "if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0: sys.exit(99)\n"
             "os.execv(sys.argv[1], sys.argv[1:])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    base: Path
    release: Path
    db: Path
    log: Path

    def call(self, method: str, path: str, body: bytes | None = None,
             ) -> tuple[int, dict[str, Any], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read()), r.headers["Content-Type"]
        finally:
            conn.close()

    def declare_length(self, path: str, length: int) -> int:
        """POST that only declares its body length: the app must refuse by the header alone.
        (Sending a body that large races the refusal: the app closes while the client still
        writes, and the client sees a broken pipe instead of the answer.)"""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.putrequest("POST", path)
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


def start(base: Path, version: str = "7.7.7", *, unhealthy: bool = False,
          env: dict[str, str] | None = None, prefix: list[str] | None = None,
          wait: bool = True) -> Running:
    tarball = rel.build_release(version, base / "out", unhealthy=unhealthy)
    # Unpacked as the host unpacks it (no tarfile extraction filters: Debian's 3.11.2 lacks them).
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    # Under choiros-deploy's umask: the modes it writes pass through the process umask, and an
    # in-process host tool run earlier in the session (choiros-restore sets 027) leaves its own.
    umask = os.umask(DEPLOY_UMASK)
    try:
        (base / "app").mkdir(exist_ok=True)
        cd.install_release(base / "app", tarball, cr.inspect_release(tarball, version),
                           version, digest)
    finally:
        os.umask(umask)
    release = base / "app" / "releases" / version
    (base / "data").mkdir(exist_ok=True)
    (base / "cwd").mkdir(exist_ok=True)
    port = free_port()
    full_env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "BIND": "127.0.0.1",
                "DATABASE_URL": str(base / "data" / "events.db"), **(env or {})}
    log = base / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*(prefix or []), str(release / "sandbox")], cwd=base / "cwd",
                                env=full_env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(proc, port, base, release, base / "data" / "events.db",
                      log)
    deadline = time.monotonic() + 15
    while wait:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sandbox did not start: {log.read_text()}") from None
            time.sleep(0.02)
    return running


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path)
    yield running
    running.stop()


def test_health_contract(app: Running) -> None:
    assert app.call("GET", "/health") == (
        200, {"status": "healthy", "service": "choiros-sandbox", "version": "7.7.7"},
        "application/json")


def test_events_are_stored_in_sqlite_in_wal_mode(app: Running) -> None:
    events = [{"type": "note", "n": i, "text": "ünïcode"} for i in range(25)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda e: app.call("POST", "/api/events",
                                                   json.dumps(e).encode()), events))
    assert {a[0] for a in answers} == {201}
    assert sorted(a[1]["id"] for a in answers) == list(range(1, 26))
    assert app.call("GET", "/api/events/count")[:2] == (200, {"count": 25})

    with sqlite3.connect(app.db) as conn:  # committed before the answer: visible right away
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT id, body, received_at FROM events ORDER BY id").fetchall()
    assert sorted(json.loads(body)["n"] for _, body, _ in rows) == list(range(25))
    assert all(received.endswith("+00:00") for _, _, received in rows)
    conn.close()


def test_bad_requests_get_json_errors(app: Running) -> None:
    assert app.call("POST", "/api/events", b"{not json")[:2] == (
        400, {"error": "body must be JSON"})
    assert app.call("POST", "/api/events", b"\xff\xfe")[0] == 400
    assert app.declare_length("/api/events", (1 << 20) + 1) == 413
    assert app.call("GET", "/nope")[:2] == (404, {"error": "not found"})
    assert app.call("POST", "/health", b"{}")[0] == 404
    assert app.call("GET", "/api/events/count")[:2] == (200, {"count": 0})


def test_logs_a_line_per_request_and_stops_cleanly_on_sigterm(app: Running) -> None:
    app.call("GET", "/health")
    app.call("POST", "/api/events", b'{"a": 1}')
    assert app.stop() == 0
    lines = app.log.read_text().splitlines()
    assert lines[0].startswith("choiros-sandbox stand-in 7.7.7 on 127.0.0.1:")
    assert any('"GET /health HTTP/1.1" 200' in line for line in lines)
    assert any('"POST /api/events HTTP/1.1" 201' in line for line in lines)


def test_writes_nothing_outside_the_database_directory(tmp_path: Path) -> None:
    running = start(tmp_path)
    try:
        release_before = tree(running.release)
        running.call("POST", "/api/events", b'{"a": 1}')
        running.call("GET", "/api/events/count")
    finally:
        assert running.stop() == 0
    assert tree(running.release) == release_before  # no __pycache__, no temp files
    assert tree(tmp_path / "cwd") == {}
    written = {p.name for p in (tmp_path / "data").iterdir()}
    assert "events.db" in written
    assert written <= {"events.db", "events.db-wal", "events.db-shm"}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to drop to nobody")
def test_runs_as_nobody_without_capabilities_and_with_memory_deny_write_execute() -> None:
    """Like the hardened unit: no capabilities, only the data directory writable, no W+X;
    whatever umask earlier tests in this process left (choiros-restore's, here)."""
    base = Path(tempfile.mkdtemp(prefix="choiros-fixture-"))
    umask = os.umask(RESTORE_UMASK)
    try:
        base.chmod(0o755)
        (base / "data").mkdir()
        os.chown(base / "data", 65534, 65534)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                  "/usr/bin/python3", "-c", MDWE_EXEC]
        running = start(base, prefix=prefix, wait=False)
        deadline = time.monotonic() + 15
        while True:
            try:
                status = running.call("GET", "/health")[0]
                break
            except OSError:
                if running.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"exit {running.proc.poll()}: {running.log.read_text()}")
                time.sleep(0.05)
        try:
            assert status == 200
            pid = running.proc.pid
            proc_status = Path(f"/proc/{pid}/status").read_text()
            assert "\nCapEff:\t0000000000000000\n" in proc_status
            assert "\nUid:\t65534\t" in proc_status
            assert running.call("POST", "/api/events", b'{"hardened": true}')[0] == 201
            assert running.call("GET", "/api/events/count")[1] == {"count": 1}
        finally:
            assert running.stop() == 0
    finally:
        os.umask(umask)
        shutil.rmtree(base)


@pytest.mark.parametrize("how", ["env", "release"])
def test_can_be_made_unhealthy(tmp_path: Path, how: str) -> None:
    running = start(tmp_path, unhealthy=how == "release",
                    env={"FIXTURE_UNHEALTHY": "1"} if how == "env" else None)
    try:
        assert running.call("GET", "/health")[:2] == (
            503, {"status": "unhealthy", "service": "choiros-sandbox", "version": "7.7.7"})
        assert running.call("POST", "/api/events", b"{}")[0] == 201  # the rest still works
    finally:
        running.stop()


def test_accepts_sqlite_url_forms(tmp_path: Path) -> None:
    db = tmp_path / "data" / "other.db"
    running = start(tmp_path, env={"DATABASE_URL": f"sqlite://{db}?mode=rwc"})
    try:
        assert running.call("POST", "/api/events", b"{}")[0] == 201
    finally:
        running.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    conn.close()


@pytest.mark.parametrize(("env", "code", "message"), [
    ({"DATABASE_URL": ""}, 2, "Error: DATABASE_URL is not set"),
    ({"DATABASE_URL": "/nonexistent/dir/events.db"}, 1, "Error: cannot open the event store"),
])
def test_refuses_to_start_without_a_usable_database(tmp_path: Path, env: dict[str, str],
                                                    code: int, message: str) -> None:
    running = start(tmp_path, env=env, wait=False)
    assert running.proc.wait(timeout=10) == code
    output = running.log.read_text()
    assert message in output
    assert "\nTry: " in output


# --- the agent's tools (the real app's bash and write_file tools, for the kitchen's sandbox
# tests) ------------------------------------------------------------------------------------


def tool(app: Running, name: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, body, _ = app.call("POST", f"/api/tools/{name}", json.dumps(args).encode())
    return status, body


def test_bash_tool_runs_sh_in_the_working_directory(app: Running) -> None:
    status, out = tool(app, "bash", {"command": "pwd; echo made > made.txt", "timeout_ms": 5000})
    assert (status, out) == (200, {"success": True, "content": f"{app.base / 'cwd'}\n"})
    assert (app.base / "cwd" / "made.txt").read_text() == "made\n"


def test_bash_tool_reports_a_failed_command_like_the_real_tool_output(app: Running) -> None:
    status, out = tool(app, "bash", {"command": "echo out; echo err >&2; exit 3"})
    assert status == 200 and out["success"] is False
    assert out["content"] == "Exit code: Some(3)\nStdout: out\n\nStderr: err\n"


def test_bash_tool_kills_a_command_past_its_timeout(app: Running) -> None:
    started = time.monotonic()
    status, out = tool(app, "bash", {"command": "sleep 10", "timeout_ms": 300})
    assert (status, out) == (500, {"error": "Tool error: Command timed out after 300ms"})
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("args", [{}, {"command": 3}, {"command": "true", "timeout_ms": "1"},
                                  {"command": "true", "timeout_ms": 0}])
def test_bash_tool_refuses_bad_input(app: Running, args: dict[str, Any]) -> None:
    status, out = tool(app, "bash", args)
    assert status == 400 and out["error"].startswith("Tool error: ")


def test_write_file_tool_writes_relative_paths_and_creates_parents(app: Running) -> None:
    status, out = tool(app, "write_file", {"path": "notes/day/1.md", "content": "hello"})
    assert (status, out) == (200, {"success": True,
                                   "content": "Successfully wrote to notes/day/1.md"})
    assert (app.base / "cwd" / "notes" / "day" / "1.md").read_text() == "hello"


def test_write_file_tool_refuses_absolute_paths_and_reports_failures(app: Running) -> None:
    status, out = tool(app, "write_file", {"path": str(app.base / "abs.txt"), "content": "x"})
    assert status == 400 and "outside the working directory" in out["error"]
    assert not (app.base / "abs.txt").exists()
    (app.base / "cwd" / "taken").write_text("a file, not a directory")
    status, out = tool(app, "write_file", {"path": "taken/x.txt", "content": "x"})
    assert status == 200 and out["success"] is False
    assert out["content"].startswith("Failed to create directory: ")


def test_tools_refuse_a_body_that_is_not_a_json_object(app: Running) -> None:
    status, body, _ = app.call("POST", "/api/tools/bash", b"[1, 2]")
    assert (status, body) == (400, {"error": "Tool error: body must be a JSON object"})
