"""Runbooks that check themselves: every statement in a ```expect block of a Markdown file
below this directory is a test item (grammar: 50-testing/expect-grammar.md).

    pytest docs/runbooks --collect-only                   # list the checks, no host needed
    pytest docs/runbooks --hosts=ssh://admin@ADDR --ssh-identity-file=KEY --sudo

The hooks are imported (not listed in ``pytest_plugins``) so they apply to this directory only
and keep working when this conftest is not the first one pytest loads.
"""

from choiros_infra.expect.plugin import (
    pytest_addoption,
    pytest_collect_file,
    pytest_collection_finish,
)

__all__ = ["pytest_addoption", "pytest_collect_file", "pytest_collection_finish"]
