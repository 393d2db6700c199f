"""Errors the kitchen raises: a message that says what went wrong and a ``Try:`` that says
what to do about it, so the CLI can print both without guessing.

``exit_code`` follows the CLI's convention: 1 the thing failed (a host did not converge, a
tool failed), 2 the command could not run (not root, missing tools, bad or taken name).
"""

from __future__ import annotations


class KitchenError(Exception):
    """A kitchen operation failed; ``fix`` is the suggested next step, ``detail`` extra lines."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.detail = detail

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(self.detail)
        if self.fix:
            parts.append(f"Try: {self.fix}")
        return "\n".join(parts)


class PrerequisiteError(KitchenError):
    """The machine cannot run a kitchen: not root, a tool or kernel feature is missing."""

    exit_code = 2


class UsageError(KitchenError):
    """The request itself is wrong: a bad name, a name in use, an unknown host, a stale one."""

    exit_code = 2


class ConvergeError(KitchenError):
    """The host booted but cloud-init or systemd reported failure.

    ``log_excerpt`` is the tail of /var/log/cloud-init-output.log, ``failed_units`` the output
    of ``systemctl --failed``; the host is kept (state ``failed``) so it can be inspected.
    """

    def __init__(
        self,
        message: str,
        fix: str | None,
        *,
        cloud_init_status: str,
        status_report: str,
        log_excerpt: str,
        failed_units: list[str],
    ) -> None:
        lines = [f"cloud-init status: {cloud_init_status}"]
        # `cloud-init status --wait` prints a dot per poll before the report; drop those.
        report = [line for line in status_report.splitlines()
                  if line.strip(". ") and not line.startswith("status:")]
        lines += [f"  {line}" for line in report]
        if failed_units:
            lines.append("failed units: " + ", ".join(failed_units))
        lines.append("--- /var/log/cloud-init-output.log (tail) ---")
        lines.append(log_excerpt.rstrip() or "(empty)")
        lines.append("---")
        super().__init__(message, fix, "\n".join(lines))
        self.cloud_init_status = cloud_init_status
        self.log_excerpt = log_excerpt
        self.failed_units = failed_units
