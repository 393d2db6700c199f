"""TCP connects from this machine to the host, made once per run and shared by every check.

A port the firewall closes answers nothing: each "closed from outside" check costs its whole
connect timeout (3 s). Whether a port is open does not change during a verify, so the run tries
each (address, port) once, starts every try it will need as soon as the checks are collected
(in the background, beside the other checks), and hands the same answer to the suites and to
the runbook statements (``port N: closed from outside``), whose probe is routed here by
:func:`install`.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

from choiros_infra.expect import probes

Connect = Callable[[str, int, float], tuple[bool, str]]
TIMEOUT = 3.0  # the runbook probes' own connect timeout (ProbeContext.connect_timeout)


class SharedConnects:
    """A memo of connect results, keyed by (address, port); tries run on a small pool."""

    def __init__(self, connect: Connect, timeout: float = TIMEOUT, workers: int = 8) -> None:
        self._connect = connect
        self._timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "outside-connect")
        self._tries: dict[tuple[str, int], concurrent.futures.Future[tuple[bool, str]]] = {}
        self._lock = threading.Lock()

    def start(self, address: str, port: int) -> concurrent.futures.Future[tuple[bool, str]]:
        with self._lock:
            key = (address, port)
            if key not in self._tries:
                self._tries[key] = self._pool.submit(self._connect, address, port, self._timeout)
            return self._tries[key]

    def __call__(self, address: str, port: int, timeout: float = TIMEOUT) -> tuple[bool, str]:
        """Same signature as ``connect_from_outside``: (open, what happened). Errors (an
        address that does not resolve) are raised to every caller alike."""
        return self.start(address, port).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def install(timeout: float = TIMEOUT) -> SharedConnects:
    """Route the runbook probes' outside connects through one shared memo, and return it.
    ``timeout``: how long an unanswered connect waits before it counts as closed."""
    current = probes.connect_from_outside
    original = current._connect if isinstance(current, SharedConnects) else current
    shared = SharedConnects(original, timeout)
    probes.connect_from_outside = shared  # type: ignore[assignment]
    return shared


def uninstall(shared: SharedConnects) -> None:
    shared.close()
    if probes.connect_from_outside is shared:
        probes.connect_from_outside = shared._connect  # type: ignore[assignment]
