"""Physical names known without Pulumi: the kitchen and offline renders use them too."""

from __future__ import annotations


def bucket_name(stack_name: str, purpose: str, account: str) -> str:
    """The physical name of one of the stack's buckets: ``choiros-<stack>-<purpose>-<account>``.

    Why deterministic, and why the account id: see ``infra/storage.py``.
    """
    return f"{stack_name}-{purpose}-{account}"
