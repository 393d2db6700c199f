"""pytest plugin of verify: read every host fact the collected checks will ask, in one round
trip, while pytest still collects and the first checks run (``choiros_infra/host_batch.py``
says how).

``choiros-infra verify`` loads it with ``-p choiros_infra.verify_batch``. When pytest is
configured, before it collects, it starts the host program; as each item is collected it
hands it that item's commands (in a run narrowed by ``-k``, ``-m`` or ``--deselect``, once
collection is done, for the items that stay): each runbook statement's kind lists its
probe's (``Kind.commands``; a runbook's own ``command`` first, as the slowest), each
tests/infra module its own (a module-level ``host_commands(config)`` returning
``HostCommand``s), plus, first of all, the runbook plugin's connection proof and what
testinfra asks itself. The host starts each command as it comes; the checks' ``host.run`` is
answered from the answers as they come back, and checks that read nothing planned (through
Caddy, from outside) run meanwhile. A read-ahead that fails is reported in one line and the
checks ask the host one by one (through the same program): never a skipped or passed check.

Secrets stay on the host (:mod:`choiros_infra.redaction`): every command of the run, read
ahead or not, goes through the host program, which masks the host's secret values before they
leave; and every report of the run (a failure's text, its captured output), before the
terminal or the JUnit file sees it, has the assignments to the stack's secret names masked
(``--stack-file``'s ``choiros:secrets``).

``--host-ready-fd FD`` (verify's ``run_checked``): pytest starts while verify proves the host
reachable, and waits for its word on that pipe before anything asks the host.

``--read-ahead-stats FILE`` writes what happened as JSON (``bench/verify_speed.py`` reads
it): commands planned, the batch's seconds, SSH round trips of this pytest process, and the
commands that still went one by one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from choiros_infra.errors import EXIT_UNUSABLE
from choiros_infra.expect.kinds import kind_of
from choiros_infra.expect.plugin import PROOF, RunbookUsageError, probe_context, runbook_host
from choiros_infra.expect.probes import HostCommand
from choiros_infra.host_batch import HostSecrets, ReadAhead, install, uninstall
from choiros_infra.redaction import Redactor, scrub, variable_of
from choiros_infra.verify import HOST_READY
from infra.config import ConfigError, load_stack_file

_STATE = pytest.StashKey[dict[str, Any]]()
# testinfra asks the host's encoding once, to decode an output that is not ASCII.
ENCODING_QUERY = HostCommand("%s -c 'import locale;print(locale.getpreferredencoding())'",
                             ("python3",))
# testinfra asks the host's system once (host.file picks its implementation by it); every
# command not read ahead costs a round trip through the host program.
SYSTEM_INFO = (HostCommand("uname -s"), HostCommand("uname -m"), HostCommand("cat /etc/os-release"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("choiros").addoption(
        "--read-ahead", choices=("on", "off"), default="on",
        help="off: read nothing ahead, every check asks the host itself (still counted; "
             "bench/verify_speed.py measures the runner without read-ahead this way)")
    parser.getgroup("choiros").addoption(
        "--host-ready-fd", type=int, default=None, metavar="FD",
        help="wait, before anything asks the host, for verify's word on this pipe that the "
             "host is reachable; its end without the word: stop at once, without output "
             "(verify says why)")
    parser.getgroup("choiros").addoption(
        "--read-ahead-stats", default=None, metavar="FILE",
        help="write the read-ahead's figures (planned commands, batch seconds, SSH round trips, "
             "commands asked one by one) to FILE as JSON")


def secret_names(config: pytest.Config) -> tuple[str, ...]:
    """The stack's secret variable names (none without a valid --stack-file: then the
    stack's checks fail on it themselves)."""
    stack_file = config.getoption("stack_file", None)
    try:
        cfg = load_stack_file(Path(stack_file)) if stack_file else None
    except (ConfigError, OSError):
        cfg = None
    return tuple(variable_of(p) for p in cfg.secrets) if cfg else ()


def wait_until_reachable(config: pytest.Config) -> None:
    """With ``--host-ready-fd``, until verify has proven the host reachable (pytest started
    meanwhile: choiros_infra/verify.py, ``run_checked``); not in xdist's workers, which
    start after it."""
    fd = config.getoption("host_ready_fd", None)
    if fd is None or hasattr(config, "workerinput"):
        return
    with os.fdopen(fd, "rb") as pipe:
        word = pipe.read()
    if word != HOST_READY:
        os._exit(EXIT_UNUSABLE)  # not reachable: verify prints the Error and Try lines


def pytest_configure(config: pytest.Config) -> None:
    wait_until_reachable(config)
    names = secret_names(config)
    config.pluginmanager.register(ReportRedaction(Redactor(names=frozenset(names))),
                                  "choiros-report-redaction")
    host = runbook_host(config) if config.getoption("hosts", None) else None
    if host is None or isinstance(host, RunbookUsageError):
        return
    read_ahead = ReadAhead(secrets=HostSecrets(names=names))
    backend_class = type(host.backend)
    config.stash[_STATE] = {"read_ahead": read_ahead, "host": host, "class": backend_class,
                            "original": install(read_ahead, backend_class), "modules": set()}
    _open(config)


def first_commands() -> Iterator[HostCommand]:
    """What every run asks before any check's own: the runbook plugin's connection proof and
    testinfra's questions about the host."""
    yield PROOF
    yield ENCODING_QUERY
    yield from SYSTEM_INFO


def item_commands(config: pytest.Config, item: pytest.Item) -> Iterator[HostCommand]:
    """Every command ``item`` will run on the host, as its kind or its module declares (a
    module's once, with its first item)."""
    state = config.stash[_STATE]
    statement = getattr(item, "statement", None)
    if statement is not None:
        if "context" not in state:
            state["context"] = probe_context(config, state["host"])
        yield from kind_of(statement.check).commands(statement.check, state["context"])
        return
    module = getattr(item, "module", None)
    declare = getattr(module, "host_commands", None)
    if declare is not None and module not in state["modules"]:
        state["modules"].add(module)
        yield from declare(config)


def _plan(config: pytest.Config, commands: Iterable[HostCommand], *, first: bool = False,
          ) -> None:
    state = config.stash[_STATE]
    backend = state["host"].backend
    state["read_ahead"].plan((backend.quote(c.template, *c.args) for c in commands),
                             first=first)


def _plan_item(config: pytest.Config, item: pytest.Item) -> None:
    """Hand the read-ahead ``item``'s commands; a runbook command statement's first."""
    statement = getattr(item, "statement", None)
    first = statement is not None and kind_of(statement.check).read_first
    _plan(config, item_commands(config, item), first=first)


def _reading(config: pytest.Config) -> bool:
    """Whether this process reads ahead: not for --collect-only or --read-ahead=off, nor in
    xdist's controller, which hands the checks to its workers (each reads for itself)."""
    controller = (config.getoption("numprocesses", None)
                  and not hasattr(config, "workerinput"))
    return (_STATE in config.stash and not config.option.collectonly
            and config.getoption("read_ahead") != "off" and not controller)


def _open(config: pytest.Config) -> None:
    """Start the host program now, so that its start overlaps pytest's own (and collection)."""
    if _reading(config):
        state = config.stash[_STATE]
        state["read_ahead"].open(state["host"])
        _plan(config, first_commands())


def _selects(config: pytest.Config) -> bool:
    """Whether the run narrows what it collected (``-k``, ``-m``, ``--deselect``): then the
    commands are planned once collection is done, for the checks that stay only."""
    option = config.option
    return bool(option.keyword or option.markexpr or option.deselect)


def pytest_itemcollected(item: pytest.Item) -> None:
    config = item.config
    if _reading(config) and not _selects(config):
        _plan_item(config, item)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if not _reading(config):
        return
    if _selects(config):
        for item in session.items:
            _plan_item(config, item)
    config.stash[_STATE]["read_ahead"].close()


class ReportRedaction:
    """Registered per run: masks the stack's secret assignments in every report, first, so
    that the terminal, the JUnit file and xdist's controller only ever see the masked text."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact

    def _scrub(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        report.longrepr = scrub(report.longrepr, self.redact)
        report.sections = scrub(report.sections, self.redact)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._scrub(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._scrub(report)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _STATE not in config.stash:
        return
    state = config.stash[_STATE]
    read_ahead: ReadAhead = state["read_ahead"]
    if read_ahead.error:
        terminalreporter.write_line(
            f"host facts not all read ahead ({read_ahead.error}): {len(read_ahead.answers)} "
            f"of {read_ahead.planned} commands answered, every other check asked the host "
            "itself")
    elif read_ahead.planned:
        more = len(read_ahead.asked)
        terminalreporter.write_line(
            f"host facts: {read_ahead.planned} commands read in one round trip "
            f"({read_ahead.batch_seconds:.1f} s)"
            + (f", {more} more asked one by one" if more else ""))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE not in config.stash:
        return
    state = config.stash[_STATE]
    state["read_ahead"].stop()
    uninstall(state["class"], state["original"])
    target = config.getoption("read_ahead_stats", None)
    if target:
        worker = getattr(config, "workerinput", {}).get("workerid")
        path = Path(f"{target}.{worker}" if worker else target)
        read_ahead = state["read_ahead"]
        path.write_text(json.dumps({**read_ahead.stats(), "error": read_ahead.error}, indent=2))
