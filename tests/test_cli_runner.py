"""The same contract through click's CliRunner (in-process) and the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from csops.cli import cli
from tests.conftest import Workspace


def test_runner_help_lists_the_tree_and_exits_0() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "followups" in result.stdout and "kpi" in result.stdout


def test_runner_user_error_is_one_line_on_stderr_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "csops.toml"
    bad.write_text("[shop]\ntimezone = 5\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "runs"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "shop.timezone" in result.stderr and "a string" in result.stderr


def test_runner_optout_prints_json_on_stdout_only(workspace: Workspace) -> None:
    result = CliRunner().invoke(
        cli,
        ["--config", str(workspace.config), "customers", "optout", "x@example.com", "--json"],
        env={"CSOPS_SIGNING_KEYS": ""},
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.lstrip().startswith("[")
    assert '"address": "x@example.com"' in result.stdout


def test_installed_console_script_exits_75_when_another_process_holds_the_lock(
    workspace: Workspace,
) -> None:
    script = Path(sys.executable).parent / "csops"
    assert script.exists(), "the csops console script is installed in the test environment"
    lock_file = workspace.root / "data" / ".csops-locks" / "customers.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from filelock import FileLock; "
            f"l = FileLock({str(lock_file)!r}); l.acquire(); print('held', flush=True); "
            "time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        busy = subprocess.run(
            [str(script), "--config", str(workspace.config), "customers", "optout", "a@b.example"],
            capture_output=True,
            text=True,
            env=workspace.env,
            timeout=60,
        )
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 75
    assert busy.stderr.count("\n") == 1 and "Traceback" not in busy.stderr
    ok = subprocess.run(
        [str(script), "--config", str(workspace.config), "customers", "optout", "a@b.example"],
        capture_output=True,
        text=True,
        env=workspace.env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
