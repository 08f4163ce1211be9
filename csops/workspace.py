"""``csops init``: write a workspace (config, templates, folders, database) anywhere.

The defaults ship inside the package (``csops.config_defaults``, ``csops.templates``) and are
read through importlib.resources, so this works from a wheel as well as from the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from csops import db as dbmod
from csops.config import load_config
from csops.errors import UsageError

WORKSPACE_DIRS = ("config", "templates", "data", "outbox", "rejects", "reports", "exports")


@dataclass
class InitReport:
    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    database: Path | None = None


def _copy_tree(src: Traversable, dest: Path, report: InitReport, force: bool) -> None:
    for entry in src.iterdir():
        if entry.name.startswith(("__", ".")) or entry.name.endswith(".pyc"):
            continue
        target = dest / entry.name
        if entry.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            _copy_tree(entry, target, report, force)
        elif target.exists() and not force:
            report.kept.append(target)
        else:
            target.write_bytes(entry.read_bytes())
            report.written.append(target)


def init_workspace(root: Path, *, force: bool = False) -> InitReport:
    """Create ``root`` with config/, templates/ and folders; keep existing files unless forced."""
    root = root.resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    report = InitReport(root=root)
    for name in WORKSPACE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "data", 0o700)
    os.chmod(root / "outbox", 0o700)
    os.chmod(root / "rejects", 0o700)
    _copy_tree(resources.files("csops.config_defaults"), root / "config", report, force)
    _copy_tree(resources.files("csops.templates"), root / "templates", report, force)
    config = load_config(root / "config" / "csops.toml")
    conn = dbmod.connect(config.db_path)
    conn.close()
    report.database = config.db_path
    return report
