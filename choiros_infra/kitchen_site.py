"""A kitchen host's site as a client reaches it: through Caddy, in the scheme its stack serves.

The kitchen converges the stack's own TLS mode (``off``: plain HTTP on 80; ``internal``, and
``acme`` mapped to it: HTTPS on 443 signed by Caddy's internal CA, which nothing here trusts,
so the certificate is not verified).
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

from choiros_infra.kitchen_stack import built_from
from choiros_infra.targets import kitchen
from infra.config import StackConfig, load_stack_file
from kitchen.state import HostState
from provisioning.target import Target

_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE  # Caddy's internal CA


def site_url(cfg: StackConfig, target: Target, address: str, path: str) -> str:
    scheme = "http" if target.tls_mode(cfg.tls_mode) == "off" else "https"
    return f"{scheme}://{address}{path}"


def call(cfg: StackConfig, target: Target, address: str, method: str, path: str,
         body: object = None, timeout: float = 10) -> Any:
    """One JSON request through Caddy; its JSON answer (HTTPError on a 4xx or 5xx)."""
    data = json.dumps(body).encode() if body is not None else None
    url = site_url(cfg, target, address, path)  # http or https, never another scheme
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310
                                context=_UNVERIFIED) as response:
        return json.loads(response.read())


def host_call(st: HostState, method: str, path: str, body: object = None,
              timeout: float = 10) -> Any:
    """:func:`call` for a kitchen host, in the TLS mode of the stack it was built from."""
    return call(load_stack_file(built_from(st)), kitchen(), st.address, method, path, body,
                timeout)
