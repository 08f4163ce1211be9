"""Exit codes and the error hierarchy: every user-facing failure is a CsopsError with a stable code.

The exit code belongs to the error class (as in click's exceptions), so the one error boundary in
the CLI needs no table of its own.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes (README, DESIGN.md §4)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    KPI_CRITICAL = 4
    LOCKED = 75
    INTERRUPTED = 130


class CsopsError(Exception):
    """Base of every error csops reports to a user as one line, without a traceback."""

    exit_code: ExitCode = ExitCode.FAILED
    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.expected = expected
        if code:
            self.code = code

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        expected = f" (expected {self.expected})" if self.expected else ""
        return f"{where}{field}{self.message}{expected}"

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "expected": self.expected,
        }


class ConfigError(CsopsError):
    """The configuration file is missing, malformed, or names something that does not exist."""

    exit_code = ExitCode.USAGE
    code = "config_error"


class UsageError(CsopsError):
    """A command was called in a way that cannot work (bad option combination, not built yet)."""

    exit_code = ExitCode.USAGE
    code = "usage_error"


class SecretMissingError(ConfigError):
    """An environment variable named in the config as holding a secret is not set."""

    code = "secret_missing"


class InputError(CsopsError):
    """An input file is refused as a whole (missing, not the named format, undecodable …).

    Exit 2, like any other call that cannot work as given (ACCEPTANCE.md AT-20, AT-22: a file
    refused as a whole exits 2; 1 is left for failures the user did not cause by what they
    passed: a remote refusing credentials, an internal error).
    """

    exit_code = ExitCode.USAGE
    code = "bad_input"


class NotFoundError(CsopsError):
    """A record the user named (order, outbox id, template) does not exist."""

    exit_code = ExitCode.FAILED
    code = "not_found"


class LockBusyError(CsopsError):
    """Another run of the same job holds its lock; cron should simply try again later."""

    exit_code = ExitCode.LOCKED
    code = "lock_busy"


class LockLocationError(CsopsError):
    """The lock directory cannot be created or written."""

    exit_code = ExitCode.USAGE
    code = "lock_unwritable"


class ChannelError(CsopsError):
    """A delivery channel failed in a way that stops the run (bad auth, unreachable)."""

    exit_code = ExitCode.FAILED
    code = "channel_error"


class RemoteAuthError(CsopsError):
    """A platform or channel refused our credentials (401/403, SMTP 535)."""

    exit_code = ExitCode.FAILED
    code = "remote_auth"


class RemoteError(CsopsError):
    """A remote API failed after retries; partial progress is saved."""

    exit_code = ExitCode.FAILED
    code = "remote_error"


class KpiCriticalError(CsopsError):
    """A KPI breached its critical threshold."""

    exit_code = ExitCode.KPI_CRITICAL
    code = "kpi_critical"
