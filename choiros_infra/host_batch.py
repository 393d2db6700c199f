"""Reading every host fact of a verify in one SSH round trip, and answering the checks from it.

A verify asks a host a few hundred small questions (``systemctl show``, ``stat``, ``sshd -T``,
one per runbook statement and suite fact). Asked one by one, each is an SSH round trip, and
they add up to most of a verify's time. Like Goss, which evaluates its checks on the host,
this module sends the host the whole list at once: a small stdlib-only Python program
(``HOST_PROGRAM``, run by the host's python3 through the same testinfra connection, sudo and
all) runs every command with ``/bin/sh -c`` a few at a time and returns their exit codes and
outputs as one compressed JSON document. pytest then runs the checks as before, and every
``host.run`` whose command was read ahead is answered from that document
(:class:`ReadAhead`, installed on the testinfra backend's ``run``); a command nobody planned
still goes to the host in a round trip of its own, through the same program, and is counted.
The checks, their assertions and the JUnit report do not change: only where the answers come
from.

The program also keeps the host's secrets on the host: it starts with the source of
:mod:`choiros_infra.redaction`, and masks every value of the host's secret env file (and of
the same names in any process's environment) in every output before it leaves
(:class:`HostSecrets` says where they are). No command of a verify answers unredacted.

Which commands to read is declared, not guessed: each expect kind lists its probe's commands
(``Kind.commands``), and a tests/infra module lists its own in ``host_commands(config)``
(``choiros_infra/verify_batch.py`` collects both). Commands only read the host, so running
them side by side is safe; identical commands run once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from choiros_infra import redaction
from provisioning.spec import HOST_CONFIG, SECRETS_ENV_FILE

# How many commands the host runs at once, and how long one may take. The host of a verify
# is small (a kitchen host shares this machine's 2 cores): a few at a time hides the waits
# (a TLS handshake, a fail2ban or systemd socket) without thrashing.
HOST_WORKERS = 6
COMMAND_TIMEOUT = 120

_PROGRAM_BODY = f"""

import base64, json, subprocess, sys, time, zlib
from concurrent.futures import ThreadPoolExecutor

options = json.loads(sys.argv[2])
timeout = options["timeout"]

def run(command):
    started = time.monotonic()
    try:
        done = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [124, "", f"timed out after {{timeout:g}}s (on the host)",
                time.monotonic() - started]
    return [done.returncode, redact(done.stdout.decode("utf-8", "replace")),
            redact(done.stderr.decode("utf-8", "replace")), time.monotonic() - started]

redact = host_redactor(**options["secrets"])
commands = json.loads(zlib.decompress(base64.b64decode(sys.argv[1])))
with ThreadPoolExecutor({HOST_WORKERS}) as pool:
    answers = list(pool.map(run, commands))
sys.stdout.write(base64.b64encode(zlib.compress(json.dumps(answers).encode(), 6)).decode())
"""
# The program: the redaction module's own source (standard library only), then the runner.
HOST_PROGRAM = Path(redaction.__file__).read_text(encoding="utf-8") + _PROGRAM_BODY


@dataclass(frozen=True)
class HostSecrets:
    """Where the host keeps its secrets, for the host program to redact their values (see
    :func:`choiros_infra.redaction.host_redactor`): the secrets' env file and host.json as
    the rendering places them, and the stack's secret names when the caller knows them."""

    env_files: tuple[str, ...] = (SECRETS_ENV_FILE,)
    names: tuple[str, ...] = ()
    host_config: str | None = HOST_CONFIG

    def options(self, timeout: float) -> str:
        """The host program's second argument (JSON, one shell word once quoted)."""
        return json.dumps({"timeout": timeout, "secrets": {
            "env_files": list(self.env_files), "names": list(self.names),
            "host_config": self.host_config}})


def program_argv(commands: Sequence[str], secrets: HostSecrets,
                 timeout: float = COMMAND_TIMEOUT) -> list[str]:
    """The host program's command line for ``commands`` (each run by ``/bin/sh -c``, for at
    most ``timeout`` seconds)."""
    return ["python3", "-c", HOST_PROGRAM, encode_commands(commands), secrets.options(timeout)]


class ReadAheadError(Exception):
    """The batch itself failed (no python3 on the host, the connection broke): the checks
    then ask the host one by one, as without read-ahead."""


@dataclass(frozen=True)
class Answer:
    rc: int
    stdout: str
    stderr: str
    seconds: float = 0.0  # how long the command ran on the host


def encode_commands(commands: Sequence[str]) -> str:
    """The argument HOST_PROGRAM reads: the commands, JSON, zlib, base64 (one shell word)."""
    return base64.b64encode(zlib.compress(json.dumps(list(commands)).encode(), 9)).decode()


def decode_answers(output: str, count: int) -> list[Answer]:
    """HOST_PROGRAM's output: one Answer per command, in order."""
    try:
        raw = json.loads(zlib.decompress(base64.b64decode(output.strip(), validate=True)))
        answers = [Answer(int(rc), str(out), str(err), float(s)) for rc, out, err, s in raw]
    except (ValueError, TypeError, zlib.error) as e:
        raise ReadAheadError(f"unreadable answer from the host: {output[:200]!r}") from e
    if len(answers) != count:
        raise ReadAheadError(f"the host answered {len(answers)} of {count} commands")
    return answers


def backend_key(backend: Any) -> tuple[str, bool, str | None]:
    """Which host and identity an answer belongs to: the same command as another user, or on
    another host, is another question."""
    return (str(backend.get_hostname()), bool(backend.sudo), backend.sudo_user)


@dataclass
class ReadAhead:
    """The answers of one run's batch, and what the run still had to ask one by one."""

    answers: dict[tuple[tuple[str, bool, str | None], str], Answer] = field(default_factory=dict)
    planned: int = 0
    batch_seconds: float = 0.0
    round_trips: int = 0
    asked: list[str] = field(default_factory=list)  # commands not read ahead, in order
    # The backend's own run, past the answers (set by install): the batch itself goes there.
    direct: Any = None
    secrets: HostSecrets = field(default_factory=HostSecrets)
    # A batch under way (read_in_background): its commands, and when its answers are in.
    pending: frozenset[tuple[tuple[str, bool, str | None], str]] = frozenset()
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def run_program(self, backend: Any, commands: Sequence[str]) -> list[Answer]:
        """One round trip: ``commands`` (already quoted, as ``backend.quote`` makes them) run
        by the host program, their outputs redacted on the host. Raises ReadAheadError."""
        self.round_trips += 1
        try:
            run = self.direct or (lambda b, *a: b.run(*a))
            result = run(backend, "%s %s %s %s %s", *program_argv(commands, self.secrets))
        except Exception as e:  # ssh or sudo trouble: the checks will say it themselves
            raise ReadAheadError(f"{type(e).__name__}: {e}") from e
        if result.rc != 0:
            raise ReadAheadError(f"exit {result.rc}: {result.stderr.strip()[:300]}")
        return decode_answers(result.stdout, len(commands))

    def read(self, host: Any, commands: Sequence[str]) -> None:
        """Run ``commands`` on ``host`` in one round trip and keep the answers. Raises
        ReadAheadError."""
        unique = list(dict.fromkeys(commands))
        backend = host.backend
        started = time.monotonic()
        answers = self.run_program(backend, unique)
        key = backend_key(backend)
        for command, answer in zip(unique, answers, strict=True):
            self.answers[key, command] = answer
        self.planned += len(unique)
        self.batch_seconds += time.monotonic() - started

    def read_in_background(self, host: Any, commands: Sequence[str]) -> None:
        """Start :meth:`read` on a thread and return: checks that need no planned fact (HTTP
        through Caddy, connects from outside, commands nobody planned) run meanwhile; one
        that does waits for the answers (:meth:`answer`). A failed batch leaves ``error``
        set and the planned commands go to the host one by one."""
        key = backend_key(host.backend)
        self.pending = frozenset((key, c) for c in commands)
        self.done.clear()

        def read() -> None:
            try:
                self.read(host, commands)
            except ReadAheadError as e:
                self.error = str(e)
            finally:
                self.done.set()

        threading.Thread(target=read, name="read-ahead", daemon=True).start()

    def answer(self, backend: Any, command: str) -> Answer | None:
        """The read-ahead answer to ``command`` (waiting for a batch under way), or None."""
        if (backend_key(backend), command) in self.pending:
            self.done.wait()
        return self.answers.get((backend_key(backend), command))

    def respond(self, backend: Any, command: str) -> Answer:
        """The read-ahead answer to ``command``, else the host's own, asked now in a round
        trip of its own through the host program (redacted there like the batch's) and
        counted. Raises ReadAheadError when the host program cannot run: never an answer
        that left the host unredacted."""
        found = self.answer(backend, command)
        if found is None:
            self.asked.append(command)
            found = self.run_program(backend, [command])[0]
        return found

    def stats(self, slowest: int = 8) -> dict[str, Any]:
        """The figures of the run; ``slowest``: the commands that held the batch up most."""
        by_time = sorted(((a.seconds, c) for (_, c), a in self.answers.items()), reverse=True)
        return {"planned": self.planned, "batch_seconds": round(self.batch_seconds, 3),
                "round_trips": self.round_trips, "asked_one_by_one": self.asked,
                "slowest": [[round(s, 3), c[:160]] for s, c in by_time[:slowest]]}


def install(read_ahead: ReadAhead, backend_class: type) -> Any:
    """Answer ``backend_class.run`` from ``read_ahead``: read ahead where it can, else through
    the host program, counting what still goes to the host; returns what to pass to
    :func:`uninstall`."""
    original = getattr(backend_class, "run")  # noqa: B009 - a method patched for the run

    def run(self: Any, command: str, *args: str, **kwargs: Any) -> Any:
        found = read_ahead.respond(self, self.quote(command, *args))
        return self.result(found.rc, self.encode(self.get_command(command, *args)),
                           found.stdout, found.stderr)

    read_ahead.direct = lambda backend, *a: original(backend, *a)
    setattr(backend_class, "run", run)  # noqa: B010
    return original


def uninstall(backend_class: type, original: Any) -> None:
    setattr(backend_class, "run", original)  # noqa: B010
