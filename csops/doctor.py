"""``csops doctor``: check config, database, templates and channels without sending anything.

Each job's settings module may define ``doctor_checks(config) -> list[Check]``; doctor runs
them all, so a new job adds its checks without touching this file.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from csops import db as dbmod
from csops.config import SECTIONS, Config
from csops.errors import CsopsError
from csops.migrations import latest_version


@dataclass
class Check:
    area: str
    name: str
    ok: bool
    detail: str
    level: str = "error"  # "error" fails doctor; "warning" only reports

    def as_row(self) -> dict[str, str]:
        status = "ok" if self.ok else ("WARN" if self.level == "warning" else "FAIL")
        return {"area": self.area, "check": self.name, "status": status, "detail": self.detail}


def check_database(config: Config) -> list[Check]:
    path = config.db_path
    checks = []
    try:
        conn = dbmod.connect(path, busy_timeout_ms=config.database.busy_timeout_ms)
    except CsopsError as exc:
        return [Check("database", "open", False, str(exc))]
    try:
        version = dbmod.schema_version(conn)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        quick = conn.execute("PRAGMA quick_check").fetchone()[0]
        checks.append(Check("database", "open", True, str(path)))
        checks.append(
            Check(
                "database",
                "schema",
                version == latest_version(),
                f"user_version {version} (latest {latest_version()})",
            )
        )
        checks.append(Check("database", "journal", mode == "wal", f"journal_mode={mode}"))
        checks.append(Check("database", "integrity", quick == "ok", f"quick_check={quick}"))
    finally:
        conn.close()
    lock_dir = config.lock_dir
    writable = os.access(lock_dir if lock_dir.exists() else lock_dir.parent, os.W_OK)
    checks.append(Check("locks", "lock_dir", writable, str(lock_dir)))
    return checks


def run_doctor(config: Config) -> list[Check]:
    checks = [Check("config", "file", True, str(config.path))]
    checks.append(
        Check("config", "timezone", True, f"{config.shop.timezone}, locale {config.shop.locale}")
    )
    checks += check_database(config)
    seen: set[str] = set()
    for spec in SECTIONS.values():
        module_name = spec.lstrip("[]{}").partition(":")[0]
        if module_name in seen or module_name == "csops.config":
            continue
        seen.add(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        hook = getattr(module, "doctor_checks", None)
        if hook is not None:
            try:
                checks += hook(config)
            except CsopsError as exc:
                checks.append(Check(module_name.split(".")[1], "settings", False, str(exc)))
    return checks
