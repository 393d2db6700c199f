"""The stack configuration: read once, validated in one place, frozen.

Every key lives in the ``choiros`` namespace of a Pulumi stack file and has one row in
``SETTINGS`` (its kind, description, fix, reader, bounds); the documentation and Pulumi.yaml are
generated from that table. Validation happens before any resource is declared, so a bad value
never reaches AWS; every refusal is a ``ConfigError`` that names the key, the value, what is
wrong and how to fix it.

This module imports nothing from Pulumi at import time: ``plan``, ``render`` and the kitchen
read stack files through :func:`load_stack_file` without a Pulumi engine.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

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
# S3 objects take at most 10 tags; every resource gets project, stack, managed-by and Name.
MAX_USER_TAGS = 6
_WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# A key's reader: (key, raw value, the fix a refusal suggests) -> the StackConfig field's value.
Reader = Callable[[str, object, str], Any]


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


# --------------------------------------------------------------------------- key readers


def aws_regions() -> frozenset[str]:
    """Every region of every AWS partition, from the endpoint data botocore ships."""
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return frozenset(r for p in endpoints["partitions"] for r in p["regions"])


def _region(key: str, raw: object, fix: str) -> str:
    region = _text(key, raw, fix)
    if region not in aws_regions():
        raise ConfigError(key, raw, "is not an AWS region", fix)
    return region


def _matching(pattern: re.Pattern[str], problem: str) -> Reader:
    """A reader of a string the whole of which must match ``pattern``."""

    def read(key: str, raw: object, fix: str) -> str:
        value = _text(key, raw, fix)
        if not pattern.fullmatch(value):
            raise ConfigError(key, raw, problem, fix)
        return value

    return read


def _instance_type(key: str, raw: object, fix: str) -> str:
    value = _text(key, raw, fix)
    if not _INSTANCE_TYPE.fullmatch(value):
        raise ConfigError(key, raw, "is not an EC2 instance type name", fix)
    if _ARM_FAMILY.match(value):
        raise ConfigError(key, raw, "is an Arm (Graviton) type; the images and "
                          "release binaries are amd64", "use an x86 type such as c5.large")
    return value


def _os(key: str, raw: object, fix: str) -> OsName:
    if raw == "ubuntu-22.04":
        raise ConfigError(key, raw, "is not supported: the host tools need Python 3.11 "
                          "(Ubuntu 22.04 has 3.10) and the kitchen cannot boot Ubuntu to prove it",
                          "use debian-12 (the default), or remove choiros:os")
    if raw != "debian-12":
        raise ConfigError(key, raw, "is not a supported operating system", fix)
    return "debian-12"


def _admin_cidrs(key: str, raw: object, fix: str) -> tuple[str, ...]:
    """The networks, normalised; whether the whole internet may be one of them is
    :func:`_check_world_ssh`'s question (it depends on allow_world_ssh)."""
    cidrs = _string_list(key, raw, fix)
    if not cidrs:
        raise ConfigError(key, raw, "must name at least one network", fix)
    normal: list[str] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise ConfigError(key, cidr, f"is not a valid CIDR ({exc})",
                              "write an address with its prefix length: 203.0.113.7/32") from None
        normal.append(str(network))
    return tuple(normal)


def _ssh_public_key(key: str, raw: object, fix: str) -> str:
    value = _text(key, raw, fix)
    parts = value.split()
    if parts and parts[0].startswith(_SSH_KEY_TYPES_REFUSED):
        raise ConfigError(key, raw, f"is a {parts[0]} key, which EC2 key pairs "
                          "refuse (they take ed25519 and RSA of 2048 bits or more)",
                          "use an ed25519 key: ssh-keygen -t ed25519, then paste the .pub line")
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES or "\n" in value:
        raise ConfigError(key, raw, "is not an OpenSSH public key", fix)
    import base64
    import binascii
    import struct

    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ConfigError(key, raw, "has a corrupt base64 key body", fix) from None
    if embedded != parts[0]:
        raise ConfigError(key, raw, f"says {parts[0]} but its key body is {embedded!r}", fix)
    if embedded == "ssh-rsa":
        bits = _rsa_bits(blob[4 + length:])
        if bits < MIN_RSA_BITS:
            raise ConfigError(key, raw, f"is a {bits}-bit RSA key; EC2 key pairs "
                              f"need at least {MIN_RSA_BITS} bits",
                              "use an ed25519 key: ssh-keygen -t ed25519")
    return value


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


def _domain(key: str, raw: object, fix: str) -> str:
    name = _text(key, raw, fix).lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_DNS_LABEL.match(lb) for lb in labels):
        raise ConfigError(key, raw, "is not a valid DNS name", fix)
    return name


def _email(key: str, raw: object, fix: str) -> str:
    value = _text(key, raw, fix)
    if not _EMAIL.fullmatch(value):
        raise ConfigError(key, raw, "is not a valid email address", fix)
    return value


def _secrets(key: str, raw: object, fix: str) -> tuple[str, ...]:
    names = _string_list(key, raw, fix)
    for name in names:
        last = name.rstrip("/").rsplit("/", 1)[-1]
        if not _SSM_NAME.fullmatch(name) or name.startswith("aws") or name.startswith("ssm"):
            raise ConfigError(key, name, "is not a valid SSM parameter name", fix)
        if not _ENV_NAME.fullmatch(last):
            raise ConfigError(key, name,
                              f"ends in {last!r}, which cannot be an environment variable name",
                              "end the parameter name with the variable it fills, e.g. .../API_KEY")
        if "=" in name or any(c.isspace() for c in name):
            raise ConfigError(key, name, "looks like a value, not a parameter name", fix)
    if len(set(names)) != len(names):
        raise ConfigError(key, raw, "names a parameter twice", "list each parameter once")
    return names


def _tags(key: str, raw: object, fix: str) -> tuple[tuple[str, str], ...]:
    value = _structured(key, raw)
    if not isinstance(value, dict):
        raise ConfigError(key, raw, "must be a mapping of tag names to values", fix)
    pairs: list[tuple[str, str]] = []
    for name, val in sorted(value.items()):
        if not isinstance(name, str) or not _TAG_KEY.match(name) or name.startswith("aws:"):
            raise ConfigError(key, name, "is not a valid tag name", fix)
        if name in ("project", "stack", "managed-by"):
            raise ConfigError(key, name, "is set by this program itself", "remove it from tags")
        if not isinstance(val, str | int) or len(str(val)) > 256:
            raise ConfigError(key, {name: val}, "tag values must be strings of at most 256", fix)
        if not _TAG_VALUE.fullmatch(str(val)):
            raise ConfigError(key, {name: val}, "has a character AWS refuses in tag values",
                              "use only letters, digits, spaces and _ . : / = + - @")
        pairs.append((name, str(val)))
    if len(pairs) > MAX_USER_TAGS:
        raise ConfigError(key, raw, f"has {len(pairs)} tags; at most {MAX_USER_TAGS} fit",
                          "S3 objects (the host's artifacts) take at most 10 tags, and this "
                          "program adds project, stack, managed-by and Name: drop some")
    return tuple(pairs)


def _tls_mode(key: str, raw: object, fix: str) -> TlsMode:
    """One of the modes; that acme needs a domain is :func:`parse_config`'s question."""
    if raw not in get_args(TlsMode):
        raise ConfigError(key, raw, "must be acme, internal or off", fix)
    return cast(TlsMode, raw)


# --------------------------------------------------------------------------- the table

Kind = Literal["string", "integer", "boolean", "array", "mapping"]


@dataclass(frozen=True)
class Setting:
    """One ``choiros:`` key: what its value is, how it is read, what a refusal suggests and what
    it means.

    ``read`` is the reader of a string, list or mapping; integers are read against ``bounds``
    and booleans as true/false, by their kind. The default is StackConfig's field default
    (``default_note`` says it in words when it follows from other keys). The README's and the
    reference runbook's configuration table and Pulumi.yaml's config section are generated from
    this table (infra/config_reference.py; a unit test fails when they drift).
    """

    kind: Kind
    description: str
    fix: str = ""
    read: Reader | None = None
    bounds: tuple[int, int] | None = None
    required: bool = False
    default_note: str | None = None

    @property
    def summary(self) -> str:
        """The description, with the range an integer takes."""
        if self.bounds is None:
            return self.description
        low, high = self.bounds
        return f"{self.description} Range: {low}..{high}."

    def value(self, key: str, raw: object) -> Any:
        """The StackConfig field's value of a raw value that is set, or ConfigError."""
        if self.kind == "integer":
            assert self.bounds is not None, key
            return _integer(key, raw, *self.bounds, self.fix)
        if self.kind == "boolean":
            return _boolean(key, raw)
        assert self.read is not None, key
        return self.read(key, raw, self.fix)


SETTINGS: dict[str, Setting] = {
    "region": Setting(
        "string", "AWS region the host and its buckets live in, e.g. eu-west-1.",
        "set choiros:region to an AWS region such as eu-west-1", _region, required=True),
    "instance_type": Setting(
        "string", "EC2 instance type; the default is the runbook's size.",
        "use an EC2 instance type name such as c5.large or t3.medium", _instance_type),
    "os": Setting(
        "string", "Operating system: debian-12 (the only one supported: what the kitchen tests).",
        "use debian-12 (the default, what the kitchen tests)", _os),
    "ami": Setting(
        "string", "AMI id the host boots, pinned; unset, the newest official Debian 12 image "
        "(plan prints it). A new value replaces the host.",
        "pin an image id such as ami-0123456789abcdef0 (choiros-infra plan prints the newest "
        "Debian 12 image when this key is unset)", _matching(_AMI_ID, "is not an AMI id")),
    "subnet_id": Setting(
        "string", "Subnet the host lives in (its VPC follows); required where the account has "
        "no default VPC. A new value replaces the host.",
        "use the id of a public subnet of your VPC, e.g. subnet-0123456789abcdef0",
        _matching(_SUBNET_ID, "is not a subnet id")),
    "root_volume_gb": Setting(
        "integer", "Root volume size in GiB, gp3, encrypted; the default is the runbook's size.",
        "use at least 20 (GiB), the runbook's size", bounds=(20, 16384)),
    "admin_cidrs": Setting(
        "array", "Networks allowed to reach SSH (22/tcp), as a list of CIDRs. Required.",
        "list the networks operators SSH from, e.g. [203.0.113.7/32]", _admin_cidrs,
        required=True),
    "allow_world_ssh": Setting(
        "boolean", "Set true to allow 0.0.0.0/0 or ::/0 in admin_cidrs."),
    "ssh_public_key": Setting(
        "string", "OpenSSH public key for the EC2 key pair (user admin). Required.",
        "paste one line of ~/.ssh/id_ed25519.pub (type, base64 key, optional comment)",
        _ssh_public_key, required=True),
    "domain": Setting(
        "string", "DNS name of the site; enables automatic HTTPS and HSTS. Optional.",
        "use a DNS name such as choir.example.com, without scheme or path", _domain),
    "acme_email": Setting(
        "string", "Contact address for Let's Encrypt; required when domain is set.",
        "set choiros:acme_email to an address such as ops@example.com", _email),
    "tls_mode": Setting(
        "string", "Caddy TLS: acme (a Let's Encrypt certificate), internal (self-signed) or "
        "off.", "leave it unset: acme when a domain is set, off otherwise", _tls_mode,
        default_note="`acme` with a domain, else `off`"),
    "alert_email": Setting(
        "string", "Address subscribed to the alarm topic. Optional.",
        "set choiros:alert_email to an address such as ops@example.com", _email),
    "backup_retention_days": Setting(
        "integer", "Days old backup versions are kept.", "use a number of days such as 30",
        bounds=(1, 3650)),
    "backup_sync_interval_seconds": Setting(
        "integer", "Seconds between database replication uploads to S3, the most data a lost "
        "host can lose; a busy host makes about 2.8M PUTs a month at 1.",
        "use a few seconds such as 1 (each second costs S3 PUTs, see the config reference)",
        bounds=(1, 300)),
    "secrets": Setting(
        "array", "SSM parameter names the app needs (names only); fetched at boot into "
        "backend.env.", "list SSM parameter names such as /choiros/prod/OPENAI_API_KEY (names "
        "only, never values)", _secrets),
    "secrets_kms_key": Setting(
        "string", "ARN of the customer-managed KMS key the secrets are encrypted with; unset for "
        "the AWS managed key aws/ssm (no kms:Decrypt in the role then).",
        "use the key's ARN, arn:aws:kms:REGION:ACCOUNT:key/ID, or leave it unset for "
        "parameters encrypted with the AWS managed key aws/ssm",
        _matching(_KMS_KEY_ARN, "is not a KMS key ARN")),
    "tags": Setting(
        "mapping", "Extra tags for every resource, as a mapping.",
        "write tags as a mapping of short strings, e.g. {owner: ops}", _tags),
    "termination_protection": Setting(
        "boolean", "Protect the instance from API termination."),
    "keep_releases": Setting(
        "integer", "Releases kept under /opt/choiros/releases.",
        "keep at least 2 (current and previous)", bounds=(2, 100)),
    "alarm_disk_percent": Setting(
        "integer", "Alarm when /, the data or the log filesystem is fuller than this for 5 "
        "minutes, in percent.", "use a percentage such as 80", bounds=(50, 99)),
    "alarm_memory_percent": Setting(
        "integer", "Alarm when memory use is above this for 5 minutes, in percent.",
        "use a percentage such as 90", bounds=(50, 99)),
    "alarm_unhealthy_minutes": Setting(
        "integer", "Alarm when the health check fails this many of the last N+2 minutes, or "
        "stops reporting.", "use a few minutes such as 3", bounds=(1, 30)),
}
# Keys whose value is a list: the Pulumi CLI sets those element by element with --path.
LIST_KEYS = frozenset(key for key, setting in SETTINGS.items() if setting.kind == "array")


# Keys that existed once, with the way off them.
REMOVED_KEYS: dict[str, str] = {
    "app_version": "remove it: the release a host runs is the stack's wanted release in the "
    "artifacts bucket, set by `choiros-infra deploy VERSION --stack STACK` (it never replaces "
    "the host); run that once with the version the host runs now",
}


# --------------------------------------------------------------------------- the parser


def parse_config(values: Mapping[str, object], stack: str) -> StackConfig:
    """Validate raw values (keys without the namespace) into a StackConfig, or raise ConfigError.

    Every key is read by its row of SETTINGS, in the table's order; then the rules that join
    two keys: acme_email with a domain, admin_cidrs with allow_world_ssh, tls_mode's default
    and acme with a domain."""
    if removed := sorted(set(values) & set(REMOVED_KEYS)):
        key = removed[0]
        raise ConfigError(key, values[key], "is no longer a stack setting", REMOVED_KEYS[key])
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ConfigError(unknown[0], values[unknown[0]], "is not a known key",
                          f"remove it, or use one of: {', '.join(sorted(SETTINGS))}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", stack):
        raise ConfigError("stack", stack, "stack names must be short, lowercase, digits and -",
                          "rename the stack, e.g. production")
    parsed: dict[str, Any] = {}
    for key, setting in SETTINGS.items():
        raw = values.get(key)
        if raw not in (None, ""):
            parsed[key] = setting.value(key, raw)
        elif setting.required:
            raise ConfigError(key, None, "is required", set_hint(key))
    domain = parsed.get("domain")
    if domain is not None and "acme_email" not in parsed:
        raise ConfigError("acme_email", None, "is required when choiros:domain is set",
                          "set choiros:acme_email to the address Let's Encrypt may write to")
    if not parsed.get("allow_world_ssh"):
        _check_world_ssh(parsed["admin_cidrs"])
    if parsed.get("tls_mode") == "acme" and domain is None:
        raise ConfigError("tls_mode", "acme", "needs choiros:domain for a certificate",
                          "set choiros:domain, or use tls_mode internal or off")
    parsed.setdefault("tls_mode", "acme" if domain else "off")
    return StackConfig(stack=stack, **parsed)


def _check_world_ssh(cidrs: tuple[str, ...]) -> None:
    for cidr in cidrs:
        if ipaddress.ip_network(cidr) in _WORLD:
            raise ConfigError("admin_cidrs", cidr, "opens SSH to the whole internet",
                              "list your own networks, or set choiros:allow_world_ssh: true "
                              "if you really mean it")


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
    for key in (*SETTINGS, *REMOVED_KEYS):  # a removed key is refused, not silently ignored
        raw = config.get(key)
        if raw is not None:
            values[key] = raw
    cfg = parse_config(values, pulumi.get_stack())
    check_aws_region({"aws:region": pulumi.Config("aws").get("region")}, cfg.region)
    return cfg
