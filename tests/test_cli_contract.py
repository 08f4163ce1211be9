"""The command-line contract: stdout is data, stderr is people, exit codes as documented."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

from filelock import FileLock

from tests.conftest import Workspace


def test_help_lists_the_whole_command_tree(workspace: Workspace) -> None:
    proc = workspace.run("--help")
    assert proc.code == 0
    for name in (
        "init",
        "doctor",
        "import",
        "followups",
        "surveys",
        "outbox",
        "templates",
        "returns",
        "kpi",
        "schedule",
        "customers",
        "runs",
        "db",
    ):
        assert f"  {name} " in proc.stdout


def test_doctor_passes_on_a_fresh_workspace_and_prints_json_on_request(
    workspace: Workspace,
) -> None:
    proc = workspace.run("doctor", "--json")
    assert proc.code == 0, proc.stderr
    checks = json.loads(proc.stdout)
    assert {c["check"] for c in checks} >= {"schema", "journal", "integrity"}
    assert all(c["status"] != "FAIL" for c in checks)
    assert "doctor:" in proc.stderr and "doctor:" not in proc.stdout


def test_output_formats_share_one_parameter(workspace: Workspace) -> None:
    assert workspace.run("customers", "optout", "=HYPERLINK@evil.example").code == 0
    nl = workspace.run("runs", "--nl")
    assert [json.loads(line)["command"] for line in nl.stdout.splitlines()] == ["customers"]
    as_csv = workspace.run("runs", "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows[0]["exit_code"] == "0"
    # in a pipe, the default is newline-delimited JSON, never a table
    default = workspace.run("runs")
    assert json.loads(default.stdout.splitlines()[0])["command"] == "customers"


def test_csv_output_neutralises_formula_cells(workspace: Workspace) -> None:
    workspace.run("customers", "optout", "=cmd@evil.example")
    proc = workspace.run("customers", "optout", "=cmd@evil.example", "--csv")
    assert "'=cmd@evil.example" in proc.stdout


def test_a_bad_config_key_is_one_line_exit_2_without_traceback(workspace: Workspace) -> None:
    workspace.replace_config('name = "Demo Shop"', 'name = "Demo Shop"\ncolour = "blue"')
    proc = workspace.run("runs")
    assert proc.code == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "csops.toml" in lines[0] and "shop.colour" in lines[0] and "unknown key" in lines[0]
    assert "Traceback" not in proc.stderr


def test_verbose_shows_the_traceback_of_a_user_error(workspace: Workspace) -> None:
    workspace.replace_config('name = "Demo Shop"', 'name = "Demo Shop"\ncolour = "blue"')
    proc = workspace.run("-v", "runs")
    assert proc.code != 0
    assert "Traceback" in proc.stderr


def test_missing_config_exits_2_and_says_how_to_fix(tmp_path, workspace: Workspace) -> None:
    proc = workspace.run("--config", str(tmp_path / "nope.toml"), "runs")
    assert proc.code == 2
    assert "nope.toml" in proc.stderr


def test_a_command_not_built_says_so_and_exits_2(workspace: Workspace) -> None:
    from csops.cli import COMMANDS

    for name, (target, _) in COMMANDS.items():
        module = target.partition(":")[0]
        try:
            __import__(module)
        except ModuleNotFoundError:
            proc = workspace.run(name, "anything")
            assert proc.code == 2
            assert "not built yet" in proc.stderr


def test_overlapping_run_exits_75_at_once_and_is_recorded(workspace: Workspace) -> None:
    lock = FileLock(str(workspace.root / "data" / ".csops-locks" / "customers.lock"))
    with lock.acquire():
        started = time.monotonic()
        proc = workspace.run("customers", "optout", "a@example.com")
        assert time.monotonic() - started < 10
    assert proc.code == 75
    assert len(proc.stderr.strip().splitlines()) == 1 and "lock" in proc.stderr
    rows = workspace.query("SELECT exit_code FROM runs")
    assert [r["exit_code"] for r in rows] == [75]
    assert workspace.query("SELECT COUNT(*) AS n FROM suppressions")[0]["n"] == 0


def test_wait_takes_the_lock_when_the_other_run_ends(workspace: Workspace) -> None:
    lock_file = workspace.root / "data" / ".csops-locks" / "customers.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; "
            f"l = FileLock({str(lock_file)!r}); l.acquire(); print('held', flush=True); "
            "time.sleep(2)",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout.readline().strip() == b"held"
    busy = workspace.run("customers", "optout", "a@example.com")
    waited = workspace.run("customers", "optout", "a@example.com", "--wait", "30")
    holder.wait()
    assert busy.code == 75
    assert waited.code == 0, waited.stderr
    codes = [r["exit_code"] for r in workspace.query("SELECT exit_code FROM runs ORDER BY id")]
    assert codes == [75, 0]


def test_json_logs_carry_job_run_id_and_counts(workspace: Workspace) -> None:
    proc = workspace.run("--log-format", "json", "customers", "optout", "b@example.com")
    assert proc.code == 0
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    summary = events[-1]
    assert summary["job"] == "customers"
    assert len(summary["run_id"]) == 12
    assert summary["counts"] == {"suppressed": 1}
    assert summary["exit_code"] == 0
    # personal data is masked in logs at the default level
    assert "b@example.com" not in proc.stderr


def test_optout_then_optin_round_trips_and_is_idempotent(workspace: Workspace) -> None:
    assert workspace.run("customers", "optout", "Jane@Example.COM").code == 0
    again = workspace.run("customers", "optout", "jane@example.com", "--json")
    assert again.json()[0]["changed"] is False
    sup = workspace.query("SELECT address, scope FROM suppressions")
    assert sup == [{"address": "jane@example.com", "scope": "all"}]
    assert workspace.run("customers", "optin", "jane@example.com").code == 0
    assert workspace.query("SELECT * FROM suppressions") == []


def test_no_color_leaves_tables_plain(workspace: Workspace) -> None:
    workspace.run("customers", "optout", "c@example.com")
    proc = workspace.run("runs", "--table", env={"NO_COLOR": "1"})
    assert "\x1b[" not in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("id")


def test_init_twice_keeps_the_owners_edits(workspace: Workspace) -> None:
    workspace.replace_config('name = "Demo Shop"', 'name = "My Edited Shop"')
    proc = workspace.run("init", str(workspace.root))
    assert proc.code == 0
    assert 'name = "My Edited Shop"' in workspace.config.read_text()


def test_db_backup_writes_a_checked_copy(workspace: Workspace) -> None:
    workspace.run("customers", "optout", "d@example.com")
    target = workspace.root / "backup" / "copy.db"
    proc = workspace.run("db", "backup", str(target))
    assert proc.code == 0, proc.stderr
    import sqlite3

    copy = sqlite3.connect(target)
    assert copy.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 1
