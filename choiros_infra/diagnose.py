"""``choiros-infra diagnose``: the evidence of one host in one Markdown file, for an incident.

Every section is a list of read-only commands, all run as root through ``sudo -n`` in one
SSH round trip by verify's host program (:mod:`choiros_infra.host_batch`, over the
ssh_config of ``verify``: :class:`HostAccess`, :func:`write_ssh_config`,
:func:`check_reachable`). Nothing on the host changes: the commands only read (systemctl and
journalctl queries, tail, df, ss, fail2ban-client status, curl of /health). The host program
masks the host's secret values in every output before it leaves the host (logs are where an
application prints its keys), and the report masks assignments to the stack's secret names.

:func:`render_markdown` assembles the file from :class:`Section` results; it is plain text
work, tested without a host.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from choiros_infra.host_access import HostAccess, ssh_options
from choiros_infra.host_batch import (
    HOST_WORKERS,
    HostSecrets,
    ReadAheadError,
    decode_answers,
    program_argv,
)
from choiros_infra.markdown_doc import github_anchor
from provisioning.spec import (
    FRESHNESS_UNIT,
    HEALTHCHECK_UNIT,
    REQUIRED_UNITS,
    RESTORE_UNIT,
    SECRETS_UNIT,
)

COMMAND_TIMEOUT = 30.0
LOG_LINES = 50
APP = "/opt/choiros"
CURL = ("curl", "-sS", "-m", "5", "-w", "\\nHTTP %{http_code} in %{time_total}s\\n")


@dataclass(frozen=True)
class Probe:
    """One read-only command: what it shows, and its argv (run as root)."""

    title: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class SectionSpec:
    title: str
    why: str
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class Result:
    probe: Probe
    exit_code: int
    output: str


@dataclass(frozen=True)
class Section:
    spec: SectionSpec
    results: tuple[Result, ...]


def _journal(unit: str, lines: int = LOG_LINES) -> Probe:
    return Probe(f"journal of {unit} (last {lines} lines)",
                 ("journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o",
                  "short-iso"))


# The units the host must run (the host contract's), then the one-shot ones that bring it up
# and watch it.
SERVICES = (*REQUIRED_UNITS, SECRETS_UNIT, RESTORE_UNIT, HEALTHCHECK_UNIT, FRESHNESS_UNIT)

SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("Health", "/health directly at the backend and through Caddy (https with TLS "
                "on, http with tls_mode off), and the health check's last JSON line.", (
        Probe("backend /health", (*CURL, "http://127.0.0.1:8080/health")),
        Probe("through Caddy, https", (*CURL, "-k", "https://127.0.0.1/health")),
        Probe("through Caddy, http", (*CURL, "http://127.0.0.1/health")),
        Probe("the health check's last runs", ("journalctl",
              "_SYSTEMD_UNIT=choiros-healthcheck.service", "-o", "cat", "-n", "3",
              "--no-pager")),
    )),
    SectionSpec("Units", "What runs, what failed, the timers.", (
        Probe("services", ("systemctl", "list-units", "--all", "--no-pager", *SERVICES)),
        Probe("failed units", ("systemctl", "--failed", "--no-pager")),
        Probe("timers", ("systemctl", "list-timers", "--all", "--no-pager",
                         "choiros-*")),
    )),
    SectionSpec("Logs", f"The last {LOG_LINES} lines of each service's log: the backend "
                "logs to files, the others to the journal.", (
        Probe(f"{APP}/logs/backend-error.log",
              ("tail", "-n", str(LOG_LINES), f"{APP}/logs/backend-error.log")),
        Probe(f"{APP}/logs/backend.log",
              ("tail", "-n", str(LOG_LINES), f"{APP}/logs/backend.log")),
        *(_journal(unit) for unit in SERVICES),
    )),
    SectionSpec("Disk and memory", "Against the disk-full and memory-high alarms.", (
        Probe("disk", ("df", "-h", "/", f"{APP}/data")),
        Probe("inodes", ("df", "-i", "/", f"{APP}/data")),
        Probe("largest under /opt/choiros", ("du", "-sh", f"{APP}/data", f"{APP}/logs",
                                             f"{APP}/releases")),
        Probe("memory", ("free", "-m")),
        Probe("load", ("uptime",)),
        Probe("OOM kills (kernel log)", ("journalctl", "-k", "-g", "oom", "-n", "20",
                                         "--no-pager")),
    )),
    SectionSpec("Listening ports", "Only 22, 80, 443 from outside; 8080 on 127.0.0.1.", (
        Probe("TCP listeners", ("ss", "-tlnp")),
        Probe("firewall", ("ufw", "status", "verbose")),
    )),
    SectionSpec("Deploys and rollbacks", "The current and previous release and the last "
                "entries of the deploy history.", (
        Probe("current and previous", ("readlink", f"{APP}/current", f"{APP}/previous")),
        Probe("deploy history (last 20)", ("tail", "-n", "20",
                                           f"{APP}/deploy-history.jsonl")),
    )),
    SectionSpec("fail2ban bans", "Addresses banned now by the sshd jail.", (
        Probe("sshd jail", ("fail2ban-client", "status", "sshd")),
    )),
    SectionSpec("Backup freshness", "How far the S3 replica is behind (published every "
                "minute) and the database files.", (
        Probe("last published ages", ("journalctl",
              "_SYSTEMD_UNIT=choiros-backup-freshness.service", "-o", "short-iso", "-n", "5",
              "--no-pager")),
        Probe("database files", ("ls", "-la", f"{APP}/data")),
    )),
)

Runner = Callable[[Sequence[Probe]], list[Result]]


def ssh_runner(access: HostAccess, timeout: float = COMMAND_TIMEOUT,
               secrets: HostSecrets | None = None) -> Runner:
    """Run the probes as root in one round trip over the (shared) SSH connection, through
    the host program (each probe's stderr merged into its output, at most ``timeout`` each).
    A round trip that fails gives every probe the reason instead of an output."""

    def run(probes: Sequence[Probe]) -> list[Result]:
        commands = [shlex.join(p.argv) + " 2>&1" for p in probes]
        remote = shlex.join(["sudo", "-n", "--", *program_argv(commands, secrets or HostSecrets(),
                                                                timeout)])
        waited = timeout * (1 + len(probes) // HOST_WORKERS) + 30
        try:
            done = subprocess.run([*ssh_options(access), access.destination, remote],
                                  capture_output=True, text=True, timeout=waited, check=False)
            if done.returncode != 0:
                raise ReadAheadError(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
            answers = decode_answers(done.stdout, len(probes))
        except subprocess.TimeoutExpired:
            return [Result(p, 124, f"(no answer within {waited:g}s)") for p in probes]
        except ReadAheadError as e:
            return [Result(p, 255, f"(the host program did not run: {e})") for p in probes]
        return [Result(p, a.rc, a.stdout + a.stderr) for p, a in zip(probes, answers,
                                                                    strict=True)]

    return run


def collect(run: Runner, sections: Sequence[SectionSpec] = SECTIONS) -> list[Section]:
    """Every section's probes, in one run."""
    results = iter(run([p for spec in sections for p in spec.probes]))
    return [Section(spec, tuple(next(results) for _ in spec.probes)) for spec in sections]


def _fence(text: str) -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render_markdown(sections: Sequence[Section], *, host: str, generated: str) -> str:
    """The report: a heading per section, a fenced block per command with its exit code when
    it failed, a table of contents first."""
    lines = [f"# Diagnose: {host}", "", f"Collected {generated} by `choiros-infra diagnose` "
             "(read-only commands, as root through sudo).", ""]
    lines += [f"- [{s.spec.title}](#{github_anchor(s.spec.title)})" for s in sections]
    lines.append("")
    for section in sections:
        lines += [f"## {section.spec.title}", "", section.spec.why, ""]
        for result in section.results:
            note = "" if result.exit_code == 0 else f" (exit {result.exit_code})"
            output = result.output.rstrip("\n") or "(no output)"
            fence = _fence(output)
            lines += [f"### {result.probe.title}{note}", "",
                      f"`{shlex.join(result.probe.argv)}`", "", fence + "text", output,
                      fence, ""]
    return "\n".join(lines)

