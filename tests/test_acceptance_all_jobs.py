"""AT-11: every job at once against one SQLite file, judged from outside csops.

Loops restart `import orders`, `followups send`, `surveys send`, `kpi daily` and `returns process`
(a new batch file each time) as cron would, while `csops surveys serve` takes valid POSTs from a
client thread and one extra reader holds a read transaction open. The oracle is the SMTP sink's
ledger, the HTTP client's own record of 2xx answers, and SQLite's own checks.

Normal suite: 30 s of load (≈55 s in all); `--nightly` (the ``scale`` fixture) runs ten times
longer with ten times larger files. Peak -wal size and runs per job are printed, not asserted.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.import_helpers import gen_orders, write_shopify
from tests.messaging_helpers import Sink, queue, wait_for
from tests.returns_helpers import open_db, write_batch
from tests.returns_helpers import seed_orders as seed_return_orders
from tests.surveys_helpers import SIGNING_KEY, SURVEY_CONFIG, free_port, insert_surveys
from tests.surveys_helpers import seed_orders as seed_survey_orders

NOW = "2024-05-01T02:00:00Z"  # 10:00 in Asia/Shanghai
LOCKED = ("database is locked", "SQLITE_BUSY", "database table is locked")


@dataclass
class Ledger:
    """Every csops process the test started: argv, exit code, output."""

    runs: list[tuple[str, int, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, code: int, out: str, err: str) -> None:
        with self.lock:
            self.runs.append((name, code, out, err))


def _loop(
    ws, name: str, args_for, stop: threading.Event, ledger: Ledger, period: float = 5.0
) -> None:
    """Restart one command every ``period`` seconds (at once when a run took longer)."""
    k = 0
    while not stop.is_set():
        started = time.monotonic()
        proc = ws.popen(*args_for(k))
        out, err = proc.communicate(timeout=600)
        ledger.add(
            name, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
        k += 1
        stop.wait(max(0.0, period - (time.monotonic() - started)))


def _import_file(tmp: Path, orders, k: int) -> Path:
    """The export as of iteration ``k``: every third order moves on (refunded, then back)."""
    for i, o in enumerate(orders):
        if i % 3 == k % 3 and o.financial == "paid":
            o.refunded_minor = o.total_minor // 4 if k % 2 else 0
            o.financial = "partially_refunded" if k % 2 else "paid"
        elif i % 3 == k % 3 and o.financial == "partially_refunded" and not k % 2:
            o.refunded_minor, o.financial = 0, "paid"
    return write_shopify(tmp / f"orders-{k % 2}.csv", orders)


def _returns_file(tmp: Path, orders: list[tuple[str, dict]], k: int, n: int) -> Path:
    rng = random.Random(k)
    lines = []
    for i in range(n):
        number, skus = rng.choice(orders)
        sku = rng.choice(sorted(skus))
        reason = rng.choice(["changed_mind", "wrong_size", "damaged", "other"])
        lines.append(f"B{k}R{i:05d},{number},{sku},1,{reason},,2024-04-28T08:00:00Z,refund,")
    return write_batch(tmp / f"returns-{k}.csv", lines)


def _post_client(
    base: str, tokens: dict[int, str], stop: threading.Event, per_s: float, answered: dict
) -> list[tuple[int, str]]:
    """POST valid answers at ``per_s``; record the last accepted score per survey."""
    rng = random.Random(7)
    failures: list[tuple[int, str]] = []
    ids = sorted(tokens)
    session = requests.Session()
    n = 0
    while not stop.is_set():
        sid = ids[n % len(ids)]
        score = rng.randint(1, 5)
        try:
            r = session.post(
                f"{base}/s/{tokens[sid]}",
                data={"score": str(score), "comment": f"post {n}"},
                timeout=30,
            )
        except requests.RequestException as exc:  # a refused/reset connection is a failure too
            failures.append((0, repr(exc)))
        else:
            if 200 <= r.status_code < 300:
                answered[sid] = (score, f"post {n}")
            elif r.status_code != 429:  # 429 is the per-token limit doing its job
                failures.append((r.status_code, r.text[:200]))
        n += 1
        stop.wait(1.0 / per_s)
    return failures


def _hold_read(db_path: Path, seconds: float, done: dict) -> None:
    """One extra reader: a read transaction open for ``seconds`` (pins the WAL)."""
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    conn.execute("BEGIN")
    done["orders_seen"] = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()
    done["held"] = seconds


def _watch_wal(db_path: Path, stop: threading.Event, peak: dict) -> None:
    wal = Path(str(db_path) + "-wal")
    while not stop.wait(0.25):
        if wal.exists():
            peak["wal"] = max(peak.get("wal", 0), wal.stat().st_size)


def test_every_job_at_once_never_fails_never_locks_loses_nothing_and_checkpoints(
    workspace, tmp_path, scale, monkeypatch
):
    ws = workspace
    duration = 30.0 * scale
    rows_target = 3000 * scale
    ws.env.update({"CSOPS_NOW": NOW, "CSOPS_SIGNING_KEYS": SIGNING_KEY})
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", SIGNING_KEY)
    monkeypatch.setenv("CSOPS_TESTING", "1")
    monkeypatch.setenv("CSOPS_NOW", NOW)

    sink = Sink(tmp_path, delay_ms=2)
    ws.set_config(
        f'[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {sink.port}\n'
        'security = "none"\ntimeout = 10\n'
    )
    ws.replace_config('default_channel = "outbox"', 'default_channel = "mail"')
    ws.replace_config('quiet_hours = "21:00-09:00"', 'quiet_hours = ""')
    ws.replace_config('cap_period = "2d"', 'cap_period = "0d"')
    ws.set_config(SURVEY_CONFIG)
    ws.replace_config(
        "\n[surveys]\n",
        '\n[surveys]\nchannel = "mail"\nalert_channel = "mail"\n'
        'alert_recipient = "care-team@shop.example"\n',
    )
    port = free_port()
    ws.replace_config('base_url = "http://127.0.0.1:8080"', f'base_url = "http://127.0.0.1:{port}"')

    # Seed: return-able orders, delivered orders due a survey and a check-in, surveys to answer,
    # and a backlog of follow-ups; the import file is generated (≈1.75 rows per order).
    conn = open_db(ws.db_path)
    return_orders = seed_return_orders(conn, 100 * scale)
    conn.close()
    seed_survey_orders(ws.db_path, 150 * scale, delivered_at="2024-04-27T08:00:00Z", start=3001)
    old = seed_survey_orders(
        ws.db_path, 100, delivered_at="2024-01-10T08:00:00Z", start=20001, domain="old.example"
    )
    survey_ids = insert_surveys(ws.db_path, old)
    queue(ws, 300 * scale, now=NOW)
    orders = gen_orders(int(rows_target / 1.75), seed=11)

    from csops.config import load_config
    from csops.surveys.links import survey_token

    config = load_config(ws.config)
    tokens = {sid: survey_token(config, sid, "csat") for sid in survey_ids}

    ledger = Ledger()
    stop = threading.Event()
    server = ws.popen("surveys", "serve", "--host", "127.0.0.1", "--port", str(port))
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    threads: list[threading.Thread] = []
    answered: dict[int, tuple[int, str]] = {}
    post_failures: list[tuple[int, str]] = []
    reader: dict = {}
    peak: dict = {}
    try:
        assert wait_for(healthy, timeout=30), "the survey server did not come up"
        loops = {
            "import": lambda k: (
                "import",
                "orders",
                "--from",
                "shopify-csv",
                str(_import_file(tmp_path, orders, k)),
            ),
            "followups": lambda k: ("followups", "send"),
            "surveys": lambda k: ("surveys", "send"),
            "kpi": lambda k: ("kpi", "daily"),
            "returns": lambda k: (
                "returns",
                "process",
                str(_returns_file(tmp_path, return_orders, k, 50 * scale)),
            ),
        }
        for name, args_for in loops.items():
            threads.append(
                threading.Thread(target=_loop, args=(ws, name, args_for, stop, ledger), daemon=True)
            )
        threads.append(
            threading.Thread(
                target=lambda: post_failures.extend(
                    _post_client(base, tokens, stop, 20.0, answered)
                ),
                daemon=True,
            )
        )
        threads.append(
            threading.Thread(
                target=_hold_read, args=(ws.db_path, duration / 2, reader), daemon=True
            )
        )
        threads.append(
            threading.Thread(target=_watch_wal, args=(ws.db_path, stop, peak), daemon=True)
        )
        for t in threads:
            t.start()
        time.sleep(duration)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
        server.terminate()
        _s_out, s_err = server.communicate(timeout=60)
        # Converge the outbox with one last delivery, without load, before the sink goes.
        final = ws.run("followups", "send")
        sink_ledger = sink.copies()
        sink.stop()

    server_err = s_err.decode(errors="replace")
    by_job: dict[str, list[int]] = {}
    for name, code, _out, _err in ledger.runs:
        by_job.setdefault(name, []).append(code)
    print(  # the [bench] side of AT-11: printed, never asserted
        f"AT-11 {duration:.0f}s: runs {by_job}; surveys answered by 2xx POSTs {len(answered)}; "
        f"peak -wal {peak.get('wal', 0) / 1e6:.1f} MB; reader saw {reader.get('orders_seen')}"
    )
    # Every process: no exit 1 (or any unexpected code), no lock error, no traceback.
    assert reader.get("held") == duration / 2, reader
    names = {name for name, *_ in ledger.runs}
    assert names == set(loops), f"some loop never ran: {names}"
    bad = [(n, c, e[-400:]) for n, c, _, e in ledger.runs if c not in (0, 3)]
    assert not bad, bad
    for name, _code, out, err in ledger.runs:
        for text in (out, err):
            assert not any(s in text for s in LOCKED), (name, text[-400:])
            assert "Traceback" not in text, (name, text[-800:])
    assert not any(s in server_err for s in LOCKED), server_err[-800:]
    assert "Traceback" not in server_err, server_err[-800:]
    assert server.returncode in (0, -15), server.returncode

    # The survey server: no 5xx, nothing but 2xx/429, and every accepted POST is in the DB.
    assert not post_failures, post_failures[:5]
    assert len(answered) >= min(len(survey_ids), 50), len(answered)
    rows = {r["id"]: r for r in ws.query("SELECT id, score, comment, responded_at FROM surveys")}
    for sid, (score, comment) in answered.items():
        assert rows[sid]["responded_at"], sid
        assert (rows[sid]["score"], rows[sid]["comment"]) == (score, comment), sid

    # I1–I4 after the final delivery run.
    assert final.code in (0, 3), final.stderr
    outbox = ws.query("SELECT id, state, next_attempt_at, message_id FROM outbox")
    assert outbox, "nothing was ever planned"
    terminal = {"sent", "failed", "suppressed", "unknown"}
    for r in outbox:
        # I1: queued only with a future next_attempt_at (a deferral the run explained)
        assert r["state"] in terminal or (
            r["state"] == "queued" and (r["next_attempt_at"] or "") > NOW
        ), r
    sent = [r for r in outbox if r["state"] == "sent"]
    assert len(sent) >= 300 * scale, len(sent)
    # I2: no Message-ID twice in the sink's ledger; every `sent` row is in it.
    assert max(sink_ledger.values(), default=1) == 1, [m for m, n in sink_ledger.items() if n > 1][
        :5
    ]
    missing = [r["message_id"] for r in sent if r["message_id"] not in sink_ledger]
    assert not missing, missing[:5]
    # I3: no kills and no drops, so no doubt.
    assert not [r for r in outbox if r["state"] == "unknown"]
    # I4: database health.
    _assert_db_health(ws.db_path)
    conn = sqlite3.connect(ws.db_path, timeout=30, isolation_level=None)
    busy, _log, _ckpt = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.close()
    assert busy == 0
    wal = Path(str(ws.db_path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size


def _assert_db_health(db_path: Path) -> None:
    from csops.migrations import latest_version

    conn = sqlite3.connect(db_path, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    finally:
        conn.close()
    assert not Path(str(db_path) + "-journal").exists()
