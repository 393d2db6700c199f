"""fail2ban's read-only queries answered inside verify's host program, through fail2ban's own
client library, over one connection to its server.

Each ``fail2ban-client status`` or ``fail2ban-client get JAIL SETTING`` is a Python
interpreter that imports fail2ban, reads its configuration to find the server's socket, asks
one question and prints the answer: about 40 ms of CPU each on a host, seven of them in a
verify. The host program (:mod:`choiros_infra.host_batch`) instead hands such a command line
to :class:`Fail2banQueries`, which does what ``fail2ban-client`` does (its ``Configurator``
finds the socket, its ``CSocket`` sends the command, its ``Beautifier`` formats the answer,
which may be a number, printed as ``print`` prints it) once per question, in its own process, with
one connection for all of them. Only an answer the server gave without an error is answered
so; anything else (no fail2ban library, no server, an error from the server, a command line
that is not exactly such a query) returns None, and the host program runs the command line
itself: what a failure prints is always fail2ban-client's own.

This module runs in the host program on the host's python3 (Debian 12's, with fail2ban
installed there): the standard library at import, fail2ban's library only when a query comes.
It is part of the host program's source, after :mod:`choiros_infra.redaction`, so it has no
``from __future__`` import of its own.
"""

import contextlib
import shlex
import threading
from typing import Any

CLIENT = "fail2ban-client"
# What a command line may set before the client: verify's typed probes set LC_ALL=C.
ENVIRONMENT = ("LC_ALL=C",)


def fail2ban_query(command: str) -> list[str] | None:
    """The query ``command`` asks, when it is exactly a read-only fail2ban-client call
    (``[LC_ALL=C] fail2ban-client status [JAIL]`` or ``... get JAIL SETTING``), else None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if words[:1] and words[0] in ENVIRONMENT:
        words = words[1:]
    if words[:1] != [CLIENT] or any(w.startswith("-") for w in words[1:]):
        return None
    args = words[1:]
    if args[:1] == ["status"] and len(args) in (1, 2):
        return args
    if args[:1] == ["get"] and len(args) == 3:
        return args
    return None


class Fail2banQueries:
    """fail2ban-client's answers to queries, over one connection to the server (opened at the
    first query, shared by the host program's threads one question at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: Any = None
        self._broken = False

    def answer(self, command: str) -> tuple[int, str, str] | None:
        """``(0, what fail2ban-client prints, "")`` for a query the server answered, else None
        (the caller runs ``command`` itself)."""
        args = fail2ban_query(command)
        if args is None:
            return None
        with self._lock:
            if self._broken:
                return None
            try:
                from fail2ban.client.beautifier import Beautifier

                if self._socket is None:
                    self._socket = self._connect()
                status, response = self._socket.send(args)
                if status != 0:
                    return None  # the client's own error text comes from running it
                beautifier = Beautifier()
                beautifier.setInputCmd(args)
                return 0, f"{beautifier.beautify(response)}\n", ""  # print()'s str
            except Exception:  # no library, no server, a protocol error: the client says
                self._broken = True
                return None

    @staticmethod
    def _connect() -> Any:
        """A connection to the socket fail2ban-client would use (its early options, read
        from fail2ban.conf and fail2ban.local as the client reads them)."""
        from fail2ban.client.configurator import Configurator
        from fail2ban.client.csocket import CSocket

        configurator = Configurator()
        configurator.readEarly()
        return CSocket(configurator.getEarlyOptions()["socket"])

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                with contextlib.suppress(Exception):  # the server may have dropped it
                    self._socket.close()
                self._socket = None
