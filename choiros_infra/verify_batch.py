"""pytest plugin of verify: read every host fact the collected checks will ask, in one round
trip, while the first checks run (``choiros_infra/host_batch.py`` says how).

``choiros-infra verify`` loads it with ``-p choiros_infra.verify_batch``. After collection it
plans the commands: each runbook statement's kind lists its probe's (``Kind.commands``), each
tests/infra module its own (a module-level ``host_commands(config)`` returning
``HostCommand``s), plus the runbook plugin's connection proof. It reads them in one batch on
a thread and answers the checks' ``host.run`` from it; checks that read nothing planned
(through Caddy, from outside) run meanwhile. A batch that fails is reported in one line and the
checks ask the host one by one (through the same program): never a skipped or passed check.

Secrets stay on the host (:mod:`choiros_infra.redaction`): every command of the run, read
ahead or not, goes through the host program, which masks the host's secret values before they
leave; and every report of the run (a failure's text, its captured output), before the
terminal or the JUnit file sees it, has the assignments to the stack's secret names masked
(``--stack-file``'s ``choiros:secrets``).

``--read-ahead-stats FILE`` writes what happened as JSON (``bench/verify_speed.py`` reads
it): commands planned, the batch's seconds, SSH round trips of this pytest process, and the
commands that still went one by one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from choiros_infra.expect.kinds import kind_of
from choiros_infra.expect.plugin import PROOF, RunbookUsageError, probe_context, runbook_host
from choiros_infra.expect.probes import HostCommand
from choiros_infra.host_batch import HostSecrets, ReadAhead, install, uninstall
from choiros_infra.redaction import Redactor, scrub, variable_of
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


def pytest_configure(config: pytest.Config) -> None:
    names = secret_names(config)
    config.pluginmanager.register(ReportRedaction(Redactor(names=frozenset(names))),
                                  "choiros-report-redaction")
    host = runbook_host(config) if config.getoption("hosts", None) else None
    if host is None or isinstance(host, RunbookUsageError):
        return
    read_ahead = ReadAhead(secrets=HostSecrets(names=names))
    backend_class = type(host.backend)
    config.stash[_STATE] = {"read_ahead": read_ahead, "host": host, "class": backend_class,
                            "original": install(read_ahead, backend_class)}


def planned_commands(config: pytest.Config, items: list[pytest.Item]) -> Iterator[HostCommand]:
    """Every command the items will run on the host, as their kinds and modules declare."""
    state = config.stash[_STATE]
    yield PROOF
    yield ENCODING_QUERY
    yield from SYSTEM_INFO
    context = probe_context(config, state["host"])
    modules: set[int] = set()
    for item in items:
        statement = getattr(item, "statement", None)
        if statement is not None:
            yield from kind_of(statement.check).commands(statement.check, context)
            continue
        module = getattr(item, "module", None)
        declare = getattr(module, "host_commands", None)
        if declare is not None and id(module) not in modules:
            modules.add(id(module))
            yield from declare(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if (_STATE not in config.stash or config.option.collectonly or not session.items
            or config.getoption("read_ahead") == "off"):
        return
    state = config.stash[_STATE]
    backend = state["host"].backend
    commands = [backend.quote(c.template, *c.args)
                for c in planned_commands(config, session.items)]
    state["read_ahead"].read_in_background(state["host"], commands)


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
        terminalreporter.write_line(f"host facts not read ahead ({read_ahead.error}): every "
                                    "check asked the host itself")
    elif read_ahead.planned:
        more = len(read_ahead.asked)
        terminalreporter.write_line(
            f"host facts: {read_ahead.planned} commands read in one round trip "
            f"({read_ahead.batch_seconds:.1f} s)"
            + (f", {more} more asked one by one" if more else ""))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE not in config.stash:
        return
    state = config.stash.get(_STATE, {})
    uninstall(state["class"], state["original"])
    target = config.getoption("read_ahead_stats", None)
    if target:
        worker = getattr(config, "workerinput", {}).get("workerid")
        path = Path(f"{target}.{worker}" if worker else target)
        read_ahead = state["read_ahead"]
        path.write_text(json.dumps({**read_ahead.stats(), "error": read_ahead.error}, indent=2))
