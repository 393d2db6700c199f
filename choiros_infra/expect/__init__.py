"""Runbooks that check themselves.

Runbooks under ``docs/runbooks`` state expected host state in ```` ```expect ```` blocks, one
statement a line (grammar: ``docs/runbooks/50-testing/expect-grammar.md``). This package parses
them into typed, frozen checks (``parse``, pure), probes a host for each (``probes``), and runs
them as pytest items (``plugin``, activated by ``docs/runbooks/conftest.py``).

Each subject kind (``service``, ``file``, ``ufw``, ``timer``...) is one registered unit, a
file under ``kinds/`` holding its Check type, its clause table and its probe (``kind.Kind``);
``grammar`` holds the tokens and clause forms they share.

For other code (a docs lint test, a report generator)::

    from choiros_infra.expect import iter_runbook_statements, lint_runbooks, parse_file

    for statement in iter_runbook_statements("docs/runbooks"):
        print(statement.title, statement.check)
"""

from choiros_infra.expect.model import Check, Source, Statement
from choiros_infra.expect.parse import (
    ParseError,
    RunbookSyntaxError,
    iter_runbook_statements,
    lint_runbooks,
    parse_file,
    parse_statement,
    parse_text,
    runbook_files,
)
from choiros_infra.expect.probes import Outcome, ProbeContext, ProbeError, probe

__all__ = [
    "Check",
    "Outcome",
    "ParseError",
    "ProbeContext",
    "ProbeError",
    "RunbookSyntaxError",
    "Source",
    "Statement",
    "iter_runbook_statements",
    "lint_runbooks",
    "parse_file",
    "parse_statement",
    "parse_text",
    "probe",
    "runbook_files",
]
