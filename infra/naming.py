"""Physical names known without Pulumi: the kitchen and offline renders use them too."""

from __future__ import annotations

import re

ACCOUNT_ID = re.compile(r"[0-9]{12}")


def account_id_problem(value: str) -> str | None:
    """Why ``value`` is not an AWS account id (12 digits), or None."""
    return None if ACCOUNT_ID.fullmatch(value) else f"{value!r} is not an AWS account id " \
        "(12 digits)"


def bucket_name(stack_name: str, purpose: str, account: str) -> str:
    """The physical name of one of the stack's buckets: ``choiros-<stack>-<purpose>-<account>``.

    Why deterministic, and why the account id: see ``infra/storage.py``.
    """
    return f"{stack_name}-{purpose}-{account}"
