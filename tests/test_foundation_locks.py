"""AT-12: a dead lock holder never blocks the next run; a bad lock folder is one clear line."""

from __future__ import annotations

import os
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
with job_lock(load_config(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_the_next_run_gets_the_lock_at_once_after_the_holder_is_sigkilled(workspace):
    holder = track(
        subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(workspace.config), "customers"],
            stdout=subprocess.PIPE,
            env=workspace.env,
            text=True,
        )
    )
    assert holder.stdout.readline().strip() == "locked"
    busy = workspace.run("customers", "optout", "a@example.com")
    assert busy.code == 75 and "Traceback" not in busy.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    took = time.monotonic()
    proc = workspace.run("customers", "optout", "a@example.com")
    assert proc.code == 0, proc.stderr
    assert time.monotonic() - took < 10  # no waiting out a stale lock
    assert workspace.query("SELECT address FROM suppressions") == [{"address": "a@example.com"}]
    codes = workspace.query("SELECT exit_code FROM runs WHERE command='customers' ORDER BY id")
    assert [r["exit_code"] for r in codes] == [75, 0]


def test_a_sigkilled_scheduler_is_replaced_by_the_next_one_without_cleanup(workspace):
    env = {"CSOPS_NOW": "2024-04-20T02:00:00Z"}
    first = workspace.popen("schedule", "run", env=env)
    assert wait_for(lambda: workspace.query("SELECT run_id FROM scheduler_heartbeat"))
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = workspace.popen("schedule", "run", env=env)
    beats = wait_for(
        lambda: (
            len(workspace.query("SELECT run_id FROM scheduler_heartbeat")) == 2
            or second.poll() is not None
        )
    )
    assert beats is True and second.poll() is None, second.stderr.read().decode()
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    rows = workspace.query("SELECT exit_code, finished_at FROM runs WHERE command='schedule'")
    assert rows == [
        {"exit_code": None, "finished_at": None},  # the killed one: visibly unfinished
        {"exit_code": 0, "finished_at": rows[1]["finished_at"]},
    ]


def test_a_lock_folder_that_cannot_be_created_is_exit_2_with_one_line_naming_it(workspace):
    blocker = workspace.root / "not-a-folder"
    blocker.write_text("a file where the lock folder should be")
    lock_dir = blocker / "locks"
    workspace.replace_config('# lock_dir = ""', f'lock_dir = "{lock_dir}"')
    for args in (["customers", "optout", "a@example.com"], ["retention", "purge"]):
        proc = workspace.run(*args)
        assert proc.code == 2
        assert proc.stderr.count("\n") == 1 and str(lock_dir) in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_a_read_only_lock_folder_is_exit_2_naming_it(workspace):
    lock_dir = workspace.root / "ro-locks"
    lock_dir.mkdir(mode=0o500)
    workspace.replace_config('# lock_dir = ""', f'lock_dir = "{lock_dir}"')
    proc = workspace.run("customers", "optout", "a@example.com")
    assert proc.code == 2 and str(lock_dir) in proc.stderr and proc.stderr.count("\n") == 1
