"""Steady request load through a host's front door, every outcome recorded: what the
deploy-downtime test counts and bench/deploy_downtime.py prints.

A fixed rate of GETs (no retries, a new connection each, as independent clients make) on a
small pool of threads, bounded in count and time, to a kitchen host's own address only. A
request failed when it raised or answered anything but 200: Caddy's 502 while the backend
restarts is exactly what this is here to catch.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Caddy's internal CA (a kitchen stack with tls internal) is not in this machine's trust store.
_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


@dataclass(frozen=True)
class Outcome:
    started: float  # monotonic
    seconds: float
    status: int | None  # None: no HTTP answer
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Load:
    """Requests to ``urls`` in turn at ``rate`` per second until stopped or ``max_seconds``."""

    urls: tuple[str, ...]
    rate: float = 40.0
    max_seconds: float = 300.0
    timeout: float = 30.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _one(self, url: str) -> None:
        started = time.monotonic()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=_TLS))
        status, error = None, ""
        try:
            with opener.open(url, timeout=self.timeout) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            status, error = e.code, f"HTTP {e.code}"
        except OSError as e:
            error = str(getattr(e, "reason", e))
        self.outcomes.append(Outcome(started, time.monotonic() - started, status, error))

    def _drive(self) -> None:
        interval, began = 1.0 / self.rate, time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            n = 0
            while not self._stop.is_set() and time.monotonic() - began < self.max_seconds:
                pool.submit(self._one, self.urls[n % len(self.urls)])
                n += 1
                self._stop.wait(max(0.0, began + n * interval - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._drive, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def during(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.started <= end]


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
