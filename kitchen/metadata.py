"""The kitchen's instance metadata service: what 169.254.169.254 is to an EC2 instance.

A guest's requests to 169.254.169.254:80 leave through its veth and are redirected (DNAT, see
:func:`kitchen.network.ensure_metadata_redirect`) to this server on the cloud address; the
source address stays the guest's, which is how the server knows which kitchen host asks, as
EC2 knows the instance. It answers the part of IMDSv2 that the host's AWS SDKs use, as an
instance with ``HttpTokens: required`` (the stack's setting) does:

* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) gives a
  session token for that host; without the header 400; a request carrying
  ``X-Forwarded-For`` (one that went through a proxy) 403.
* every ``GET`` needs a live token of the same host in ``X-aws-ec2-metadata-token``, else 401.
* ``/latest/meta-data/instance-id``: the kitchen host's instance id.
* ``/latest/meta-data/iam/security-credentials/``: the name of the host's instance role (404
  when it has none), and ``.../<role>`` the role's temporary credentials, issued by the
  kitchen cloud's STS: AssumeRole on that role, by the identity that plays EC2 in the kitchen
  cloud (the role trusts it, see :mod:`kitchen.iam`). As on EC2, the same credentials are
  served until 15 minutes before they expire, then new ones.

Everything else is 404. The server reads kitchen host states to map a source address to a
host and its role (the instance profile association, set when the host was created).

Run as ``python -m kitchen.metadata --bind ADDRESS --port PORT``; its AWS client is configured
by the environment (endpoint and the EC2 identity's keys), given by :mod:`kitchen.cloud`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kitchen import state as host_state

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a password
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TOKEN_TTL = 21600
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
SESSION_SECONDS = 6 * 3600  # EC2's instance role credentials last about 6 hours
REFRESH_BEFORE = 15 * 60


@dataclass(frozen=True)
class Instance:
    """A kitchen host as the metadata service sees it."""

    instance_id: str
    role_arn: str  # "" when the host has no instance role

    @property
    def role(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]


def kitchen_instance(address: str) -> Instance | None:
    """The kitchen host whose guest address is ``address`` (None: not a kitchen guest)."""
    for st in host_state.all_states():
        if st.address == address:
            return Instance(st.instance_id, st.instance_role)
    return None


class Tokens:
    """IMDSv2 session tokens, each valid for one source address until its TTL runs out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, address: str, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (address, now + ttl)
        return token

    def valid(self, address: str, token: str | None) -> bool:
        with self._lock:
            entry = self._tokens.get(token or "")
            return entry is not None and entry[0] == address and entry[1] > self._clock()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RoleCredentials:
    """Temporary credentials per (role, instance) from STS, reused until close to expiry."""

    def __init__(self, sts: Any) -> None:
        self._sts = sts
        self._cache: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    def for_instance(self, instance: Instance) -> dict[str, str]:
        key = (instance.role_arn, instance.instance_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None or _seconds_left(cached["Expiration"]) < REFRESH_BEFORE:
                cached = self._cache[key] = self._assume(instance)
            return cached

    def _assume(self, instance: Instance) -> dict[str, str]:
        issued = self._sts.assume_role(RoleArn=instance.role_arn,
                                       RoleSessionName=instance.instance_id,
                                       DurationSeconds=SESSION_SECONDS)["Credentials"]
        return {
            "Code": "Success",
            "LastUpdated": _iso(datetime.now(UTC)),
            "Type": "AWS-HMAC",
            "AccessKeyId": issued["AccessKeyId"],
            "SecretAccessKey": issued["SecretAccessKey"],
            "Token": issued["SessionToken"],
            "Expiration": _iso(issued["Expiration"]),
        }


def _seconds_left(expiration: str) -> float:
    moment = datetime.strptime(expiration, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()


def make_handler(tokens: Tokens, credentials: RoleCredentials,
                 lookup: Callable[[str], Instance | None] = kitchen_instance,
                 ) -> type[BaseHTTPRequestHandler]:
    """The request handler class, bound to its token store, credential source and host map."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: str = "", headers: dict[str, str] | None = None,
                    ) -> None:
            data = body.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path != TOKEN_PATH:
                return self._answer(404)
            if self.headers.get("X-Forwarded-For") is not None:
                return self._answer(403)
            raw = self.headers.get(TTL_HEADER, "")
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOKEN_TTL:
                return self._answer(400)
            if lookup(self.client_address[0]) is None:
                return self._answer(403)
            token = tokens.issue(self.client_address[0], int(raw))
            return self._answer(200, token, {TTL_HEADER: raw})

        def do_GET(self) -> None:
            address = self.client_address[0]
            if not tokens.valid(address, self.headers.get(TOKEN_HEADER)):
                return self._answer(401)
            instance = lookup(address)
            if instance is None:
                return self._answer(403)
            if self.path == INSTANCE_ID_PATH:
                return self._answer(200, instance.instance_id)
            if self.path == CREDENTIALS_PATH and instance.role:
                return self._answer(200, instance.role)
            if self.path == CREDENTIALS_PATH + instance.role and instance.role:
                try:
                    issued = credentials.for_instance(instance)
                except (BotoCoreError, ClientError) as exc:
                    self.log_message("AssumeRole %s failed: %s", instance.role, exc)
                    return self._answer(500)
                return self._answer(200, json.dumps(issued, indent=2),
                                    {"Content-Type": "application/json"})
            return self._answer(404)

    return Handler


def serve(bind: str, port: int) -> None:
    import boto3

    credentials = RoleCredentials(boto3.client("sts"))
    server = ThreadingHTTPServer((bind, port), make_handler(Tokens(), credentials))
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.bind, args.port)


if __name__ == "__main__":
    main()
