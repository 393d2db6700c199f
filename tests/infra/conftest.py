"""Suites that run against ANY ChoirOS host: a kitchen host or the live server.

Run them with testinfra's ``--hosts`` (``choiros-infra verify`` and ``kitchen verify`` do):
``pytest tests/infra --hosts=ssh://admin@ADDR --ssh-identity-file=KEY --sudo
--stack-file=Pulumi.example.yaml --target=kitchen``. What the host must look like comes from
the same rendering that built it (see expectations.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from expectations import Expectations, load_expectations


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("choiros")
    group.addoption("--stack-file", default="Pulumi.example.yaml",
                    help="stack file the host was built from (default Pulumi.example.yaml)")
    group.addoption("--target", default="kitchen", choices=("aws", "kitchen"),
                    help="rendering target the host was built with (default kitchen)")
    group.addoption("--account-id", default=None,
                    help="AWS account id of the stack (aws; default: the kitchen cloud's)")


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("hosts", default=None):
        raise pytest.UsageError(
            "tests/infra check a host: pass --hosts=ssh://USER@ADDR (and --ssh-identity-file, "
            "--sudo), or run `choiros-infra verify` / `choiros-infra kitchen verify`")


@pytest.fixture(scope="session")
def expected(pytestconfig: pytest.Config) -> Expectations:
    return load_expectations(
        Path(pytestconfig.getoption("stack_file")),
        pytestconfig.getoption("target"),
        pytestconfig.getoption("account_id"),
    )
