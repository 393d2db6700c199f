"""The registry of expect subject kinds: one file per kind, listed here.

A statement's first word picks its kind (``KINDS``); a check's type picks the probe
(``kind_of``). Each file holds its kind's Check type, clause table and probe, and ends in
``KIND = Kind(...)`` (see ``choiros_infra/expect/kind.py``). The order is the order the
grammar doc and refusals list them.
"""

from __future__ import annotations

from typing import Any

from choiros_infra.expect.kind import Kind
from choiros_infra.expect.kinds import (
    command,
    fail2ban,
    file,
    http,
    package,
    port,
    service,
    sshd,
    timer,
    ufw,
    user,
)
from choiros_infra.expect.model import Check

KINDS: dict[str, Kind[Any]] = {kind.name: kind for kind in (
    service.KIND, port.KIND, file.KIND, http.KIND, command.KIND, user.KIND, package.KIND,
    ufw.KIND, sshd.KIND, fail2ban.KIND, timer.KIND)}
_BY_TYPE: dict[type, Kind[Any]] = {kind.check_type: kind for kind in KINDS.values()}


def kind_of(check: Check) -> Kind[Any]:
    """The kind a check belongs to (every check is made by one kind's parser)."""
    return _BY_TYPE[type(check)]
