#!/usr/bin/python3
"""STAND-IN for the ChoirOS backend binary `sandbox`. This is NOT the real application.

The real backend is a Rust binary that cannot be built in this repository, so kitchen releases
ship this small Python 3 program (standard library only) as `sandbox` instead. It honours the
contract the host relies on, and nothing more:

  GET  /health            200 {"status": "healthy", "service": "choiros-sandbox", "version": V}
                          503 {"status": "unhealthy", ...} when made unhealthy (see below)
  POST /api/events        a JSON body is appended to the SQLite event store: 201 {"id": N}
  GET  /api/events/count  200 {"count": N}
  POST /api/tools/bash    {"command": C, "timeout_ms": N (default 30000)}: runs `sh -c C` in the
                          working directory, like the real app's bash tool (its agent's shell);
                          200 {"success": true, "content": STDOUT} on exit 0, else 200
                          {"success": false, "content": "Exit code: ...\nStdout: ...\nStderr: ..."}
  POST /api/tools/write_file  {"path": RELATIVE, "content": TEXT}: writes the file relative to
                          the working directory, parent directories created, like the real
                          write_file tool: 200 {"success": true, "content": "Successfully wrote
                          to P"} or 200 {"success": false, "content": "Failed to ...: ERROR"}
                          (the kitchen proves the backend's sandbox through these two tools)
  a tool's bad input      400 {"error": "Tool error: ..."}; a command past its timeout is killed:
                          500 {"error": "Tool error: Command timed out after N ms"}
  anything else           404 {"error": "not found"}

Environment:
  DATABASE_URL       required: the SQLite file (an "sqlite://" or "sqlite:" prefix and a "?..."
                     suffix are ignored). Created with its table if absent, in WAL mode; its
                     directory must exist. Every event is committed before the answer is sent.
  BIND, PORT         listen address, default 0.0.0.0 and 8080.
  FIXTURE_UNHEALTHY  "1" makes /health answer 503. A file named UNHEALTHY beside this script does
                     the same; kitchen/release.py adds one for build_release(..., unhealthy=True),
                     which makes a release that fails its health check (for rollback tests).

V is the text of the VERSION file beside this script ("unknown" without one). One line per
request is logged to stdout. It writes nothing but the database (and SQLite's -wal/-shm files
beside it; temp_store is memory) and what its tools are told to write, imports only the
standard library (Python never caches the main script's bytecode), needs no capabilities and
no writable+executable memory, so it runs under the hardened systemd unit
(MemoryDenyWriteExecute, ProtectSystem=strict, no capabilities).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing, suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, cast

HERE = Path(__file__).resolve().parent
MAX_BODY = 1 << 20
SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, body TEXT NOT NULL)"""


class ToolError(Exception):
    """Bad tool input or a command that could not finish: the real app's ToolError."""


def tool_output(success: bool, content: str) -> dict[str, Any]:
    """The real app's ToolOutput."""
    return {"success": success, "content": content}


def bash_tool(args: dict[str, Any]) -> dict[str, Any]:
    """`sh -c COMMAND` in the working directory, output captured (the real bash tool)."""
    command, timeout_ms = args.get("command"), args.get("timeout_ms", 30000)
    if not isinstance(command, str):
        raise ToolError("Missing 'command' parameter")
    if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms <= 0:
        raise ToolError("'timeout_ms' must be a positive integer")
    try:
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              errors="replace", timeout=timeout_ms / 1000, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"Command timed out after {timeout_ms}ms") from None
    if done.returncode == 0:
        return tool_output(True, done.stdout)
    return tool_output(False, f"Exit code: Some({done.returncode})\nStdout: {done.stdout}\n"
                              f"Stderr: {done.stderr}")


def write_file_tool(args: dict[str, Any]) -> dict[str, Any]:
    """Writes a file relative to the working directory, parents created (the real write_file
    tool); absolute paths are refused, as the real tool refuses them outside its project."""
    path, content = args.get("path"), args.get("content")
    if not isinstance(path, str) or not path:
        raise ToolError("Missing 'path' parameter")
    if not isinstance(content, str):
        raise ToolError("Missing 'content' parameter")
    if Path(path).is_absolute():
        raise ToolError("Cannot write files outside the working directory")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return tool_output(False, f"Failed to create directory: {e}")
    try:
        Path(path).write_text(content, encoding="utf-8")
    except OSError as e:
        return tool_output(False, f"Failed to write file: {e}")
    return tool_output(True, f"Successfully wrote to {path}")


TOOLS = {"/api/tools/bash": bash_tool, "/api/tools/write_file": write_file_tool}


def read_version() -> str:
    try:
        return (HERE / "VERSION").read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def database_path(url: str) -> str:
    for prefix in ("sqlite://", "sqlite:"):
        if url.startswith(prefix):
            url = url[len(prefix):]
            break
    return url.split("?", 1)[0]


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10)
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def init_db(path: str) -> None:
    with closing(connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
        conn.execute(SCHEMA)
        conn.commit()


class App(ThreadingHTTPServer):
    # Graceful stop, as the real backend (Actix) does on SIGTERM: stop accepting, then finish
    # every request already accepted before exiting (server_close joins their threads).
    daemon_threads = False
    block_on_close = True

    def __init__(self, addr: tuple[str, int], db: str, version: str, healthy: bool) -> None:
        super().__init__(addr, Handler)
        self.db, self.version, self.healthy = db, version, healthy


class Handler(BaseHTTPRequestHandler):
    server_version = "choiros-sandbox-standin"

    @property
    def app(self) -> App:
        return cast(App, self.server)

    def send_json(self, status: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            healthy = self.app.healthy
            self.send_json(200 if healthy else 503, {
                "status": "healthy" if healthy else "unhealthy",
                "service": "choiros-sandbox", "version": self.app.version})
        elif path == "/api/events/count":
            try:
                with closing(connect(self.app.db)) as conn:
                    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.Error as e:
                self.send_json(500, {"error": f"database: {e}"})
                return
            self.send_json(200, {"count": count})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        tool = TOOLS.get(self.path.split("?", 1)[0])
        if tool is not None:
            self.run_tool(tool)
            return
        if self.path.split("?", 1)[0] != "/api/events":
            self.send_json(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send_json(411, {"error": "Content-Length required"})
            return
        if not 0 <= length <= MAX_BODY:
            self.send_json(413, {"error": f"body must be at most {MAX_BODY} bytes"})
            return
        try:
            event = json.loads(self.rfile.read(length))
        except ValueError:  # includes UnicodeDecodeError
            self.send_json(400, {"error": "body must be JSON"})
            return
        now = datetime.now(UTC).isoformat()
        try:
            with closing(connect(self.app.db)) as conn, conn:  # commits, then closes
                cur = conn.execute("INSERT INTO events (received_at, body) VALUES (?, ?)",
                                   (now, json.dumps(event, separators=(",", ":"))))
                event_id = cur.lastrowid
        except sqlite3.Error as e:
            self.send_json(500, {"error": f"database: {e}"})
            return
        self.send_json(201, {"id": event_id})

    def run_tool(self, tool: Any) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
            args = json.loads(self.rfile.read(length)) if 0 <= length <= MAX_BODY else None
        except ValueError:
            args = None
        if not isinstance(args, dict):
            self.send_json(400, {"error": "Tool error: body must be a JSON object"})
            return
        try:
            output = tool(args)
        except ToolError as e:
            status = 500 if "timed out" in str(e) else 400
            self.send_json(status, {"error": f"Tool error: {e}"})
            return
        self.send_json(200, output)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


def stop_gracefully(server: App) -> None:
    """On SIGTERM: leave serve_forever from another thread (shutdown waits for it), so the
    listening socket closes and the requests in progress complete."""
    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)


def main() -> int:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        print("Error: DATABASE_URL is not set\nTry: DATABASE_URL=/opt/choiros/data/events.db",
              file=sys.stderr)
        return 2
    db, version = database_path(url), read_version()
    try:
        init_db(db)
    except sqlite3.Error as e:
        print(f"Error: cannot open the event store {db}: {e}\n"
              f"Try: create its directory, writable by this service's user", file=sys.stderr)
        return 1
    healthy = os.environ.get("FIXTURE_UNHEALTHY") != "1" and not (HERE / "UNHEALTHY").exists()
    bind, port = os.environ.get("BIND", "0.0.0.0"), int(os.environ.get("PORT", "8080"))  # noqa: S104
    with App((bind, port), db, version, healthy) as server:
        stop_gracefully(server)
        state = "healthy" if healthy else "UNHEALTHY (on purpose)"
        print(f"choiros-sandbox stand-in {version} on {bind}:{port}, {state}, events in {db}",
              flush=True)
        with suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
