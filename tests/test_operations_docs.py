"""docs/operations.md is executable: every `sh` example runs for real, and the documented JSON
keys and log fields are what the commands produce."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csops.cli import COMMANDS
from tests.schedule_helpers import no_leftover_processes, track  # noqa: F401

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
SAMPLES = Path(__file__).resolve().parent.parent / "scripts" / "samples"
VALUE_OPTIONS = {"--config", "--db", "--log-format"}


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)


def csops_groups(block: str) -> set[str]:
    """The csops command groups a shell example uses (`csops --log-format json runs` → runs)."""
    groups = set()
    for line in block.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            if word != "csops":
                continue
            j = i + 1
            while j < len(words) and words[j].startswith("-"):
                j += 2 if words[j] in VALUE_OPTIONS else 1
            if j < len(words):
                groups.add(words[j])
    return groups


def not_built(group: str) -> bool:
    if group not in COMMANDS:
        return True
    module = COMMANDS[group][0].partition(":")[0]
    return importlib.util.find_spec(module) is None


@pytest.fixture
def shell_env(workspace, tmp_path):
    """A shell as a user has it: `csops` on PATH, CSOPS_CONFIG set, cwd = the workspace."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "csops"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m csops "$@"\n')
    shim.chmod(0o755)
    shutil.copy(SAMPLES / "shopify_orders_export.csv", workspace.root / "export.csv")
    env = {
        **workspace.env,
        "PATH": f"{bin_dir}:{workspace.env.get('PATH', '/usr/bin:/bin')}",
        "CSOPS_CONFIG": str(workspace.config),
        "CSOPS_NOW": "2024-04-20T02:00:00Z",
        "CSOPS_SIGNING_KEYS": "docs-test-signing-key",
    }
    return env


BLOCKS = sh_blocks()


def test_the_page_has_pipeline_examples_with_python_twins_for_jq():
    assert len(BLOCKS) >= 8
    jq = [b for b in BLOCKS if "| jq" in b]
    py = [b for b in BLOCKS if "| python3" in b]
    assert jq and len(py) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"ex{i}" for i in range(len(BLOCKS))])
def test_documented_example_runs(block, workspace, shell_env):
    missing = sorted(g for g in csops_groups(block) if not_built(g))
    if missing:
        pytest.skip(f"needs `csops {' '.join(missing)}`, not built in this branch")
    if "jq " in block and shutil.which("jq") is None:
        pytest.skip("jq is not installed (the python3 twin of this example runs instead)")
    cp = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=workspace.root,
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode == 0, f"{block}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    assert "Traceback" not in cp.stderr


def documented_keys() -> dict[str, list[str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| command | keys |") :].split("\n\n")[0]
    out = {}
    for row in table.splitlines()[2:]:
        command, keys = (c.strip() for c in row.strip("|").split("|"))
        out[command.strip("`")] = re.findall(r"`([a-z_]+)`", keys)
    return out


def test_json_keys_are_exactly_the_documented_ones(workspace):
    env = {"CSOPS_NOW": "2024-04-20T02:00:00Z"}
    docs = documented_keys()
    assert workspace.run("customers", "optout", "jane@example.com", env=env).code == 0
    sched = workspace.popen("schedule", "run", env=env)
    deadline = time.monotonic() + 20
    while not workspace.query("SELECT 1 FROM scheduler_heartbeat") and time.monotonic() < deadline:
        time.sleep(0.1)
    sched.send_signal(signal.SIGTERM)
    assert sched.wait(timeout=60) == 0
    produced = {
        "csops runs": workspace.run("runs", "--json", env=env).json(),
        "csops schedule list": workspace.run("schedule", "list", "--json", env=env).json(),
        "csops schedule status": workspace.run("schedule", "status", "--json", env=env).json(),
        "csops retention purge": workspace.run("retention", "purge", "--json", env=env).json(),
    }
    for command, rows in produced.items():
        assert rows, command
        for row in rows:
            assert list(row) == docs[command], command


def test_json_log_lines_carry_the_documented_fields(workspace):
    proc = workspace.run("--log-format", "json", "retention", "purge", "--dry-run")
    lines = [json.loads(x) for x in proc.stderr.splitlines()]
    assert lines and all({"time", "level", "message"} <= set(r) for r in lines)
    last = lines[-1]
    assert {"job", "run_id", "counts", "exit_code"} <= set(last)
    assert last["job"] == "retention" and last["exit_code"] == 0
    (run,) = workspace.query("SELECT run_id FROM runs")
    assert last["run_id"] == run["run_id"]
