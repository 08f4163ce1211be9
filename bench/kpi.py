"""Benchmark: one day's KPIs on a big database against a small one with the same daily volume.

Both databases get the same number of orders per day (and surveys, conversations, messages and
return lines in proportion); the big one simply has far more history. Computing a day (its own
values, the trailing 7/30-day windows and the 90-day repurchase window) should cost the same in
both: every query is a range search on an indexed timestamp. Prints both times and the ratio
big/small (target: <= 1.5).

    python bench/kpi.py                    # 1,000,000 vs 10,000 orders, 100 orders a day
    python bench/kpi.py --big 200000       # a quicker check
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from csops import db
from csops.kpi.daily import compute_day
from csops.kpi.settings import KpiSettings

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2024, 4, 18)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(path: Path, orders: int, per_day: int, seed: int = 7, last_day: date = DAY) -> float:
    """Fill a database with ``orders`` orders ending on ``last_day``; returns seconds taken."""
    t0 = time.perf_counter()
    rnd = random.Random(seed)
    conn = db.connect(path)
    days = max(1, orders // per_day)
    end = (
        datetime(last_day.year, last_day.month, last_day.day, tzinfo=TZ)
        .astimezone(timezone.utc)
        .timestamp()
    )
    end += 86400
    pool = per_day * 60  # the same customer base in both databases: only the history differs
    batch = conn.execute(
        "INSERT INTO return_batches (file_name, file_sha256, format, processed_at)"
        " VALUES ('bench.csv', 'bench', 'csv', '2024-01-01T00:00:00Z')"
    ).lastrowid

    def order_rows():
        for i in range(orders):
            created = end - (days - i // per_day) * 86400 + rnd.random() * 86400
            r = rnd.random()
            status, refunded, refunded_at, cancelled_at = "delivered", 0, None, None
            if r < 0.05:
                status, cancelled_at = "cancelled", _iso(created + 3600)
            elif r < 0.10 and created + 3 * 86400 < end:
                status, refunded, refunded_at = "refunded", 5000, _iso(created + 3 * 86400)
            total = rnd.randint(1000, 50000)
            yield (f"B{i}", f"#{i}", f"c{rnd.randrange(pool)}@bench.test", status,
                   "CNY" if r < 0.9 else "USD", total, refunded, _iso(created), cancelled_at,
                   refunded_at, _iso(created + 60), _iso(created + 60))  # fmt: skip

    with db.write(conn):
        conn.executemany(
            "INSERT INTO orders (platform, external_id, number, email, status, currency,"
            " total_minor, refunded_minor, created_at, cancelled_at, refunded_at, imported_at,"
            " updated_at) VALUES ('bench', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            order_rows(),
        )
    rows = conn.execute("SELECT id, created_at FROM orders").fetchall()
    surveys, convs, outbox, returns = [], [], [], []

    def at(ts: float) -> str | None:
        """An event after the data's last day has not happened yet."""
        return _iso(ts) if ts < end else None

    for oid, created_s in rows:
        created = datetime.strptime(created_s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        c = created.timestamp()
        r = rnd.random()
        if r < 0.3 and at(c + 5 * 86400):
            kind = "csat" if r < 0.15 else "nps"
            answered = at(c + 6 * 86400) if rnd.random() < 0.5 else None
            score = rnd.randint(1, 5) if kind == "csat" else rnd.randint(0, 10)
            sent = _iso(c + 5 * 86400)
            surveys.append((kind, oid, sent, answered, score if answered else None,
                            answered or sent))  # fmt: skip
        if rnd.random() < 0.2 and at(c + 7200):
            kind = rnd.choice(("pre_sale", "after_sale", "complaint"))
            first = c + 7200 + rnd.expovariate(1 / 900)
            resolved = first + rnd.expovariate(1 / 20000)
            convs.append((f"K{oid}", kind, oid, _iso(c + 7200), at(first), at(resolved),
                          _iso(c + 7200)))  # fmt: skip
        if rnd.random() < 0.5 and at(c + 86400):
            state = "sent" if rnd.random() < 0.97 else "failed"
            sent = at(c + 86460) if state == "sent" else None
            state = "queued" if state == "sent" and sent is None else state
            outbox.append(
                (f"F{oid}", f"<F{oid}@bench>", oid, state, _iso(c + 86400), sent, _iso(c + 86400))
            )
        if rnd.random() < 0.05 and at(c + 8 * 86400):
            returns.append((batch, f"R{oid}", oid, _iso(c + 7 * 86400), _iso(c + 8 * 86400)))
    with db.write(conn):
        conn.executemany(
            "INSERT INTO surveys (kind, order_id, sent_at, responded_at, score, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            surveys,
        )
        conn.executemany(
            "INSERT INTO conversations (source, external_id, kind, order_id, created_at,"
            " first_response_at, resolved_at, imported_at) VALUES ('bench', ?, ?, ?, ?, ?, ?, ?)",
            convs,
        )
        conn.executemany(
            "INSERT INTO outbox (dedupe_key, message_id, kind, order_id, channel, recipient,"
            " state, queued_at, sent_at, updated_at)"
            " VALUES (?, ?, 'followup', ?, 'outbox', 'x@bench.test', ?, ?, ?, ?)",
            outbox,
        )
        conn.executemany(
            "INSERT INTO return_lines (batch_id, return_ref, order_id, quantity, requested_at,"
            " decision, decision_code, decided_at) VALUES (?, ?, ?, 1, ?, 'approved', 'ok', ?)",
            returns,
        )
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - t0


def time_days(paths: list[Path], repeat: int) -> list[tuple[float, float, int]]:
    """Per database: (fastest, median) seconds to compute DAY's KPIs, and how many values.

    One warm-up run each (page cache, statements), then the databases take turns, so a noisy
    neighbour on a shared machine slows both alike; the fastest run is the least disturbed.
    """
    settings = KpiSettings()
    conns = [db.connect(p) for p in paths]
    counts = [len(compute_day(c, DAY, TZ, settings)) for c in conns]
    times: list[list[float]] = [[] for _ in conns]
    for _ in range(repeat):
        for i, conn in enumerate(conns):
            t0 = time.perf_counter()
            compute_day(conn, DAY, TZ, settings)
            times[i].append(time.perf_counter() - t0)
    for conn in conns:
        conn.close()
    return [(min(t), statistics.median(t), n) for t, n in zip(times, counts, strict=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=1_000_000, help="orders in the big database")
    ap.add_argument("--small", type=int, default=10_000, help="orders in the small database")
    ap.add_argument("--per-day", type=int, default=100, help="orders per day in both")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per database (median)")
    ap.add_argument("--dir", type=Path, default=None, help="keep the databases in this folder")
    ap.add_argument(
        "--seed",
        type=Path,
        metavar="DB",
        help="only fill DB with --small orders ending on --last-day (demo data)",
    )
    ap.add_argument("--last-day", type=date.fromisoformat, default=DAY)
    args = ap.parse_args(argv)
    if args.seed:
        seconds = build(args.seed, args.small, args.per_day, last_day=args.last_day)
        print(
            f"seeded {args.seed} with {args.small:,} synthetic orders "
            f"({args.per_day} a day, up to {args.last_day}) in {seconds:.1f} s",
            file=sys.stderr,
        )
        return 0
    if args.small // args.per_day < 90:
        print("note: the small database holds under 90 days; the repurchase window sees less",
              file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sizes = (("small", args.small), ("big", args.big))
        paths = []
        for label, n in sizes:
            path = folder / f"kpi-bench-{n}.db"
            if not path.exists():
                built = build(path, n, args.per_day)
                print(f"built {label} database: {n:,} orders in {built:.1f} s", file=sys.stderr)
            paths.append(path)
        timed = time_days(paths, args.repeat)
        for (label, n), path, (fastest, mid, count) in zip(sizes, paths, timed, strict=True):
            mb = path.stat().st_size / 1e6
            print(f"{label:5}  {n:>9,} orders ({mb:,.0f} MB): one day's {count} KPI values in "
                  f"{fastest * 1000:.1f} ms (median {mid * 1000:.1f} ms)")  # fmt: skip
        ratio = timed[1][0] / timed[0][0]
        print(f"ratio big/small = {ratio:.2f} (fastest of {args.repeat}; target <= 1.5);"
              f" medians: {timed[1][1] / timed[0][1]:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
