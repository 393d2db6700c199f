"""fail2ban queries answered in verify's host program (choiros_infra/host_fail2ban.py): which
command lines it takes, one connection for all, and every other case left to fail2ban-client
itself. That its answers are word for word what fail2ban-client prints is proved on a real
host, against the real client (tests/kitchen/test_verify.py); this machine has no fail2ban.
"""

from __future__ import annotations

import os
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import testinfra

from choiros_infra.expect.kinds import fail2ban as fail2ban_kind
from choiros_infra.host_batch import ReadAhead
from choiros_infra.host_fail2ban import Fail2banQueries, fail2ban_query

pytestmark = pytest.mark.unit


def planned(command: Any) -> str:
    """A HostCommand as verify hands it to the host program (testinfra's quoting)."""
    return str(command.template % tuple(shlex.quote(a) for a in command.args))


@pytest.mark.parametrize("command, query", [
    (planned(fail2ban_kind.STATUS), ["status"]),
    (planned(fail2ban_kind.get("sshd", "maxretry")), ["get", "sshd", "maxretry"]),
    (planned(fail2ban_kind.get("sshd", "journalmatch")), ["get", "sshd", "journalmatch"]),
    ("fail2ban-client status sshd", ["status", "sshd"]),
    ("fail2ban-client get sshd bantime", ["get", "sshd", "bantime"]),
])
def test_verify_s_fail2ban_queries_are_taken(command: str, query: list[str]) -> None:
    assert fail2ban_query(command) == query


@pytest.mark.parametrize("command", [
    "fail2ban-client -t",  # a configuration test: the client's own work, not a query
    "LC_ALL=C fail2ban-client -s /tmp/other.sock status",
    "fail2ban-client set sshd banip 192.0.2.1",
    "fail2ban-client get sshd",
    "fail2ban-client status sshd extra",
    "fail2ban-client status; touch /tmp/x",
    "sudo fail2ban-client status",
    "LANG=C fail2ban-client status",
    "command fail2ban-client status",
    "fail2ban-client 'unterminated",
    "",
])
def test_anything_else_is_left_to_the_shell(command: str) -> None:
    assert fail2ban_query(command) is None


class FakeServer:
    """fail2ban's client library as seen by Fail2banQueries: a server answering ``replies``."""

    def __init__(self, replies: dict[tuple[str, ...], tuple[int, Any]]) -> None:
        self.replies, self.connects, self.asked = replies, 0, []

    def modules(self) -> dict[str, types.ModuleType]:
        server = self

        class CSocket:
            def __init__(self, path: str) -> None:
                assert path == "/run/fail2ban/test.sock"
                server.connects += 1

            def send(self, args: list[str]) -> tuple[int, Any]:
                server.asked.append(tuple(args))
                reply = server.replies[tuple(args)]
                if isinstance(reply, BaseException):
                    raise reply
                return reply

            def close(self) -> None:
                pass

        class Configurator:
            def readEarly(self) -> None:
                pass

            def getEarlyOptions(self) -> dict[str, str]:
                return {"socket": "/run/fail2ban/test.sock"}

        class Beautifier:
            def setInputCmd(self, args: list[str]) -> None:
                self.args = args

            def beautify(self, response: Any) -> Any:
                if self.args[0] == "get":
                    return response  # fail2ban's Beautifier returns a number as it is
                return f"{' '.join(self.args)} -> {response}"

        found = {}
        for name, attrs in [("fail2ban", {}), ("fail2ban.client", {}),
                            ("fail2ban.client.csocket", {"CSocket": CSocket}),
                            ("fail2ban.client.configurator", {"Configurator": Configurator}),
                            ("fail2ban.client.beautifier", {"Beautifier": Beautifier})]:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            found[name] = module
        return found


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer({("status",): (0, "jails"), ("get", "sshd", "maxretry"): (0, 3),
                       ("get", "nojail", "maxretry"): (1, KeyError("nojail")),
                       ("get", "sshd", "broken"): OSError(104, "reset")})  # type: ignore[dict-item]
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return fake


def test_queries_share_one_connection_and_print_as_the_client(server: FakeServer) -> None:
    queries = Fail2banQueries()
    assert queries.answer("LC_ALL=C fail2ban-client status") == (0, "status -> jails\n", "")
    assert queries.answer("fail2ban-client get sshd maxretry") == (0, "3\n", "")
    assert queries.answer("fail2ban-client -t") is None
    assert server.connects == 1 and server.asked == [("status",), ("get", "sshd", "maxretry")]


def test_an_error_from_the_server_is_left_to_the_client(server: FakeServer) -> None:
    """fail2ban-client prints the server's refusal its own way, with its own exit code."""
    queries = Fail2banQueries()
    assert queries.answer("fail2ban-client get nojail maxretry") is None
    assert queries.answer("fail2ban-client status") == (0, "status -> jails\n", "")


def test_a_broken_connection_leaves_every_later_query_to_the_client(server: FakeServer) -> None:
    queries = Fail2banQueries()
    assert queries.answer("fail2ban-client get sshd broken") is None
    assert queries.answer("fail2ban-client status") is None
    assert server.asked == [("get", "sshd", "broken")]


def test_without_fail2ban_s_library_the_host_program_runs_the_client(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_ahead: ReadAhead) -> None:
    """This machine's python3 has no fail2ban: the host program runs fail2ban-client (here a
    script that says so) for a query, with its exit code and outputs."""
    client = tmp_path / "fail2ban-client"
    client.write_text("#!/bin/sh\necho \"client: $*\"; echo warned >&2; exit 7\n")
    client.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    host = testinfra.get_host("local://")
    command = planned(fail2ban_kind.get("sshd", "maxretry"))
    read_ahead.read(host, [command])
    answered = host.run(command)
    assert (answered.rc, answered.stdout, answered.stderr) == (
        7, "client: get sshd maxretry\n", "warned\n")
