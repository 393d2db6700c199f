"""Suites that run against ANY ChoirOS host: a kitchen host or the live server.

Run them with testinfra's ``--hosts`` (``choiros-infra verify`` and ``kitchen verify`` do, with
the runbook expectations of docs/runbooks in the same run):
``pytest tests/infra --hosts=ssh://admin@ADDR --ssh-identity-file=KEY --sudo
--stack-file=Pulumi.example.yaml --target=kitchen``. What the host must look like comes from
the same rendering that built it (see expectations.py).

Every test names the runbook section it proves on its docstring's first line,
``Runbook: 30-operations/04-security.md#ssh``; collection refuses a test without one. The
reference is recorded on the test's report (JUnit property ``runbook``), and verify's report
groups results by it.
"""

from __future__ import annotations

import re
from pathlib import Path

import outside_connect
import pytest
import testinfra
from expectations import BACKEND_PORT, OPEN_TCP_PORTS, Expectations, for_run
from testinfra.host import Host

from choiros_infra.expect.kinds.port import PortCheck, Reachable
from choiros_infra.expect.probes import ProbeContext

HERE = Path(__file__).resolve().parent
RUNBOOK_REF = re.compile(r"^Runbook: (?P<path>[\w./-]+\.md)#(?P<section>[\w-]+)\b")
# testinfra's parameter holding the host; not part of a check's title.
HOST_PARAM = "_testinfra_host"
CONNECTS = pytest.StashKey[outside_connect.SharedConnects]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("choiros")
    group.addoption("--stack-file", default="Pulumi.example.yaml",
                    help="stack file the host was built from (default Pulumi.example.yaml)")
    group.addoption("--target", default="kitchen", choices=("aws", "kitchen"),
                    help="rendering target the host was built with (default kitchen)")
    group.addoption("--account-id", default=None,
                    help="AWS account id of the stack (aws; default: the kitchen cloud's)")
    group.addoption("--connect-timeout", type=float, default=outside_connect.TIMEOUT,
                    metavar="SECONDS",
                    help="how long a connect from outside waits for an answer before the port "
                         f"counts as closed (default {outside_connect.TIMEOUT:g}; a firewall "
                         "that drops costs the whole timeout)")


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("hosts", default=None):
        raise pytest.UsageError(
            "tests/infra check a host: pass --hosts=ssh://USER@ADDR (and --ssh-identity-file, "
            "--sudo), or run `choiros-infra verify` / `choiros-infra kitchen verify`")
    config.stash[CONNECTS] = outside_connect.install(config.getoption("connect_timeout"))


def pytest_unconfigure(config: pytest.Config) -> None:
    if CONNECTS in config.stash:
        outside_connect.uninstall(config.stash[CONNECTS])


def _address(config: pytest.Config) -> str:
    """The host's address as testinfra (and so every outside check) names it."""
    spec = config.getoption("hosts").split(",")[0].strip()
    return str(testinfra.get_host(spec).backend.get_hostname())


def _tries_outside(item: pytest.Item) -> set[int]:
    """Ports an item will try to connect to from here."""
    if isinstance(item, pytest.Function) and "from_outside" in item.fixturenames:
        return {*OPEN_TCP_PORTS, BACKEND_PORT}
    check = getattr(getattr(item, "statement", None), "check", None)
    if isinstance(check, PortCheck) and any(isinstance(a, Reachable) for a in check.expect):
        return {check.port}
    return set()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start every connect the checks will need now, in the background: a closed port's
    timeout then passes while other checks run."""
    config = session.config
    if config.option.collectonly or CONNECTS not in config.stash:
        return
    address = _address(config)
    runbook_address = config.getoption("runbook_address", None) or address
    for item in session.items:
        for port in _tries_outside(item):
            config.stash[CONNECTS].start(
                address if isinstance(item, pytest.Function) else runbook_address, port)


@pytest.fixture(scope="session")
def connects(pytestconfig: pytest.Config) -> outside_connect.SharedConnects:
    """Connects from this machine, each (address, port) tried once per run."""
    return pytestconfig.stash[CONNECTS]


@pytest.fixture(scope="session")
def expected(pytestconfig: pytest.Config) -> Expectations:
    return for_run(pytestconfig)


@pytest.fixture(scope="module")
def outside(host: Host) -> str:
    """The host's address as this machine reaches it."""
    return str(host.backend.get_hostname())


@pytest.fixture(scope="module")
def caddy(host: Host, expected: Expectations, outside: str) -> ProbeContext:
    """How requests reach Caddy from here: the site's name for acme, else the address."""
    return ProbeContext(host=host, outside_address=expected.site_name or outside, sudo=True,
                        scheme="http" if expected.scheme == "http" else "https")


def runbook_reference(item: pytest.Function) -> str | None:
    match = RUNBOOK_REF.match((item.function.__doc__ or "").strip())
    return f"{match['path']}#{match['section']}" if match else None


def check_title(item: pytest.Function) -> str:
    """The test's name with its parameters but without the host's (the same for every
    check of a run): ``test_managed_file[/etc/caddy/Caddyfile]``."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return item.name
    host = callspec.params.get(HOST_PARAM)
    ident = callspec.id
    if host is not None:
        host_id = host.backend.get_pytest_id()
        for part in (f"-{host_id}", f"{host_id}-", host_id):
            if part in ident:
                ident = ident.replace(part, "", 1)
                break
    return f"{item.originalname}[{ident}]" if ident else item.originalname


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Record on every check's report (JUnit properties) the runbook it belongs to and a
    readable title: the suites' from their docstrings, runbook statements (in the same verify
    run) from their source. Refuse a suite test that names no runbook section."""
    missing: list[str] = []
    for item in items:
        statement = getattr(item, "statement", None)
        if statement is not None:
            item.user_properties += [("runbook", statement.source.name),
                                     ("line", str(statement.source.line)),
                                     ("title", statement.text)]
            continue
        if not isinstance(item, pytest.Function) or HERE not in item.path.parents:
            continue
        reference = runbook_reference(item)
        if reference is None:
            missing.append(item.nodeid)
            continue
        item.user_properties.append(("runbook", reference))
        item.user_properties.append(("title", check_title(item)))
    if missing:
        raise pytest.UsageError(
            "every test in tests/infra names the runbook section it proves on its docstring's "
            "first line, e.g. 'Runbook: 30-operations/04-security.md#ssh'; missing in:\n  "
            + "\n  ".join(sorted(set(missing))))
