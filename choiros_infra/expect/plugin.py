"""The pytest plugin: every statement of every ```` ```expect ```` block is one test item.

``docs/runbooks/conftest.py`` imports these hooks, so they apply under that directory only.
Collection needs no host; running needs testinfra's ``--hosts`` (one host, one connection for
every item). A failed item reads ``path:line: SUBJECT: expected X, observed Y``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import testinfra

from choiros_infra.expect.model import Statement
from choiros_infra.expect.parse import RunbookSyntaxError, parse_text
from choiros_infra.expect.probes import (
    HostCommand,
    ProbeContext,
    ProbeError,
    failure_report,
    probe,
    run_command,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _pytest._code.code import TerminalRepr, TracebackStyle

RUNBOOKS_DIRNAME = "runbooks"
USAGE = (
    "runbook expectations check a host: pass testinfra's --hosts, e.g. "
    "pytest docs/runbooks --hosts=ssh://admin@ADDR --ssh-identity-file=KEY --sudo "
    "(--collect-only lists the checks without a host)"
)
# testinfra's own options that shape the connection, passed on when given.
_CONNECTION_OPTIONS = ("connection", "ssh_config", "ssh_extra_args", "ssh_identity_file",
                       "sudo", "sudo_user", "ansible_inventory", "force_ansible")
# The first item proves the connection with it (verify reads it ahead with the rest).
PROOF = HostCommand("true")
_CONTEXT = pytest.StashKey["ProbeContext | RunbookUsageError | ProbeError"]()


class ExpectationFailed(Exception):
    """The host answered, and not as the runbook says."""


class RunbookUsageError(Exception):
    """The run cannot check anything (no host given, or several)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runbooks", "runbook expectations (docs/runbooks expect blocks)")
    group.addoption("--runbook-scheme", choices=("https", "http"), default="https",
                    help="scheme for 'http ... via caddy': https for hosts with TLS (acme, "
                         "internal; certificate not verified), http for tls_mode off "
                         "(default https)")
    group.addoption("--runbook-address", default=None, metavar="ADDR",
                    help="the host's address as seen from here, for 'from outside' and "
                         "'via caddy' (default: the host part of --hosts)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> RunbookFile | None:
    if file_path.suffix == ".md":
        return RunbookFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run runbook items without a host: never a silent pass or skip."""
    config = session.config
    if config.option.collectonly or not any(isinstance(i, RunbookItem) for i in session.items):
        return
    if not config.getoption("hosts", None):
        raise pytest.UsageError(USAGE)


def runbooks_root(path: Path, rootpath: Path) -> Path:
    """Items are named relative to the nearest enclosing ``runbooks`` directory (else to the
    pytest rootdir)."""
    for parent in path.parents:
        if parent.name == RUNBOOKS_DIRNAME:
            return parent
    return rootpath


def _shown(path: Path, rootpath: Path) -> Path:
    """``path`` as the reader should see it: relative to the rootdir when below it."""
    try:
        return path.relative_to(rootpath)
    except ValueError:
        return Path(os.path.relpath(path)) if path.is_absolute() else path


class RunbookFile(pytest.File):
    """A Markdown runbook: one item per statement; a bad statement fails its collection."""

    def collect(self) -> Iterator[RunbookItem]:
        root = runbooks_root(self.path, self.config.rootpath)
        name = self.path.relative_to(root).as_posix()
        try:
            statements = parse_text(self.path.read_text(encoding="utf-8"),
                                    _shown(self.path, self.config.rootpath), name)
        except RunbookSyntaxError as exc:
            raise self.CollectError(str(exc)) from None
        for statement in statements:
            yield RunbookItem.from_parent(self, name=statement.title, statement=statement)


class RunbookItem(pytest.Item):
    """One statement, probed against the host given by ``--hosts``."""

    def __init__(self, *, statement: Statement, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.statement = statement

    @property
    def where(self) -> str:
        return str(self.statement.source)

    def runtest(self) -> None:
        context = _context(self.config)
        if isinstance(context, Exception):
            raise context
        try:
            outcomes = probe(self.statement.check, context)
        except ProbeError:
            raise
        except Exception as exc:  # ssh, sudo or tool trouble: say what, not where in the plugin
            raise ProbeError(f"{type(exc).__name__}: {exc}") from exc
        report = failure_report(self.statement, outcomes, self.where)
        if report is not None:
            raise ExpectationFailed(report)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: TracebackStyle | None = None,
    ) -> str | TerminalRepr:
        if self.config.getoption("fulltrace", False):
            return super().repr_failure(excinfo, style)
        error = excinfo.value
        if isinstance(error, ExpectationFailed):
            return str(error)
        if isinstance(error, ProbeError):
            return (f"{self.where}: {self.statement.text}\n"
                    f"could not probe the host: {error} (--fulltrace shows the traceback)")
        if isinstance(error, RunbookUsageError):
            return f"{self.where}: {self.statement.text}\n{error}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self.statement.source.line - 1, self.name


def _context(config: pytest.Config) -> ProbeContext | RunbookUsageError | ProbeError:
    """The one connection every item shares, made (and proven with ``true``) at the first
    item; a failure to connect is kept, so later items fail at once with the same message."""
    if _CONTEXT not in config.stash:
        config.stash[_CONTEXT] = _connect(config)
    return config.stash[_CONTEXT]


def runbook_host(config: pytest.Config) -> testinfra.host.Host | RunbookUsageError:
    """The one host ``--hosts`` names, with testinfra's connection options (no command run)."""
    hosts = [h.strip() for h in (config.getoption("hosts", None) or "").split(",") if h.strip()]
    if not hosts:
        return RunbookUsageError(USAGE)
    if len(hosts) > 1:
        return RunbookUsageError(f"runbook expectations check one host at a time; --hosts "
                                 f"names {len(hosts)}: {', '.join(hosts)}")
    options = {name: value for name in _CONNECTION_OPTIONS
               if (value := config.getoption(name, None))}
    return testinfra.get_host(hosts[0], **options)


def probe_context(config: pytest.Config, host: testinfra.host.Host) -> ProbeContext:
    """How every runbook item reaches ``host`` (and what verify's read-ahead plans with)."""
    backend = host.backend
    local = backend.get_connection_type() == "local"
    address = config.getoption("runbook_address", None) or (
        "127.0.0.1" if local else str(backend.get_hostname()))
    return ProbeContext(host=host, outside_address=address, sudo=bool(backend.sudo),
                        scheme=config.getoption("runbook_scheme", "https"))


def _connect(config: pytest.Config) -> ProbeContext | RunbookUsageError | ProbeError:
    try:
        host = runbook_host(config)
        if isinstance(host, RunbookUsageError):
            return host
        proof = run_command(ProbeContext(host, ""), PROOF)
    except Exception as exc:
        return ProbeError(f"cannot connect to {config.getoption('hosts')}: "
                          f"{type(exc).__name__}: {exc}")
    if proof.rc != 0:
        return ProbeError(f"`true` failed on {config.getoption('hosts')} (exit {proof.rc}): "
                          f"{proof.stderr.strip() or proof.stdout.strip()}")
    return probe_context(config, host)
