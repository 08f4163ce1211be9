"""Shared fixtures: a real workspace on disk, the real `csops` executable, and a fixed clock.

Tests drive csops as users do — as a subprocess — or through click's CliRunner for speed; both
use a real SQLite file in a temporary workspace made by `csops init`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "scripts" / "samples"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nightly", action="store_true", help="run the acceptance tests with ×10 counts"
    )


def pytest_configure(config: pytest.Config) -> None:
    # AT-22: 300 Hypothesis examples per property in CI, 20,000 nightly. Test modules read this
    # when they are collected (after this hook), for their module-level settings.
    if config.getoption("--nightly", default=False):
        os.environ.setdefault("CSOPS_FUZZ_EXAMPLES", "20000")


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> int:
    """Multiplier for acceptance-test counts: 1 normally, 10 with --nightly."""
    return 10 if request.config.getoption("--nightly") else 1


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, step: float = 0.02):
    """Poll ``predicate`` until it returns something truthy and return that value; at the
    timeout, its last (falsy) value: callers assert on what they get."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


@dataclass
class Proc:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@dataclass
class Workspace:
    """A workspace made by `csops init`, with helpers to run csops in it and read its database."""

    root: Path
    env: dict[str, str]

    @property
    def config(self) -> Path:
        return self.root / "config" / "csops.toml"

    @property
    def db_path(self) -> Path:
        return self.root / "data" / "csops.db"

    def csops_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "csops", "--config", str(self.config), *args]

    def run(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Proc:
        """Run `csops` as a subprocess in this workspace, as cron or a user would."""
        full_env = {**self.env, **(env or {})}
        data = input.encode() if isinstance(input, str) else input
        cp = subprocess.run(
            self.csops_cmd(*args),
            input=data,
            capture_output=True,
            env=full_env,
            cwd=self.root,
            timeout=timeout,
        )
        return Proc(cp.returncode, cp.stdout.decode(), cp.stderr.decode())

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.csops_cmd(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.env, **(env or {})},
            cwd=self.root,
        )

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        conn = self.db()
        try:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def set_config(self, text: str) -> None:
        """Append TOML to the workspace config (sections later in the file are new sections)."""
        with self.config.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")

    def replace_config(self, old: str, new: str) -> None:
        body = self.config.read_text(encoding="utf-8")
        assert old in body, f"{old!r} not in config"
        self.config.write_text(body.replace(old, new, 1), encoding="utf-8")


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSOPS_")}
    env.update(
        {
            "CSOPS_TESTING": "1",
            "NO_COLOR": "1",
            "HOME": str(tmp_path),
            "PYTHONPATH": str(REPO),
        }
    )
    return env


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "shop"
    env = base_env(tmp_path)
    cp = subprocess.run(
        [sys.executable, "-m", "csops", "init", str(root)],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert cp.returncode == 0, cp.stderr.decode()
    yield Workspace(root=root, env=env)


@pytest.fixture
def sample() -> Path:
    """The folder of sample files in the platforms' real formats."""
    return SAMPLES


def copy_sample(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copy(SAMPLES / name, target)
    return target
