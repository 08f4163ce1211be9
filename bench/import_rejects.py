"""Benchmark (AT-21 [bench]): memory stays flat on a file full of planted defects.

Writes AT-21 (a) — 10,000 Shopify rows with 99 planted defects of eleven kinds, one cell of
5 MB among them — at each ``--scales`` multiple (×100: 1,000,000 rows, 9,900 defects, 100 cells
of 5 MB, ~0.6 GB), imports each into a fresh workspace with ``csops import orders`` and prints
wall time, rows/s, peak RSS and the ratio of the largest scale's peak RSS to the smallest's.
Target: flat (the ratio close to 1, every peak under 150 MB): a bad row costs a line in the
rejects file, never memory, and an oversized cell is refused by the field limit as it is read.

    python bench/import_rejects.py --scales 1,10          # quick
    python bench/import_rejects.py                        # 1,100: AT-21's ×100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from import_helpers import write_planted_defects  # noqa: E402  (the tests' own generator)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="1,100", help="comma-separated multiples of AT-21 (a)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="csops-bench-rejects-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSOPS_")}
    env["PYTHONPATH"] = str(REPO)
    peaks: dict[int, int] = {}
    try:
        for scale in scales:
            src = tmp / f"defects-x{scale}.csv"
            rows, defects = 10_000 * scale, 99 * scale
            plants = write_planted_defects(src, rows=rows, defects=defects)
            ws = tmp / f"shop{scale}"
            subprocess.run(
                [sys.executable, "-m", "csops", "init", str(ws)],
                check=True,
                capture_output=True,
                env=env,
            )
            cmd = [
                *(sys.executable, "-m", "csops", "--config", str(ws / "config" / "csops.toml")),
                *("-q", "import", "orders", "--from", "shopify-csv", str(src), "--json"),
            ]
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            out = proc.stdout.read().decode() if proc.stdout else ""
            code = os.waitstatus_to_exitcode(status)
            if code != 3:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"x{scale}: exit {code} (expected 3): {err[-500:]}")
            counts = json.loads(out)[0]
            if (counts["inserted"], counts["rejected"]) != (rows - defects, len(plants)):
                raise SystemExit(f"x{scale}: unexpected counts {counts}")
            peaks[scale] = usage.ru_maxrss // 1024
            print(
                f"x{scale:<4} {rows:>9,} rows, {defects:>5,} defects, "
                f"{src.stat().st_size / 1e6:6.0f} MB: {elapsed:6.1f} s, "
                f"{rows / elapsed:8,.0f} rows/s, peak RSS {peaks[scale]} MB, "
                f"rejected {counts['rejected']:,}"
            )
            src.unlink()
            shutil.rmtree(ws, ignore_errors=True)
        lo, hi = min(scales), max(scales)
        if hi != lo:
            print(
                f"peak RSS x{hi} / x{lo}: {peaks[hi] / peaks[lo]:.2f} "
                f"(target: flat, ~1; every peak < 150 MB)"
            )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
