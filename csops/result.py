"""What a job returns: data rows, counts, rejects with their place, and a status.

The core never prints; the CLI renders a Result (table, JSON, CSV) and maps its status to the
exit code. ``partial`` means done, with some records rejected or messages failed (exit 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from csops.errors import ExitCode

Status = Literal["ok", "partial", "failed", "critical"]

_EXIT = {
    "ok": ExitCode.OK,
    "partial": ExitCode.PARTIAL,
    "failed": ExitCode.FAILED,
    "critical": ExitCode.KPI_CRITICAL,
}


@dataclass
class Reject:
    """A record left out, with where it was and what was expected, so it can be fixed and re-fed."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    expected: str | None = None
    raw: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        fld = f"{self.field}: " if self.field else ""
        exp = f" (expected {self.expected})" if self.expected else ""
        return f"{where}{fld}{self.message}{exp}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "expected": self.expected,
            "message": self.message,
        }


@dataclass
class Result:
    """The outcome of one job run."""

    command: str
    rows: Iterable[dict[str, Any]] = field(default_factory=list)
    columns: list[str] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    status: Status | None = None
    dry_run: bool = False

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def reject(self, reject: Reject) -> None:
        self.rejects.append(reject)

    @property
    def final_status(self) -> Status:
        if self.status:
            return self.status
        return "partial" if self.rejects else "ok"

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT[self.final_status]

    def summary(self) -> str:
        """One line for stderr and the ``runs`` table: ``new=3 changed=0 rejected=1``."""
        parts = [f"{k}={v}" for k, v in self.counts.items()]
        if self.rejects and "rejected" not in self.counts:
            parts.append(f"rejected={len(self.rejects)}")
        if self.dry_run:
            parts.append("(dry run: nothing written)")
        return " ".join(parts) or "done"
