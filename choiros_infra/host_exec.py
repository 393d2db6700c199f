"""Which of verify's commands the host program may start without a shell.

Every command of a verify is a shell command line (``/bin/sh -c``), but most are one program
with quoted arguments, such as ``LC_ALL=C stat -c '%F|%a|%U|%G' -- /etc/caddy/Caddyfile``.
Debian's dash forks before it runs a program, so each costs a shell on top (about 0.7 ms of
CPU on a kitchen host, a few hundred in a verify). For a command line that the shell would
only split into words, :func:`simple_command` gives the words and the variables it sets, and
the host program (:mod:`choiros_infra.host_batch`) starts that program itself: the same
program, arguments and environment. Anything the shell does more than split (expansions,
redirections, pipes, ``;``, globs, escapes, double quotes, a builtin or a reserved word)
returns None and the line goes to ``/bin/sh -c`` as before; so does a program that cannot be
started, so that a missing one fails with the shell's own message. A program killed by a
signal exits ``128 + N`` with the signal's name on stderr, as the shell reports it.

This module runs in the host program on the host's python3 (standard library only) and is
part of its source, after :mod:`choiros_infra.redaction`: no ``from __future__`` import.
"""

import re
import shlex
import signal

# Outside single quotes, the shell gives these characters no meaning beyond a word's text.
PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")
BLANKS = " \t"
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# dash's builtins and reserved words: the shell would not run a program of that name.
SHELL_WORDS = frozenset((
    ".", ":", "[", "alias", "bg", "break", "cd", "chdir", "command", "continue", "echo", "eval",
    "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "jobs", "kill", "local",
    "printf", "pwd", "read", "readonly", "return", "set", "shift", "test", "times", "trap",
    "true", "type", "ulimit", "umask", "unalias", "unset", "wait", "if", "then", "else", "elif",
    "fi", "do", "done", "case", "esac", "while", "until", "for", "in"))


def _raw_words(command: str) -> list[str] | None:
    """The words of ``command`` as written (quotes kept), or None when the shell would do
    more than split it at blanks and remove single quotes."""
    words, word, quoted = [], "", False
    for char in command:
        if quoted:
            word += char
            quoted = char != "'"
        elif char == "'":
            word += char
            quoted = True
        elif char in BLANKS:
            if word:
                words.append(word)
            word = ""
        elif char in PLAIN:
            word += char
        else:
            return None
    if quoted:
        return None
    return [*words, word] if word else words


def simple_command(command: str) -> tuple[dict[str, str], list[str]] | None:
    """``(variables it sets, argv)`` when ``command`` is one program with literal arguments
    (after any ``NAME=value`` words), else None: the shell must run it."""
    raw = _raw_words(command)
    if raw is None:
        return None
    assigned: dict[str, str] = {}
    while raw and ASSIGNMENT.match(raw[0]):
        name, _, value = shlex.split(raw.pop(0))[0].partition("=")
        assigned[name] = value
    argv = [shlex.split(word)[0] for word in raw]
    if not argv or argv[0] in SHELL_WORDS:
        return None
    return assigned, argv


def exit_status(returncode: int) -> int:
    """A program's exit status as the shell reports it (a signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def signal_note(returncode: int) -> str:
    """What dash adds to stderr when the program it ran died of a signal: the signal's name
    (``Terminated``), except for SIGINT and SIGPIPE."""
    if returncode >= 0 or -returncode in (signal.SIGINT, signal.SIGPIPE):
        return ""
    return f"{signal.strsignal(-returncode)}\n"
