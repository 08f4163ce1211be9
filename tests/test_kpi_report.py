"""`csops kpi report`: one self-contained HTML file, checked in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from kpi_helpers import DAY, NOW, env_at, insert_fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip
SIZE = (1200, 1600)


@pytest.fixture
def report(workspace, tmp_path):
    workspace.replace_config('name = "Demo Shop"', 'name = "Lumen <b>&</b> Loom"')
    insert_fixture(workspace.db_path)
    proc = workspace.run(
        "kpi", "daily", "--from", "2024-03-20", "--to", DAY, "--json", env=env_at(NOW)
    )
    assert proc.code == 0, proc.stderr
    out = tmp_path / "out" / "kpi.html"
    proc = workspace.run(
        "kpi", "report", "--days", "30", "--to", DAY, "--out", str(out), "--json",
        env=env_at(NOW),
    )  # fmt: skip
    assert proc.code == 0, proc.stderr
    (row,) = proc.json()
    assert Path(row["path"]) == out
    return workspace, out, row


def test_the_report_has_an_svg_chart_per_kpi(report):
    ws, out, row = report
    page = out.read_text(encoding="utf-8")
    stored = {
        r["metric"]
        for r in ws.query("SELECT DISTINCT metric FROM kpi_daily")
        if not r["metric"].endswith((".7d", ".30d"))
    }
    charted = stored - {"nps.promoters", "nps.passives", "nps.detractors"}
    assert page.count("<svg") == len(charted) == row["charts"]
    assert set(re.findall(r'data-metric="([^"]+)"', page)) == charted
    # threshold lines, sample sizes, the latest against the previous period
    assert 'class="threshold critical"' in page
    assert "n=4" in page  # csat answers on the last day
    assert "previous 7 days" in page
    assert "promoters 3, passives 1, detractors 2" in page


def test_the_report_needs_no_network_and_escapes_text(report):
    _ws, out, _row = report
    page = out.read_text(encoding="utf-8")
    for needle in ("http://", "https://", "<script", "<link", "@import", "url(", "<img"):
        assert needle not in page, needle
    assert "Lumen &lt;b&gt;&amp;&lt;/b&gt; Loom" in page
    assert "<b>&</b>" not in page


def _pixels(png: bytes) -> tuple[int, int, list[bytearray], int]:
    """Decode an 8-bit RGB/RGBA PNG (all five row filters): width, height, rows, bytes/pixel."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, rows = bytearray(stride), []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, rows, bpp


@pytest.mark.browser
def test_the_report_renders_in_headless_chromium_to_a_non_blank_screenshot(report, tmp_path):
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _ws, out, _row = report
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           f"--window-size={SIZE[0]},{SIZE[1]}", f"--screenshot={shot}", out.as_uri()]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    width, height, rows, bpp = _pixels(shot.read_bytes())
    assert (width, height) == SIZE
    colours, ink = set(), 0
    for line in rows[::4]:
        for x in range(0, width * bpp, bpp * 2):
            px = bytes(line[x : x + 3])
            colours.add(px)
            ink += px != b"\xff\xff\xff"
    sampled = len(rows[::4]) * len(range(0, width * bpp, bpp * 2))
    assert len(colours) > 30  # text, chart fills, threshold colours, lines
    assert ink / sampled > 0.02  # not a blank white page
    # the top-left is the page's white margin; somewhere there is dark text
    assert bytes(rows[2][0:3]) == b"\xff\xff\xff"
    assert any(max(px) < 80 for px in colours)


def test_a_report_with_nothing_stored_says_what_to_run(workspace, tmp_path):
    out = tmp_path / "empty.html"
    proc = workspace.run("kpi", "report", "--out", str(out), "--json", env=env_at(NOW))
    assert proc.code == 0
    assert "run 'csops kpi daily" in proc.stderr
    assert "No KPIs stored" in out.read_text(encoding="utf-8")
