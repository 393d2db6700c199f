"""The stack configuration: read once, validated in one place, frozen.

Every key lives in the ``choiros`` namespace of a Pulumi stack file. Validation happens before
any resource is declared, so a bad value never reaches AWS; every refusal is a ``ConfigError``
that names the key, the value, what is wrong and how to fix it.

This module imports nothing from Pulumi at import time: ``plan``, ``render`` and the kitchen
read stack files through :func:`load_stack_file` without a Pulumi engine.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast, get_args

import yaml

from provisioning.spec import OsName, TlsMode

NAMESPACE = "choiros"

_INSTANCE_TYPE = re.compile(
    r"^[a-z][a-z0-9-]*\d[a-z0-9-]*\.(nano|micro|small|medium|large|metal|\d*xlarge)(-[a-z0-9]+)?$"
)
# Graviton families carry a "g" right after the generation digit (t4g, c7gn, x2gd) or are a1.
_ARM_FAMILY = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)\.")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}$")
_SSM_NAME = re.compile(r"^/?[A-Za-z0-9_.\-/]{1,1011}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# AWS tag keys and values: letters, digits, spaces and _ . : / = + - @ (values may be empty).
_TAG_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")
_TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{0,256}$")
# What EC2's ImportKeyPair accepts: ed25519 and RSA of at least 2048 bits.
_SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
_SSH_KEY_TYPES_REFUSED = ("ecdsa-sha2-", "sk-")
MIN_RSA_BITS = 2048
_AMI_ID = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET_ID = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/(mrk-[0-9a-f]{32}|"
                          r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
# Top-level keys a Pulumi stack file may hold besides config: (the CLI writes them).
_STACK_FILE_KEYS = frozenset({"config", "secretsprovider", "encryptedkey", "encryptionsalt",
                              "environment"})
# Keys whose value is a list: the Pulumi CLI sets those element by element with --path.
LIST_KEYS = frozenset({"admin_cidrs", "secrets"})
# S3 objects take at most 10 tags; every resource gets project, stack, managed-by and Name.
MAX_USER_TAGS = 6
_WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class ConfigError(ValueError):
    """A refused configuration value: which key, which value, what is wrong, how to fix it."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        shown = json.dumps(self.value) if not isinstance(self.value, str) else repr(self.value)
        return f"Error: {NAMESPACE}:{self.key} = {shown}: {self.problem}\nTry: {self.fix}"


@dataclass(frozen=True)
class StackConfig:
    """Everything one ChoirOS stack is configured with. Built only by :func:`parse_config`."""

    stack: str
    region: str
    admin_cidrs: tuple[str, ...]
    ssh_public_key: str
    instance_type: str = "c5.large"
    os: OsName = "debian-12"
    root_volume_gb: int = 20
    allow_world_ssh: bool = False
    domain: str | None = None
    acme_email: str | None = None
    tls_mode: TlsMode = "off"
    alert_email: str | None = None
    backup_retention_days: int = 30
    backup_sync_interval_seconds: int = 1
    secrets: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    termination_protection: bool = False
    secrets_kms_key: str | None = None
    ami: str | None = None
    subnet_id: str | None = None
    keep_releases: int = 5
    alarm_disk_percent: int = 80
    alarm_memory_percent: int = 90
    alarm_unhealthy_minutes: int = 3
    project: str = field(default="choiros")

    @property
    def name(self) -> str:
        """The prefix every resource name starts with: ``choiros-<stack>``."""
        return f"{self.project}-{self.stack}"

    @property
    def all_tags(self) -> dict[str, str]:
        """The tags every taggable resource carries: the user's plus the three fixed ones."""
        return {**dict(self.tags), "project": self.project, "stack": self.stack,
                "managed-by": "pulumi"}

    @property
    def backup_prefix(self) -> str:
        """The host's prefix in the backups bucket; the instance role is limited to it."""
        return f"hosts/{self.stack}/"


# --------------------------------------------------------------------------- value readers


def _text(key: str, raw: object, fix: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(key, raw, "must be a non-empty string", fix)
    return raw.strip()


def _structured(key: str, raw: object) -> object:
    """Pulumi hands structured values over as JSON text; stack files hand them over parsed."""
    if isinstance(raw, str) and raw.strip()[:1] in "[{":
        try:
            return cast(object, json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ConfigError(key, raw, f"is not valid JSON ({exc.msg})",
                              "write the value as a YAML list or mapping") from exc
    return raw


def _string_list(key: str, raw: object, fix: str) -> tuple[str, ...]:
    value = _structured(key, raw)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, raw, "must be a list of strings", fix)
    return tuple(v.strip() for v in value)


def _boolean(key: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ConfigError(key, raw, "must be true or false", f"set {NAMESPACE}:{key} to true or false")


def _integer(key: str, raw: object, low: int, high: int, fix: str) -> int:
    if isinstance(raw, bool):
        raise ConfigError(key, raw, "must be a whole number", fix)
    try:
        number = int(str(raw), 10)
    except ValueError:
        raise ConfigError(key, raw, "must be a whole number", fix) from None
    if not low <= number <= high:
        raise ConfigError(key, raw, f"must be between {low} and {high}", fix)
    return number


# --------------------------------------------------------------------------- key validators


def aws_regions() -> frozenset[str]:
    """Every region of every AWS partition, from the endpoint data botocore ships."""
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return frozenset(r for p in endpoints["partitions"] for r in p["regions"])


def _region(raw: object) -> str:
    fix = "set choiros:region to an AWS region such as eu-west-1"
    region = _text("region", raw, fix)
    if region not in aws_regions():
        raise ConfigError("region", raw, "is not an AWS region", fix)
    return region


def _ami(raw: object) -> str:
    fix = ("pin an image id such as ami-0123456789abcdef0 (choiros-infra plan prints the "
           "newest Debian 12 image when this key is unset)")
    value = _text("ami", raw, fix)
    if not _AMI_ID.fullmatch(value):
        raise ConfigError("ami", raw, "is not an AMI id", fix)
    return value


def _kms_key(raw: object) -> str:
    fix = ("use the key's ARN, arn:aws:kms:REGION:ACCOUNT:key/ID, or leave it unset for "
           "parameters encrypted with the AWS managed key aws/ssm")
    value = _text("secrets_kms_key", raw, fix)
    if not _KMS_KEY_ARN.fullmatch(value):
        raise ConfigError("secrets_kms_key", raw, "is not a KMS key ARN", fix)
    return value


def _subnet_id(raw: object) -> str:
    fix = "use the id of a public subnet of your VPC, e.g. subnet-0123456789abcdef0"
    value = _text("subnet_id", raw, fix)
    if not _SUBNET_ID.fullmatch(value):
        raise ConfigError("subnet_id", raw, "is not a subnet id", fix)
    return value


def _instance_type(raw: object) -> str:
    fix = "use an EC2 instance type name such as c5.large or t3.medium"
    value = _text("instance_type", raw, fix)
    if not _INSTANCE_TYPE.fullmatch(value):
        raise ConfigError("instance_type", raw, "is not an EC2 instance type name", fix)
    if _ARM_FAMILY.match(value):
        raise ConfigError("instance_type", raw, "is an Arm (Graviton) type; the images and "
                          "release binaries are amd64", "use an x86 type such as c5.large")
    return value


def _os(raw: object) -> OsName:
    if raw == "ubuntu-22.04":
        raise ConfigError("os", raw, "is not supported: the host tools need Python 3.11 "
                          "(Ubuntu 22.04 has 3.10) and the kitchen cannot boot Ubuntu to prove it",
                          "use debian-12 (the default), or remove choiros:os")
    if raw != "debian-12":
        raise ConfigError("os", raw, "is not a supported operating system",
                          "use debian-12 (the default, what the kitchen tests)")
    return "debian-12"


def _admin_cidrs(raw: object, allow_world: bool) -> tuple[str, ...]:
    fix = "list the networks operators SSH from, e.g. [203.0.113.7/32]"
    cidrs = _string_list("admin_cidrs", raw, fix)
    if not cidrs:
        raise ConfigError("admin_cidrs", raw, "must name at least one network", fix)
    normal: list[str] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise ConfigError("admin_cidrs", cidr, f"is not a valid CIDR ({exc})",
                              "write an address with its prefix length: 203.0.113.7/32") from None
        if network in _WORLD and not allow_world:
            raise ConfigError("admin_cidrs", cidr, "opens SSH to the whole internet",
                              "list your own networks, or set choiros:allow_world_ssh: true "
                              "if you really mean it")
        normal.append(str(network))
    return tuple(normal)


def _ssh_public_key(raw: object) -> str:
    fix = "paste one line of ~/.ssh/id_ed25519.pub (type, base64 key, optional comment)"
    key = _text("ssh_public_key", raw, fix)
    parts = key.split()
    if parts and parts[0].startswith(_SSH_KEY_TYPES_REFUSED):
        raise ConfigError("ssh_public_key", raw, f"is a {parts[0]} key, which EC2 key pairs "
                          "refuse (they take ed25519 and RSA of 2048 bits or more)",
                          "use an ed25519 key: ssh-keygen -t ed25519, then paste the .pub line")
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES or "\n" in key:
        raise ConfigError("ssh_public_key", raw, "is not an OpenSSH public key", fix)
    import base64
    import binascii
    import struct

    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ConfigError("ssh_public_key", raw, "has a corrupt base64 key body", fix) from None
    if embedded != parts[0]:
        raise ConfigError("ssh_public_key", raw,
                          f"says {parts[0]} but its key body is {embedded!r}", fix)
    if embedded == "ssh-rsa":
        bits = _rsa_bits(blob[4 + length:])
        if bits < MIN_RSA_BITS:
            raise ConfigError("ssh_public_key", raw, f"is a {bits}-bit RSA key; EC2 key pairs "
                              f"need at least {MIN_RSA_BITS} bits",
                              "use an ed25519 key: ssh-keygen -t ed25519")
    return key


def _rsa_bits(fields_blob: bytes) -> int:
    """The modulus size of an RSA public key blob after its type name: e, then n (mpints)."""
    import struct

    offset = 0
    mpints: list[bytes] = []
    for _ in range(2):
        (size,) = struct.unpack(">I", fields_blob[offset:offset + 4])
        mpints.append(fields_blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    return int.from_bytes(mpints[1], "big").bit_length()


def _domain(raw: object) -> str:
    fix = "use a DNS name such as choir.example.com, without scheme or path"
    name = _text("domain", raw, fix).lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_DNS_LABEL.match(lb) for lb in labels):
        raise ConfigError("domain", raw, "is not a valid DNS name", fix)
    return name


def _email(key: str, raw: object) -> str:
    fix = f"set {NAMESPACE}:{key} to an address such as ops@example.com"
    value = _text(key, raw, fix)
    if not _EMAIL.fullmatch(value):
        raise ConfigError(key, raw, "is not a valid email address", fix)
    return value


def _secrets(raw: object) -> tuple[str, ...]:
    fix = "list SSM parameter names such as /choiros/prod/OPENAI_API_KEY (names only, never values)"
    names = _string_list("secrets", raw, fix)
    for name in names:
        last = name.rstrip("/").rsplit("/", 1)[-1]
        if not _SSM_NAME.fullmatch(name) or name.startswith("aws") or name.startswith("ssm"):
            raise ConfigError("secrets", name, "is not a valid SSM parameter name", fix)
        if not _ENV_NAME.fullmatch(last):
            raise ConfigError("secrets", name,
                              f"ends in {last!r}, which cannot be an environment variable name",
                              "end the parameter name with the variable it fills, e.g. .../API_KEY")
        if "=" in name or any(c.isspace() for c in name):
            raise ConfigError("secrets", name, "looks like a value, not a parameter name", fix)
    if len(set(names)) != len(names):
        raise ConfigError("secrets", raw, "names a parameter twice", "list each parameter once")
    return names


def _tags(raw: object) -> tuple[tuple[str, str], ...]:
    fix = "write tags as a mapping of short strings, e.g. {owner: ops}"
    value = _structured("tags", raw)
    if not isinstance(value, dict):
        raise ConfigError("tags", raw, "must be a mapping of tag names to values", fix)
    pairs: list[tuple[str, str]] = []
    for key, val in sorted(value.items()):
        if not isinstance(key, str) or not _TAG_KEY.match(key) or key.startswith("aws:"):
            raise ConfigError("tags", key, "is not a valid tag name", fix)
        if key in ("project", "stack", "managed-by"):
            raise ConfigError("tags", key, "is set by this program itself", "remove it from tags")
        if not isinstance(val, str | int) or len(str(val)) > 256:
            raise ConfigError("tags", {key: val}, "tag values must be strings of at most 256", fix)
        if not _TAG_VALUE.fullmatch(str(val)):
            raise ConfigError("tags", {key: val}, "has a character AWS refuses in tag values",
                              "use only letters, digits, spaces and _ . : / = + - @")
        pairs.append((key, str(val)))
    if len(pairs) > MAX_USER_TAGS:
        raise ConfigError("tags", raw, f"has {len(pairs)} tags; at most {MAX_USER_TAGS} fit",
                          "S3 objects (the host's artifacts) take at most 10 tags, and this "
                          "program adds project, stack, managed-by and Name: drop some")
    return tuple(pairs)


def _tls_mode(raw: object, domain: str | None) -> TlsMode:
    if raw not in get_args(TlsMode):
        raise ConfigError("tls_mode", raw, "must be acme, internal or off",
                          "leave it unset: acme when a domain is set, off otherwise")
    if raw == "acme" and domain is None:
        raise ConfigError("tls_mode", raw, "needs choiros:domain for a certificate",
                          "set choiros:domain, or use tls_mode internal or off")
    return cast(TlsMode, raw)


# --------------------------------------------------------------------------- the parser

KEYS: dict[str, str] = {
    "region": "AWS region the host and its buckets live in, e.g. eu-west-1.",
    "instance_type": "EC2 instance type (default c5.large, the runbook's size).",
    "os": "Operating system: debian-12 (the only one supported: what the kitchen tests).",
    "ami": "AMI id the host boots, pinned; unset, the newest official Debian 12 image (plan "
    "prints it). A new value replaces the host.",
    "subnet_id": "Subnet the host lives in (its VPC follows); required where the account has "
    "no default VPC. A new value replaces the host.",
    "root_volume_gb": "Root volume size in GiB, gp3, encrypted; at least 20 (default 20).",
    "admin_cidrs": "Networks allowed to reach SSH (22/tcp), as a list of CIDRs. Required.",
    "allow_world_ssh": "Set true to allow 0.0.0.0/0 or ::/0 in admin_cidrs (default false).",
    "ssh_public_key": "OpenSSH public key for the EC2 key pair (user admin). Required.",
    "domain": "DNS name of the site; enables automatic HTTPS and HSTS. Optional.",
    "acme_email": "Contact address for Let's Encrypt; required when domain is set.",
    "tls_mode": "Caddy TLS: acme (default with a domain), internal (self-signed), off (default).",
    "alert_email": "Address subscribed to the alarm topic. Optional.",
    "backup_retention_days": "Days old backup versions are kept (default 30, 1..3650).",
    "backup_sync_interval_seconds": "Seconds between database replication uploads to S3, the "
    "most data a lost host can lose (default 1, 1..300; busy: ~2.8M PUTs a month at 1).",
    "secrets": "SSM parameter names the app needs (names only); fetched at boot into backend.env.",
    "secrets_kms_key": "ARN of the customer-managed KMS key the secrets are encrypted with; unset "
    "for the AWS managed key aws/ssm (no kms:Decrypt in the role then).",
    "tags": "Extra tags for every resource, as a mapping.",
    "termination_protection": "Protect the instance from API termination (default false).",
    "keep_releases": "Releases kept under /opt/choiros/releases (default 5, at least 2).",
    "alarm_disk_percent": "Alarm when /, the data or the log filesystem is fuller than this for "
    "5 minutes (percent, default 80, 50..99).",
    "alarm_memory_percent": "Alarm when memory use is above this for 5 minutes (percent, "
    "default 90, 50..99).",
    "alarm_unhealthy_minutes": "Alarm when the health check fails this many of the last N+2 "
    "minutes, or stops reporting (default 3, 1..30).",
}


# Keys that existed once, with the way off them.
REMOVED_KEYS: dict[str, str] = {
    "app_version": "remove it: the release a host runs is the stack's wanted release in the "
    "artifacts bucket, set by `choiros-infra deploy VERSION --stack STACK` (it never replaces "
    "the host); run that once with the version the host runs now",
}


def parse_config(values: Mapping[str, object], stack: str) -> StackConfig:
    """Validate raw values (keys without the namespace) into a StackConfig, or raise ConfigError."""
    if removed := sorted(set(values) & set(REMOVED_KEYS)):
        key = removed[0]
        raise ConfigError(key, values[key], "is no longer a stack setting", REMOVED_KEYS[key])
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(unknown[0], values[unknown[0]], "is not a known key",
                          f"remove it, or use one of: {', '.join(sorted(KEYS))}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", stack):
        raise ConfigError("stack", stack, "stack names must be short, lowercase, digits and -",
                          "rename the stack, e.g. production")

    def required(key: str) -> object:
        if key not in values or values[key] in (None, ""):
            raise ConfigError(key, None, "is required", set_hint(key))
        return values[key]

    def optional(key: str, parse: Callable[[object], Any]) -> Any:
        raw = values.get(key)
        return None if raw in (None, "") else parse(raw)

    allow_world = bool(optional("allow_world_ssh", lambda r: _boolean("allow_world_ssh", r)))
    domain: str | None = optional("domain", _domain)
    acme_email: str | None = optional("acme_email", lambda r: _email("acme_email", r))
    if domain is not None and acme_email is None:
        raise ConfigError("acme_email", None, "is required when choiros:domain is set",
                          "set choiros:acme_email to the address Let's Encrypt may write to")
    defaults = {f.name: f.default for f in fields(StackConfig)}
    tls_mode: TlsMode = optional("tls_mode", lambda r: _tls_mode(r, domain)) or (
        "acme" if domain else "off")

    def default(key: str) -> Any:
        return defaults[key]

    return StackConfig(
        stack=stack,
        region=_region(required("region")),
        admin_cidrs=_admin_cidrs(required("admin_cidrs"), allow_world),
        ssh_public_key=_ssh_public_key(required("ssh_public_key")),
        instance_type=optional("instance_type", _instance_type) or default("instance_type"),
        os=optional("os", _os) or default("os"),
        root_volume_gb=optional("root_volume_gb", lambda r: _integer(
            "root_volume_gb", r, 20, 16384, "use at least 20 (GiB), the runbook's size"))
        or default("root_volume_gb"),
        allow_world_ssh=allow_world,
        domain=domain,
        acme_email=acme_email,
        tls_mode=tls_mode,
        alert_email=optional("alert_email", lambda r: _email("alert_email", r)),
        backup_retention_days=optional("backup_retention_days", lambda r: _integer(
            "backup_retention_days", r, 1, 3650, "use a number of days such as 30"))
        or default("backup_retention_days"),
        backup_sync_interval_seconds=optional("backup_sync_interval_seconds", lambda r: _integer(
            "backup_sync_interval_seconds", r, 1, 300,
            "use a few seconds such as 1 (each second costs S3 PUTs, see the config reference)"))
        or default("backup_sync_interval_seconds"),
        secrets=optional("secrets", _secrets) or (),
        tags=optional("tags", _tags) or (),
        secrets_kms_key=optional("secrets_kms_key", _kms_key),
        termination_protection=bool(optional(
            "termination_protection", lambda r: _boolean("termination_protection", r))),
        ami=optional("ami", _ami),
        subnet_id=optional("subnet_id", _subnet_id),
        keep_releases=optional("keep_releases", lambda r: _integer(
            "keep_releases", r, 2, 100, "keep at least 2 (current and previous)"))
        or default("keep_releases"),
        alarm_disk_percent=optional("alarm_disk_percent", lambda r: _integer(
            "alarm_disk_percent", r, 50, 99, "use a percentage such as 80"))
        or default("alarm_disk_percent"),
        alarm_memory_percent=optional("alarm_memory_percent", lambda r: _integer(
            "alarm_memory_percent", r, 50, 99, "use a percentage such as 90"))
        or default("alarm_memory_percent"),
        alarm_unhealthy_minutes=optional("alarm_unhealthy_minutes", lambda r: _integer(
            "alarm_unhealthy_minutes", r, 1, 30, "use a few minutes such as 3"))
        or default("alarm_unhealthy_minutes"),
    )


def set_hint(key: str) -> str:
    """The Pulumi CLI command that sets ``key``: list keys are set element by element."""
    if key in LIST_KEYS:
        return f"pulumi config set --path '{NAMESPACE}:{key}[0]' ..."
    return f"pulumi config set {NAMESPACE}:{key} ..."


def _is_secure(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def namespaced(values: Mapping[str, object]) -> dict[str, object]:
    """The ``choiros:*`` entries of a stack file's config, without the namespace.

    A ``secure:`` (encrypted) value is refused: only the Pulumi CLI can decrypt it, and this
    program keeps secrets out of its config altogether (SSM parameters, by name)."""
    prefix = f"{NAMESPACE}:"
    found = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
    for key, value in found.items():
        if _is_secure(value):
            raise ConfigError(key, "[secure]", "is an encrypted (secure:) value; stack files "
                              "are read here without Pulumi, which alone can decrypt it",
                              f"set it in plain text ({set_hint(key)}); put secret values in "
                              "SSM and name them in choiros:secrets")
    return found


def check_aws_region(config: Mapping[str, object], region: str) -> None:
    """Refuse an ``aws:region`` that disagrees with ``choiros:region``: the program's own
    provider uses choiros:region, and a second region in the file misleads whoever reads it."""
    other = config.get("aws:region")
    if other not in (None, "") and other != region:
        raise ConfigError("region", region, f"disagrees with aws:region = {other!r}",
                          "remove aws:region from the stack file (choiros:region decides), "
                          "or set both to the same region")


def stack_name_of(path: Path) -> str:
    """``Pulumi.production.yaml`` -> ``production``: Pulumi's own naming of stack files."""
    parts = path.name.split(".")
    if len(parts) != 3 or parts[0] != "Pulumi" or parts[2] not in ("yaml", "yml"):
        raise ConfigError("stack", path.name, "is not named like a stack file",
                          "name stack files Pulumi.<stack>.yaml")
    return parts[1]


def read_stack_file(path: Path) -> dict[str, object]:
    """The raw ``config:`` mapping of a Pulumi stack file (all namespaces)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("stack-file", str(path), f"cannot be read ({exc.strerror})",
                          "pass --stack-file with the path of a Pulumi.<stack>.yaml") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("stack-file", where, f"is not valid YAML: {problem}",
                          f"fix the YAML syntax at line {mark.line + 1} of {path}"
                          if mark is not None else f"fix the YAML syntax of {path}") from None
    if document is None:
        raise ConfigError("stack-file", str(path), "is empty",
                          "copy Pulumi.example.yaml to it and edit the values")
    if not isinstance(document, dict):
        raise ConfigError("stack-file", str(path), "is not a mapping with a config: section",
                          "start the file with config:, see Pulumi.example.yaml")
    outside = sorted(str(k) for k in document if k not in _STACK_FILE_KEYS)
    if outside:
        raise ConfigError("stack-file", str(path),
                          f"has keys outside config: ({', '.join(outside)})",
                          "indent them under config:, see Pulumi.example.yaml")
    config = document.get("config")
    if not isinstance(config, dict):
        raise ConfigError("stack-file", str(path), "has no config: mapping",
                          "start the file with a config: section, see Pulumi.example.yaml")
    return {str(k): v for k, v in config.items()}


def load_stack_file(path: Path) -> StackConfig:
    """Parse and validate a stack file without Pulumi: what plan, render and the kitchen use."""
    raw = read_stack_file(path)
    cfg = parse_config(namespaced(raw), stack_name_of(path))
    check_aws_region(raw, cfg.region)
    return cfg


def from_pulumi() -> StackConfig:
    """The running Pulumi program's stack config, validated. Imports Pulumi only here."""
    import pulumi

    values: dict[str, object] = {}
    config = pulumi.Config(NAMESPACE)
    for key in (*KEYS, *REMOVED_KEYS):  # a removed key is refused, not silently ignored
        raw = config.get(key)
        if raw is not None:
            values[key] = raw
    cfg = parse_config(values, pulumi.get_stack())
    check_aws_region({"aws:region": pulumi.Config("aws").get("region")}, cfg.region)
    return cfg
