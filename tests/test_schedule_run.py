"""`csops schedule run` as a real long-lived process: child runs, locks, signals, heartbeat."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import wait_for

from tests.schedule_helpers import no_leftover_processes, track  # noqa: F401

HOLD_LOCK = """
import sys, time
from csops.config import load_config
from csops.runs import job_lock
config = load_config(sys.argv[1])
with job_lock(config, sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()  # held until the test says so (or closes the pipe)
"""


def set_schedule(workspace, text: str) -> None:
    body = workspace.config.read_text()
    start, end = body.index("[schedule]"), body.index("### retention")
    workspace.config.write_text(body[:start] + "[schedule]\n" + text + "\n" + body[end:])


def hold_lock(workspace, job: str) -> subprocess.Popen:
    """Another process (as a cron run would) holding job's lock until release(proc)."""
    proc = track(
        subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(workspace.config), job],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=workspace.env,
            text=True,
        )
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def release(holder: subprocess.Popen) -> None:
    holder.stdin.write("go\n")
    holder.stdin.close()
    holder.wait(timeout=30)


def stop(proc: subprocess.Popen, sig: int | None = signal.SIGTERM) -> tuple[int, list[dict]]:
    """Send ``sig`` (None: the signal was already sent), then wait and parse the JSON log."""
    if sig is not None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    lines = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    return proc.returncode, lines


@pytest.fixture
def scheduler_env():
    return {"CSOPS_NOW": "2024-04-20T01:59:58Z"}


def test_a_long_job_is_skipped_not_stacked_and_sigterm_lets_it_finish_and_be_recorded(
    workspace, scheduler_env
):
    set_schedule(
        workspace,
        'heartbeat = "1s"\n[schedule.jobs.purge]\ncommand = "retention purge --wait 30"\n'
        'every = "1s"\n',
    )
    holder = hold_lock(workspace, "retention")  # the first purge waits for its lock
    sched = workspace.popen("--log-format", "json", "schedule", "run", env=scheduler_env)
    assert wait_for(
        lambda: workspace.query(
            "SELECT 1 FROM scheduler_heartbeat WHERE running_jobs LIKE '%purge%'"
        )
    )
    assert workspace.run("schedule", "status", env=scheduler_env).code == 0  # alive
    time.sleep(2.5)  # several 1 s slots pass while the first run is still waiting
    sched.send_signal(signal.SIGTERM)  # while the job runs: it finishes, then the loop ends
    time.sleep(0.5)
    assert sched.poll() is None
    release(holder)
    code, log = stop(sched, None)  # no second signal: that would interrupt the job
    assert code == 0
    runs = workspace.query("SELECT * FROM runs WHERE command = 'retention'")
    assert len(runs) == 1, "the running job was stacked"
    assert runs[0]["exit_code"] == 0 and runs[0]["finished_at"]
    skipped = [r for r in log if r.get("task") == "purge" and "still going" in r["message"]]
    assert skipped and all(r["level"] == "warning" and r["job"] == "schedule" for r in skipped)
    (me,) = workspace.query("SELECT * FROM runs WHERE command = 'schedule'")
    assert me["exit_code"] == 0 and me["finished_at"]
    assert "started=1" in me["summary"] and "skipped_running=" in me["summary"]
    beat = workspace.query("SELECT state, stopped_at FROM scheduler_heartbeat")
    assert beat == [{"state": "stopped", "stopped_at": beat[0]["stopped_at"]}]
    assert beat[0]["stopped_at"]
    assert workspace.run("schedule", "status").code == 1  # no longer alive


def test_a_lock_held_by_a_cron_run_is_respected_and_the_loop_keeps_going(workspace, scheduler_env):
    set_schedule(
        workspace,
        '[schedule.jobs.optout]\ncommand = "customers optout jane@example.com"\nevery = "1s"\n',
    )
    holder = hold_lock(workspace, "customers")
    sched = workspace.popen("--log-format", "json", "schedule", "run", env=scheduler_env)
    assert wait_for(
        lambda: workspace.query("SELECT 1 FROM runs WHERE command='customers' AND exit_code=75"),
        timeout=30,
    )
    release(holder)
    assert wait_for(
        lambda: workspace.query("SELECT 1 FROM runs WHERE command='customers' AND exit_code=0"),
        timeout=30,
    )
    code, log = stop(sched, signal.SIGINT)  # Ctrl-C stops it cleanly too
    assert code == 0
    codes = [
        r["exit_code"]
        for r in workspace.query("SELECT exit_code FROM runs WHERE command='customers'")
    ]
    assert 75 in codes and 0 in codes
    assert any("holds its lock" in r["message"] and r["exit_code"] == 75 for r in log)
    assert workspace.query("SELECT address, scope FROM suppressions") == [
        {"address": "jane@example.com", "scope": "all"}
    ]


def test_jobs_fire_at_shop_local_midnight_under_the_injected_clock(workspace):
    set_schedule(
        workspace,
        '[schedule.jobs.nightly]\ncommand = "retention purge"\nat = ["00:00"]\n'
        '[schedule.jobs.morning]\ncommand = "retention purge --dry-run"\nat = ["06:00"]\n',
    )
    # 23:59:58 in Asia/Shanghai: the local day turns in 2 s; the UTC day does not.
    sched = workspace.popen("schedule", "run", env={"CSOPS_NOW": "2024-04-20T15:59:58Z"})
    rows = wait_for(lambda: workspace.query("SELECT * FROM runs WHERE command='retention'"))
    assert rows, "the 16:00 retention job never started"
    time.sleep(1)
    code, _ = stop(sched)
    assert code == 0
    # read again after the stop: the row seen above may belong to a job still running then
    rows = workspace.query("SELECT * FROM runs WHERE command='retention'")
    assert [r["exit_code"] for r in rows] == [0]
    assert rows[0]["started_at"] in ("2024-04-20T16:00:00Z", "2024-04-20T16:00:01Z")
    assert len(workspace.query("SELECT * FROM runs WHERE command='retention'")) == 1


def test_one_scheduler_per_lock_folder_and_bad_jobs_are_refused_up_front(workspace, scheduler_env):
    set_schedule(workspace, '[schedule.jobs.k]\ncommand = "retention purge"\nat = ["06:00"]\n')
    first = workspace.popen("schedule", "run", env=scheduler_env)
    assert wait_for(lambda: workspace.query("SELECT 1 FROM scheduler_heartbeat"))
    second = workspace.run("schedule", "run", env=scheduler_env)
    assert second.code == 75
    assert second.stderr.count("\n") == 1 and "lock" in second.stderr
    assert stop(first)[0] == 0

    set_schedule(workspace, '[schedule.jobs.k]\ncommand = "frobnicate now"\nat = ["06:00"]\n')
    bad = workspace.run("schedule", "run")
    assert bad.code == 2 and "schedule.jobs.k" in bad.stderr and "Traceback" not in bad.stderr
    set_schedule(workspace, "")
    assert workspace.run("schedule", "run").code == 2


def test_a_second_sigterm_interrupts_the_running_job_instead_of_waiting(workspace, scheduler_env):
    set_schedule(
        workspace,
        '[schedule.jobs.purge]\ncommand = "retention purge --wait 60"\nevery = "1s"\n',
    )
    holder = hold_lock(workspace, "retention")
    try:
        sched = workspace.popen("--log-format", "json", "schedule", "run", env=scheduler_env)
        assert wait_for(
            lambda: workspace.query(
                "SELECT 1 FROM scheduler_heartbeat WHERE running_jobs LIKE '%purge%'"
            )
        )
        sched.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert sched.poll() is None  # still waiting for the job
        took = time.monotonic()
        code, log = stop(sched)
        assert code == 0 and time.monotonic() - took < 15
    finally:
        holder.kill()
        holder.wait()
    assert any(r.get("task") == "purge" and "interrupted" in r["message"] for r in log)
    (me,) = workspace.query("SELECT exit_code, summary FROM runs WHERE command = 'schedule'")
    assert me["exit_code"] == 0 and "interrupted=1" in me["summary"]
