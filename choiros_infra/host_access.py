"""Reaching a host over SSH for verify, drift and diagnose: the ``ssh://USER@ADDR[:PORT]``
URL, an ssh_config that multiplexes (ControlMaster, ControlPath, ControlPersist; rendered by
:mod:`provisioning.ssh_client`, as the kitchen's is) so the first command opens the connection
and every later one, from every pytest-xdist worker, reuses it,
the reachability check made before anything else runs, and errors that say which part of the
access is wrong (key, user, address, sudo).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from provisioning.spec import Fail2banPolicy
from provisioning.ssh_client import ssh_config_text

CONNECT_TIMEOUT = 10
KEEPALIVE_SECONDS = 15


class UsageProblem(Exception):
    """The verify cannot run: what is wrong, and what to try."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class HostAccess:
    """How testinfra reaches the host: ``ssh://USER@ADDR[:PORT]`` and an ssh_config or a key."""

    url: str
    ssh_config: Path | None = None
    ssh_key: Path | None = None

    @property
    def user(self) -> str:
        return parse_host_url(self.url)[0]

    @property
    def address(self) -> str:
        return parse_host_url(self.url)[1]

    @property
    def port(self) -> int | None:
        return parse_host_url(self.url)[2]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}"


def parse_host_url(url: str) -> tuple[str, str, int | None]:
    """``ssh://USER@ADDR[:PORT]`` -> (user, address, port); UsageProblem otherwise."""
    fix = "give the host as ssh://USER@ADDR, e.g. ssh://admin@203.0.113.10"
    parts = urlsplit(url)
    if parts.scheme != "ssh" or parts.path not in ("", "/") or parts.query:
        raise UsageProblem(f"--host {url!r} is not an ssh:// URL", fix)
    try:
        port = parts.port
    except ValueError:
        raise UsageProblem(f"--host {url!r} has an invalid port", fix) from None
    if not parts.hostname:
        raise UsageProblem(f"--host {url!r} names no address", fix)
    if not parts.username:
        raise UsageProblem(f"--host {url!r} names no user",
                           "add the login: admin on Debian images, ubuntu on Ubuntu")
    return parts.username, parts.hostname, port


def write_ssh_config(directory: Path, *, ssh_key: Path | None, multiplex: bool = True,
                     known_hosts: Path | None = None, address: str | None = None) -> Path:
    """Write ``directory/ssh_config`` (``directory`` private: it also holds the control
    socket) and return its path. Without ``known_hosts``, a kitchen host's ``address`` is
    checked against that host's own known_hosts file, so a kitchen host key never lands in
    ~/.ssh/known_hosts (the next kitchen host at that address would look like an attack)."""
    if known_hosts is None and address is not None:
        known_hosts = kitchen_known_hosts(address)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "ssh_config"
    path.write_text(ssh_config_text(identity=ssh_key, known_hosts=known_hosts,
                                    control_dir=directory if multiplex else None,
                                    connect_timeout=CONNECT_TIMEOUT,
                                    keepalive_seconds=KEEPALIVE_SECONDS))
    return path


def kitchen_known_hosts(address: str) -> Path | None:
    """The known_hosts file of the kitchen host at ``address``, if one is there."""
    from kitchen import lifecycle
    from kitchen.errors import KitchenError

    try:
        hosts = lifecycle.list_hosts()
    except (KitchenError, OSError):
        return None
    for st in hosts:
        if st.address == address and st.known_hosts and Path(st.known_hosts).is_file():
            return Path(st.known_hosts)
    return None


def ssh_options(access: HostAccess) -> list[str]:
    argv = ["ssh"]
    if access.ssh_config is not None:
        argv += ["-F", str(access.ssh_config)]
    if access.ssh_key is not None:
        argv += ["-i", str(access.ssh_key)]
    if access.port is not None:
        argv += ["-p", str(access.port)]
    return [*argv, "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]


# fail2ban bans an address outside choiros:admin_cidrs after failed logins (ufw then rejects
# it); the admin networks are never banned.
BAN_HINT = ("add your address to choiros:admin_cidrs; to lift a ban now, from an admin "
            "address: sudo fail2ban-client set sshd unbanip <your address>, or wait out the "
            f"bantime ({Fail2banPolicy().bantime // 60} minutes)")


def explain_ssh_failure(access: HostAccess, stderr: str) -> UsageProblem:
    """ssh's complaint as a problem and a fix."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "no message"
    if "Permission denied" in text:
        return UsageProblem(f"SSH refused the login as {access.destination}: {last}",
                            "check --ssh-key (the key of the stack's choiros:ssh_public_key) "
                            "and the user (admin on Debian, ubuntu on Ubuntu)")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification" in text:
        return UsageProblem(f"the host key of {access.address} does not match the known one",
                            f"if the host was replaced (a config change replaces it), forget "
                            f"the old key: ssh-keygen -R {access.address}")
    if "Could not resolve" in text:
        return UsageProblem(f"cannot resolve {access.address}: {last}",
                            "check the address (pulumi stack output public_ip)")
    if "refused" in text:
        return UsageProblem(f"{access.address} refuses SSH connections: {last}",
                            "is the host up? (choiros-infra kitchen status, or the EC2 console) "
                            f"If it is, fail2ban may have banned your address: {BAN_HINT}")
    return UsageProblem(f"cannot reach {access.destination} over SSH: {last}",
                        "check the address, that the host is up, and that your IP is in the "
                        f"stack's choiros:admin_cidrs (or fail2ban may have banned it: "
                        f"{BAN_HINT})")


def check_reachable(access: HostAccess, timeout: float = 30.0) -> None:
    """Log in and prove root through sudo, as every check will; raise UsageProblem otherwise.
    With a multiplexing ssh_config this also opens the connection the run then shares."""
    try:
        result = subprocess.run([*ssh_options(access), access.destination, "sudo", "-n", "true"],
                                capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UsageProblem(f"no answer from {access.address} within {timeout:g}s",
                           "check the address and that your IP is in the stack's "
                           "choiros:admin_cidrs (the security group)") from None
    except FileNotFoundError:
        raise UsageProblem("the ssh client is not installed",
                           "apt-get install openssh-client") from None
    if result.returncode == 255:
        raise explain_ssh_failure(access, result.stderr)
    if result.returncode != 0:
        raise UsageProblem(f"{access.user} logged in but cannot sudo without a password: "
                           f"{result.stderr.strip()}",
                           "verify reads the host as root through sudo: use the image's "
                           "admin user (admin on Debian, ubuntu on Ubuntu)")


def close_shared_connection(access: HostAccess) -> None:
    """Stop the ControlMaster a run started (for a generated ssh_config)."""
    subprocess.run([*ssh_options(access), "-O", "exit", access.destination],
                   capture_output=True, timeout=10, check=False)


def run_on_host(access: HostAccess, argv: list[str], *, timeout: float = 600.0,
                echo: Callable[[str], None] = print) -> tuple[int, str]:
    """Run ``argv`` on the host (quoted for the remote shell, never interpolated), each line of
    its output passed to ``echo`` as it comes; (exit status, the output's last 4 KiB). A run
    longer than ``timeout`` is killed. ssh's own failure (255) is raised as a UsageProblem
    that says what to check."""
    command = [*ssh_options(access), access.destination, shlex.join(argv)]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
    except FileNotFoundError:
        raise UsageProblem("the ssh client is not installed",
                           "apt-get install openssh-client") from None
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    tail = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            echo(line.rstrip("\n"))
            tail = (tail + line)[-4096:]
        code = proc.wait()
    finally:
        watchdog.cancel()
    if code == 255:
        raise explain_ssh_failure(access, tail)
    if code < 0:
        raise UsageProblem(f"{shlex.join(argv)} on {access.address} did not finish within "
                           f"{timeout:g}s", "look at the host: choiros-infra diagnose")
    return code, tail


def check_files(*given: tuple[Path | None, str]) -> None:
    """Each ``(path, flag)`` given names an existing file; UsageProblem for the first that
    does not, before anything is done."""
    for path, flag in given:
        if path is not None and not path.is_file():
            raise UsageProblem(f"{flag} {path} is not a readable file",
                               f"give {flag} the path of an existing file")


def check_output_dirs(*wanted: tuple[Path | None, str]) -> None:
    """Each ``(path, flag)`` an output is to be written to is in an existing directory;
    UsageProblem for the first that is not, before anything is done."""
    for path, flag in wanted:
        if path is not None and not path.parent.is_dir():
            raise UsageProblem(f"{flag} {path}: directory {path.parent} does not exist",
                               f"create it, or give {flag} a path in an existing directory")


def check_access_options(*, ssh_key: Path | None = None, ssh_config: Path | None = None,
                         known_hosts: Path | None = None) -> None:
    """How the command line says to reach the host holds together: ``--ssh-config`` (used as
    is) excludes ``--ssh-key`` and ``--known-hosts``, and every file given exists. UsageProblem
    otherwise, before anything is done; the same words for every command."""
    if ssh_key is not None and ssh_config is not None:
        raise UsageProblem("--ssh-key and --ssh-config exclude each other",
                           "give the key, or an ssh_config that names it")
    if known_hosts is not None and ssh_config is not None:
        raise UsageProblem("--known-hosts and --ssh-config exclude each other",
                           "name the known_hosts file in the ssh_config (UserKnownHostsFile)")
    check_files((ssh_key, "--ssh-key"), (ssh_config, "--ssh-config"),
                (known_hosts, "--known-hosts"))


def access_from_options(url: str, *, ssh_key: Path | None = None,
                        ssh_config: Path | None = None,
                        known_hosts: Path | None = None) -> HostAccess:
    """The host access the command line gives: the host's URL (``--host``, or the stack
    outputs') with ``--ssh-key`` or an ``--ssh-config`` used as is. ``--known-hosts`` is
    checked here and goes to :func:`open_access`."""
    check_access_options(ssh_key=ssh_key, ssh_config=ssh_config, known_hosts=known_hosts)
    parse_host_url(url)
    return HostAccess(url=url, ssh_key=ssh_key and ssh_key.resolve(),
                      ssh_config=ssh_config and ssh_config.resolve())


@contextlib.contextmanager
def open_access(access: HostAccess, known_hosts: Path | None = None) -> Iterator[HostAccess]:
    """``access`` ready for many commands over one connection: without an ssh_config of its
    own, a private multiplexing one for the session (closed and removed afterwards)."""
    if access.ssh_config is not None:
        yield access
        return
    workdir = Path(tempfile.mkdtemp(prefix="chs-"))  # short: it holds the control socket
    shared = HostAccess(url=access.url, ssh_config=write_ssh_config(
        workdir, ssh_key=access.ssh_key, known_hosts=known_hosts, address=access.address))
    try:
        yield shared
    finally:
        close_shared_connection(shared)
        shutil.rmtree(workdir, ignore_errors=True)
