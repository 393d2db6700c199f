"""Reading every host fact of a verify in one SSH round trip, and answering the checks from it.

A verify asks a host a few hundred small questions (``systemctl show``, ``stat``, ``sshd -T``,
one per runbook statement and suite fact). Asked one by one, each is an SSH round trip, and
they add up to most of a verify's time. Like Goss, which evaluates its checks on the host,
this module sends the host the whole list at once: a small stdlib-only Python program
(``HOST_PROGRAM``, run by the host's python3 through the same testinfra connection, sudo and
all) runs every command as ``/bin/sh -c`` would (one program with literal arguments without
the shell: :mod:`choiros_infra.host_exec`) a few at a time and returns each one's exit code
and outputs as soon as it is done. pytest then runs the checks as before, and every
``host.run`` whose command was read ahead is answered from those answers
(:class:`ReadAhead`, installed on the testinfra backend's ``run``); a command nobody planned
still goes to the host in a round trip of its own, through the same program, and is counted.
The checks, their assertions and the JUnit report do not change: only where the answers come
from.

The round trip is a stream both ways (:meth:`ReadAhead.open`, over SSH or on this machine):
the host program starts while pytest still collects, takes each command as collection
declares it and starts it at once, and writes each answer back the moment it is done; a
check waits only for its own commands' answers. So the host's work overlaps collection and
the checks, and the slowest command holds up only the checks that read it. Where testinfra's
backend cannot be piped (not ssh or local), the planned commands go in one call at the end of
collection, their answers all at once.

The program also keeps the host's secrets on the host: it starts with the source of
:mod:`choiros_infra.redaction`, and masks every value of the host's secret env file (and of
the same names in any process's environment) in every output before it leaves
(:class:`HostSecrets` says where they are). No command of a verify answers unredacted.

fail2ban's read-only queries (``fail2ban-client status``, ``fail2ban-client get JAIL
SETTING``) are answered inside the program, through fail2ban's own client library over one
connection (:mod:`choiros_infra.host_fail2ban`), instead of a Python interpreter each: what
fail2ban-client would print, and the client itself runs for anything else.

Which commands to read is declared, not guessed: each expect kind lists its probe's commands
(``Kind.commands``), and a tests/infra module lists its own in ``host_commands(config)``
(``choiros_infra/verify_batch.py`` collects both). Commands only read the host, so running
them side by side is safe; identical commands run once.
"""

from __future__ import annotations

import base64
import inspect
import json
import shlex
import subprocess
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from testinfra.backend.local import LocalBackend
from testinfra.backend.ssh import SshBackend

from choiros_infra import host_exec, host_fail2ban, redaction
from provisioning.spec import HOST_CONFIG, SECRETS_ENV_FILE

# How many commands the host runs at once, and how long one may take. The host of a verify
# is small (a kitchen host shares this machine's 2 cores): a few at a time hides the waits
# (a TLS handshake, a fail2ban or systemd socket) without thrashing.
HOST_WORKERS = 6
COMMAND_TIMEOUT = 120
# The host program's first argument when the commands come on its stdin, until end of file,
# one a line: JSON ``[command, first]`` (``first``: start it before every other not yet
# started).
FROM_STDIN = "-"

_PROGRAM_BODY = f"""

import base64, json, os, queue, subprocess, sys, threading, time, zlib

options = json.loads(sys.argv[2])
timeout = options["timeout"]
redact = host_redactor(**options["secrets"])
packer, written = zlib.compressobj(6), threading.Lock()

fail2ban = Fail2banQueries()

def execute(command):
    # ``command`` as ``/bin/sh -c`` runs it; one program with literal arguments without the
    # shell (choiros_infra/host_exec.py), unless it cannot be started.
    simple = simple_command(command)
    if simple is not None:
        assigned, argv = simple
        try:
            return subprocess.run(argv, env={{**os.environ, **assigned}},
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except OSError:
            pass  # not found, not executable: the shell says so its own way
    return subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)

def run(index, command):
    started = time.monotonic()
    try:
        answered = fail2ban.answer(command)  # a fail2ban-client query, without the client
        if answered is None:
            done = execute(command)
            answered = (exit_status(done.returncode), done.stdout.decode("utf-8", "replace"),
                        done.stderr.decode("utf-8", "replace") + signal_note(done.returncode))
        answer = [answered[0], redact(answered[1]), redact(answered[2])]
    except subprocess.TimeoutExpired:
        answer = [124, "", f"timed out after {{timeout:g}}s (on the host)"]
    except OSError as e:
        answer = [126, "", f"the host program could not run it: {{e}}"]
    line = json.dumps([index, *answer, time.monotonic() - started]).encode()
    with written:  # one line an answer, as soon as it is done
        chunk = packer.compress(line) + packer.flush(zlib.Z_SYNC_FLUSH)
        sys.stdout.write(base64.b64encode(chunk).decode() + "\\n")
        sys.stdout.flush()

def commands():
    if sys.argv[1] != "{FROM_STDIN}":
        for command in json.loads(zlib.decompress(base64.b64decode(sys.argv[1]))):
            yield command, False
        return
    for line in sys.stdin:
        yield json.loads(line)

# What to run: those given as first before the others, each group in the order given; then
# one stop for each worker.
todo = queue.PriorityQueue()

def work():
    while (item := todo.get())[2] is not None:
        run(item[1], item[2])

workers = [threading.Thread(target=work) for _ in range({HOST_WORKERS})]
for worker in workers:
    worker.start()
for index, (command, first) in enumerate(commands()):
    todo.put((0 if first else 1, index, command))
for stop, worker in enumerate(workers):
    todo.put((2, stop, None))
for worker in workers:
    worker.join()
fail2ban.close()
"""
# The program: the redaction module's own source and the fail2ban queries' (standard library
# only at import), then the runner.
HOST_PROGRAM = "\n".join(inspect.getsource(module)
                         for module in (redaction, host_fail2ban, host_exec)) + _PROGRAM_BODY


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


def program_argv(commands: Sequence[str] | None, secrets: HostSecrets,
                 timeout: float = COMMAND_TIMEOUT) -> list[str]:
    """The host program's command line for ``commands`` (each run by ``/bin/sh -c``, for at
    most ``timeout`` seconds); None: they come on its stdin, one JSON string a line."""
    first = FROM_STDIN if commands is None else encode_commands(commands)
    return ["python3", "-c", HOST_PROGRAM, first, secrets.options(timeout)]


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


class AnswerReader:
    """HOST_PROGRAM's output, a line at a time: each line one answer (its command's index,
    then the Answer), the lines one compressed stream."""

    def __init__(self) -> None:
        self._unpack = zlib.decompressobj()

    def answer(self, line: str | bytes) -> tuple[int, Answer]:
        try:
            raw = json.loads(self._unpack.decompress(base64.b64decode(line, validate=True)))
            index, rc, out, err, seconds = raw
            return int(index), Answer(int(rc), str(out), str(err), float(seconds))
        except (ValueError, TypeError, zlib.error) as e:
            shown = line if isinstance(line, str) else line.decode("utf-8", "replace")
            raise ReadAheadError(f"unreadable answer from the host: {shown[:200]!r}") from e


def decode_answers(output: str, count: int) -> list[Answer]:
    """HOST_PROGRAM's whole output for ``count`` commands: one Answer per command, in order."""
    reader = AnswerReader()
    answers = dict(reader.answer(line) for line in output.split())
    if sorted(answers) != list(range(count)):
        raise ReadAheadError(f"the host answered {len(answers)} of {count} commands")
    return [answers[i] for i in range(count)]


def backend_key(backend: Any) -> tuple[str, bool, str | None]:
    """Which host and identity an answer belongs to: the same command as another user, or on
    another host, is another question."""
    return (str(backend.get_hostname()), bool(backend.sudo), backend.sudo_user)


def piped_argv(backend: Any, command: str) -> list[str] | None:
    """The local command line that runs ``command`` on ``backend``'s host as testinfra would
    (sudo, ssh options and all), for its stdin and stdout to be piped here; None for a
    backend that runs commands otherwise (docker, paramiko, ...)."""
    remote = backend.get_command(command)
    if type(backend) is SshBackend:
        ssh, args = backend._build_ssh_command(remote)
        return shlex.split(backend.quote(" ".join(ssh), *args))
    if type(backend) is LocalBackend:
        return ["/bin/sh", "-c", remote]
    return None


Key = tuple[tuple[str, bool, str | None], str]


def _read_all(stream: IO[bytes], into: list[bytes]) -> None:
    into.append(stream.read())


@dataclass
class ReadAhead:
    """The answers of one run's read-ahead, and what the run still had to ask one by one.

    :meth:`open` starts the host program, :meth:`plan` hands it commands (it starts each at
    once), :meth:`close` says there are no more; :meth:`answer` waits for one command's
    answer. A failed read-ahead leaves ``error`` set, and what it did not answer goes to the
    host one by one."""

    answers: dict[Key, Answer] = field(default_factory=dict)
    planned: int = 0
    batch_seconds: float = 0.0
    round_trips: int = 0
    asked: list[str] = field(default_factory=list)  # commands not read ahead, in order
    # The backend's own run, past the answers (set by install): one-by-one asks go there.
    direct: Any = None
    secrets: HostSecrets = field(default_factory=HostSecrets)
    error: str | None = None
    # Every command handed to a read-ahead, in the order given: the host program answers by
    # its index there (less ``_first``, where the one under way starts).
    _order: list[Key] = field(default_factory=list)
    _given: set[Key] = field(default_factory=set)
    _first: int = 0
    _closed: bool = True
    _ended: bool = True
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    _giving: threading.Lock = field(default_factory=threading.Lock)
    _host: Any = None
    _pipe: subprocess.Popen[bytes] | None = None
    _started: float = 0.0

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

    def open(self, host: Any) -> None:
        """Start a read-ahead on ``host``: the host program, over the backend's own
        connection, waiting for commands (:meth:`plan`)."""
        backend = host.backend
        with self._arrived:
            self._host, self._started, self._first = host, time.monotonic(), len(self._order)
            self._closed, self._ended, self._pipe = False, False, None
        argv = piped_argv(backend, backend.quote("%s %s %s %s %s",
                                                 *program_argv(None, self.secrets)))
        if argv is None:
            return  # no pipe: close() sends every command in one call
        self.round_trips += 1
        try:
            self._pipe = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
        except OSError as e:
            self._end(f"{type(e).__name__}: {e}")
            return
        threading.Thread(target=self._read_answers, args=(self._pipe,), name="read-ahead",
                         daemon=True).start()

    def plan(self, commands: Iterable[str], *, first: bool = False) -> None:
        """Hand the read-ahead more commands (quoted, as ``backend.quote`` makes them); one
        already given is not run again. ``first``: the host starts them before every command
        it has not started yet (commands that may take seconds)."""
        key = backend_key(self._host.backend)
        with self._giving:  # the order given is the order the host program numbers them
            with self._arrived:
                if self._closed or self._ended:
                    return
                new = [(key, c) for c in dict.fromkeys(commands) if (key, c) not in self._given]
                self._order += new
                self._given.update(new)
            self.planned += len(new)
            if self._pipe is not None and new:
                self._send("".join(json.dumps([c, first]) + "\n" for _, c in new))

    def _send(self, text: str) -> None:
        try:
            assert self._pipe is not None and self._pipe.stdin is not None
            self._pipe.stdin.write(text.encode())
            self._pipe.stdin.flush()
        except (OSError, ValueError):
            pass  # the program ended: its reader thread ends the read-ahead, saying why

    def close(self) -> None:
        """No more commands: the host program ends once it has answered them all."""
        with self._giving, self._arrived:
            if self._closed:
                return
            self._closed = True
        if self._pipe is None:
            if not self._ended:
                threading.Thread(target=self._read_at_once, name="read-ahead",
                                 daemon=True).start()
            return
        try:
            assert self._pipe.stdin is not None
            self._pipe.stdin.close()
        except OSError:
            pass  # the program ended already: its reader says why

    def _read_answers(self, pipe: subprocess.Popen[bytes]) -> None:
        """The reader thread: each answer as it comes, until the program's output ends."""
        assert pipe.stdout is not None and pipe.stderr is not None
        said: list[bytes] = []
        drain = threading.Thread(target=_read_all, args=(pipe.stderr, said), daemon=True)
        drain.start()
        reader, problem = AnswerReader(), None
        try:
            for line in pipe.stdout:
                self._keep(*reader.answer(line.strip()))
        except ReadAheadError as e:
            problem = str(e)
        pipe.wait()
        drain.join()
        if problem is None and pipe.returncode != 0:
            text = b"".join(said).decode("utf-8", "replace").strip()
            problem = f"exit {pipe.returncode}: {text[:300]}"
        self._end(problem)

    def _read_at_once(self) -> None:
        """Without a pipe: every planned command in one call, then their answers."""
        commands = [c for _, c in self._order[self._first:]]
        try:
            for index, answer in enumerate(self.run_program(self._host.backend, commands)):
                self._keep(index, answer)
        except ReadAheadError as e:
            self._end(str(e))
        self._end(None)

    def _keep(self, index: int, answer: Answer) -> None:
        with self._arrived:
            position = self._first + index
            if index >= 0 and position < len(self._order):
                self.answers[self._order[position]] = answer
                self._arrived.notify_all()

    def _end(self, problem: str | None) -> None:
        with self._arrived:
            if self._ended:
                return
            self._ended = True
            missing = len(self._order) - self._first - sum(
                1 for k in self._order[self._first:] if k in self.answers)
            if problem is None and missing:
                problem = f"the host left {missing} of {len(self._order) - self._first} " \
                          "commands unanswered"
            self.error = self.error or problem
            self.batch_seconds += time.monotonic() - self._started
            self._arrived.notify_all()

    def read(self, host: Any, commands: Sequence[str]) -> None:
        """Run ``commands`` on ``host`` in one round trip and keep the answers. Raises
        ReadAheadError."""
        self.open(host)
        self.plan(commands)
        self.close()
        self.wait()
        if self.error:
            raise ReadAheadError(self.error)

    def wait(self) -> None:
        """Until the read-ahead under way has ended."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._ended)

    def stop(self) -> None:
        """End the read-ahead now (the run is over, or was interrupted): an error only if
        a command it was given is still unanswered."""
        if self._pipe is not None and self._pipe.poll() is None:
            self._pipe.kill()
        self._end(None)

    def answer(self, backend: Any, command: str) -> Answer | None:
        """The read-ahead answer to ``command`` (waiting for it if it was planned), or None."""
        key = (backend_key(backend), command)
        with self._arrived:
            if key in self._given:
                self._arrived.wait_for(lambda: key in self.answers or self._ended)
            return self.answers.get(key)

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
