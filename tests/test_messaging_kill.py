"""kill -9 and overlapping cron runs against the real sink (AT-01, AT-02, AT-07, AT-09).

AT-03 (every protocol point × positions) is in test_messaging_kill_points.py.
"""

from __future__ import annotations

import email
import os
import random
import shutil
import signal
import time
from email import policy

from messaging_helpers import (
    Sink,
    converge,
    env,
    finish,
    no_quiet_hours,
    queue,
    sized,
    smtp_channel,
    states,
    wait_for,
)


def _start(ws, sink, *args):
    p = ws.popen("followups", "send", *args, env=env())
    sink.pidfile.write_text(str(p.pid))
    return p


def test_the_handover_window_leaves_one_unknown_never_sent_twice(workspace, tmp_path):
    """AT-02: the sink reads message #4, records it, then kills csops before replying."""
    faults = {"u3@example.test": {"at": "data", "action": "kill"}}
    with Sink(tmp_path, faults=faults) as sink:
        smtp_channel(workspace, sink.port)
        queue(workspace, 10)
        p = _start(workspace, sink)
        p.wait(timeout=60)
        assert p.returncode == -signal.SIGKILL
        run = workspace.query("SELECT exit_code FROM runs ORDER BY id DESC LIMIT 1")[0]
        assert run["exit_code"] is None  # visibly interrupted
        again = workspace.run("followups", "send", env=env())
        assert again.code == 3  # one unknown
        assert "1 unknown" in again.stderr
        assert states(workspace) == {"sent": 9, "unknown": 1}
        assert set(sink.copies().values()) == {1} and len(sink.ledger()) == 10
        listed = workspace.run("outbox", "list", "--status", "unknown", "--json").json()
        assert len(listed) == 1 and listed[0]["recipient"] == "u3@example.test"
        assert listed[0]["message_id"] and listed[0]["last_error"]
        unknown_id = listed[0]["id"]
        mid = listed[0]["message_id"]

        # The operator's other choice, on a copy of the database: retry sends it again.
        copy = tmp_path / "copy"
        shutil.copytree(workspace.root, copy)
        from conftest import Workspace

        ws2 = Workspace(root=copy, env=workspace.env)
        r = ws2.run("outbox", "retry", str(unknown_id), env=env())
        assert r.code == 0, r.stderr
        assert ws2.run("followups", "send", env=env()).code == 0
        assert sink.copies()[mid] == 2  # same Message-ID twice: a deduping receiver absorbs it

        # resolve --sent on the original: no new copy.
        r = workspace.run("outbox", "resolve", str(unknown_id), "--sent", env=env())
        assert r.code == 0, r.stderr
        assert states(workspace) == {"sent": 10}
        assert workspace.run("followups", "send", env=env()).code == 0
        assert sink.copies()[mid] == 2


def test_random_kills_during_a_send_lose_nothing_and_duplicate_nothing(workspace, tmp_path, scale):
    """AT-01: random SIGKILLs during an SMTP send, re-run after each (1,000 messages, as issue
    #4 asks, and 4 kills; ``--nightly``: 2,000 and 20, 5 ms per DATA)."""
    n, kills = sized(scale, 1000, 2000), sized(scale, 4, 20)
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"kill seed {seed}")
    with Sink(tmp_path, delay_ms=sized(scale, 2, 5)) as sink:
        smtp_channel(workspace, sink.port)
        queue(workspace, n)
        done_kills = 0
        for _ in range(kills):
            p = _start(workspace, sink)
            time.sleep(rng.uniform(0.3, 1.2))
            if p.poll() is None:
                p.kill()
                done_kills += 1
            p.wait()
        assert done_kills >= 1, "no kill landed in the middle of the send"
        converge(workspace, runs=8 + kills)
        st = states(workspace)
        copies = sink.copies()
        assert st.get("sent", 0) + st.get("unknown", 0) == n, (seed, st)
        assert st.get("unknown", 0) <= done_kills, (seed, st)
        assert max(copies.values()) == 1, seed
        for r in workspace.query("SELECT state, message_id FROM outbox"):
            if r["state"] == "sent":
                assert copies.get(r["message_id"]) == 1, seed
            else:
                assert copies.get(r["message_id"], 0) <= 1
        assert workspace.query("PRAGMA integrity_check")[0]["integrity_check"] == "ok"
        final = workspace.run("followups", "send", env=env())
        assert final.code == 0 and len(sink.ledger()) == sum(copies.values())


def test_the_outbox_folder_under_kill_9_has_each_message_once_and_never_unknown(
    workspace, tmp_path, scale
):
    """AT-07: the outbox-dir channel, random kills, re-runs (600 messages and 4 kills;
    ``--nightly``: 2,000 and 20)."""
    n, kills = sized(scale, 600, 2000), sized(scale, 4, 20)
    no_quiet_hours(workspace)
    queue(workspace, n, channel="outbox")
    rng = random.Random(7)
    for _ in range(kills):
        p = workspace.popen("followups", "send", env=env())
        time.sleep(rng.uniform(0.3, 0.9))
        p.kill()
        p.wait()
    converge(workspace, runs=5 + kills)
    assert states(workspace) == {"sent": n}
    folder = workspace.root / "outbox"
    files = sorted(folder.glob("*.eml"))
    assert len(files) == n
    ids = set()
    for f in files:
        msg = email.message_from_bytes(f.read_bytes(), policy=policy.default)
        assert msg.get_body(("plain",)) is not None
        ids.add(msg["Message-ID"])
    planned = {r["message_id"] for r in workspace.query("SELECT message_id FROM outbox")}
    assert ids == planned
    assert not list((folder / "tmp").iterdir())


def test_four_overlapping_cron_runs_send_each_message_once(workspace, tmp_path, scale):
    """AT-09: one run sends, three exit 75 with one line and no traceback (150 messages;
    ``--nightly``: 4,000)."""
    n = sized(scale, 150, 4000)
    with Sink(tmp_path, delay_ms=5) as sink:
        smtp_channel(workspace, sink.port)
        queue(workspace, n)
        procs = [workspace.popen("followups", "send", env=env()) for _ in range(4)]
        outs = finish(procs, timeout=120 * scale)
        codes = sorted(c for c, _ in outs)
        assert codes == [0, 75, 75, 75], outs
        for code, err in outs:
            if code == 75:
                assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert len(sink.ledger()) == n and set(sink.copies().values()) == {1}
        runs = workspace.query("SELECT exit_code FROM runs WHERE command = 'followups'")
        assert sorted(r["exit_code"] for r in runs) == [0, 75, 75, 75]


def test_overlapping_runs_with_wait_all_finish_and_still_send_once(workspace, tmp_path, scale):
    """AT-09 with ``--wait 120``: all four exit 0 (100 messages; ``--nightly``: 4,000)."""
    n = sized(scale, 100, 4000)
    with Sink(tmp_path, delay_ms=sized(scale, 2, 5)) as sink:
        smtp_channel(workspace, sink.port)
        queue(workspace, n)
        procs = [workspace.popen("followups", "send", "--wait", "120", env=env()) for _ in range(4)]
        outs = finish(procs, timeout=240)
        assert [c for c, _ in outs] == [0, 0, 0, 0], outs
        assert len(sink.ledger()) == n and set(sink.copies().values()) == {1}


def test_a_dead_lock_holder_does_not_block_the_next_run(workspace, tmp_path, scale):
    """AT-12: SIGKILL the lock holder; the next run gets the lock at once and finishes (100
    messages; ``--nightly``: 500)."""
    n = sized(scale, 100, 500)
    with Sink(tmp_path, delay_ms=5) as sink:
        smtp_channel(workspace, sink.port)
        queue(workspace, n)
        p = _start(workspace, sink)
        assert wait_for(lambda: len(sink.ledger()) > 5)
        p.kill()
        p.wait()
        r = workspace.run("followups", "send", env=env())
        assert r.code in (0, 3), r.stderr
        st = states(workspace)
        assert st.get("sent", 0) + st.get("unknown", 0) == n
        assert max(sink.copies().values()) == 1


def test_two_senders_with_different_lock_files_on_one_database_never_duplicate(
    workspace, tmp_path, scale
):
    """AT-10: the file lock bypassed; the claim protocol alone must hold (200 messages once;
    ``--nightly``: 4,000 messages, three times)."""
    import subprocess
    import sys

    n, rounds = sized(scale, 200, 4000), sized(scale, 1, 3)
    with Sink(tmp_path, delay_ms=2) as sink:
        smtp_channel(workspace, sink.port)
        second = workspace.root / "config2"
        second.mkdir()
        text = workspace.config.read_text().replace(
            '# lock_dir = ""', 'lock_dir = "../locks-elsewhere"'
        )
        (second / "csops.toml").write_text(text)
        cmds = [
            workspace.csops_cmd("followups", "send"),
            [sys.executable, "-m", "csops", "--config", str(second / "csops.toml"),
             "followups", "send"],
        ]  # fmt: skip
        for k in range(rounds):
            queue(workspace, n, prefix=f"r{k}-")
            procs = [
                subprocess.Popen(c, env={**workspace.env, **env()}, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=workspace.root)
                for c in cmds
            ]  # fmt: skip
            outs = finish(procs, timeout=120 * scale)
            assert [c for c, _ in outs] == [0, 0], outs
            assert all("locked" not in e and "Traceback" not in e for _, e in outs)
            assert states(workspace) == {"sent": n * (k + 1)}
            assert len(sink.ledger()) == n * (k + 1) and set(sink.copies().values()) == {1}
        assert (workspace.root / "locks-elsewhere").is_dir()


def test_a_reply_journaled_by_a_dead_run_settles_its_message_without_sending_again(
    workspace, tmp_path
):
    """The outcome journal: a run that heard the 250 and recorded it in outbox_outcomes, then
    died before applying it, leaves a `sending` row that the next run settles as `sent` (not
    `unknown`), without handing it over again."""
    import subprocess
    import sys

    with Sink(tmp_path) as sink:
        smtp_channel(workspace, sink.port)
        first, second, third = queue(workspace, 3)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        pid = int(dead.stdout)
        conn = workspace.db()
        with conn:
            conn.execute(
                "INSERT INTO runs (run_id, command, pid, started_at) "
                "VALUES ('dead-run', 'followups send', ?, '2024-04-20T01:59:00Z')",
                (pid,),
            )
            conn.execute(
                "UPDATE outbox SET state='sending', claimed_by='dead-run', attempts=1, "
                "claimed_at='2024-04-20T01:59:01Z', handed_over_at='2024-04-20T01:59:01Z' "
                "WHERE id IN (?, ?)",
                (first, second),
            )
            conn.execute(
                "INSERT INTO outbox_outcomes (outbox_id, kind, code, text, at) "
                "VALUES (?, 'sent', '250', 'OK', '2024-04-20T01:59:02Z')",
                (first,),
            )
        conn.close()

        r = workspace.run("followups", "send", env=env())
        assert r.code == 3, r.stderr  # the second one, handed over with no reply: unknown
        assert "1 settled from their recorded reply" in r.stderr
        rows = {
            row["id"]: row
            for row in workspace.query("SELECT id, state, sent_at, message_id FROM outbox")
        }
        assert rows[first]["state"] == "sent"
        assert rows[first]["sent_at"] == "2024-04-20T01:59:02Z"
        assert rows[second]["state"] == "unknown"
        assert rows[third]["state"] == "sent"
        copies = sink.copies()
        assert rows[first]["message_id"] not in copies  # never handed over again
        assert rows[second]["message_id"] not in copies
        assert copies[rows[third]["message_id"]] == 1
        assert workspace.query("SELECT COUNT(*) AS n FROM outbox_outcomes")[0]["n"] == 0
