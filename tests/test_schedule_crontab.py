"""`csops schedule crontab` prints valid crontab lines that give the same timetable as `run`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from csops.config import load_config
from csops.scheduler import day_slots

_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")
_NAMES = {
    4: {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
    3: {
        n: i + 1
        for i, n in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
}
_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


class CrontabError(ValueError):
    pass


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise CrontabError(f"field {index}: {text!r} is not a number")
    lo, hi = _RANGES[index]
    value = int(text)
    if not lo <= value <= hi:
        raise CrontabError(f"field {index}: {value} outside {lo}-{hi}")
    return value


def expand_field(text: str, index: int) -> set[int]:
    """One cron field (cron(5): lists, ranges, steps, names) → the set of values it matches."""
    lo, hi = _RANGES[index]
    out: set[int] = set()
    for element in text.split(","):
        base, _, step_text = element.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise CrontabError(f"field {index}: bad step {step_text!r}")
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _value(a, index), _value(b, index)
            if first > last:
                raise CrontabError(f"field {index}: range {base} runs backwards")
        else:
            first = last = _value(base, index)
            if step_text:
                last = hi
        out.update(range(first, last + 1, step))
    if index == 4 and 7 in out:
        out = (out - {7}) | {0}
    return out


def parse_crontab(text: str) -> tuple[dict[str, str], list[tuple[list[set[int]], str]]]:
    """Validate a crontab; return its environment lines and (expanded fields, command) entries."""
    env: dict[str, str] = {}
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _ENV.match(line) and not line[0].isdigit() and not line.startswith("*"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
            continue
        parts = line.split(None, 5)
        if len(parts) < 6:
            raise CrontabError(f"line {number}: expected 5 time fields and a command")
        fields = [expand_field(p, i) for i, p in enumerate(parts[:5])]
        command = parts[5]
        if re.search(r"(?<!\\)%", command):
            raise CrontabError(f"line {number}: unescaped % (cron turns it into a newline)")
        entries.append((fields, command))
    return env, entries


def wall_times_of(entries, day: date) -> set[tuple[int, int]]:
    dow = (day.weekday() + 1) % 7
    out = set()
    for (minutes, hours, doms, months, dows), _command in entries:
        if day.day in doms and day.month in months and dow in dows:
            out |= {(h, m) for h in hours for m in minutes}
    return out


MIXED = """
[schedule.jobs.import]
command = "import orders --from shopify-api"
every = "15m"

[schedule.jobs.followups]
command = "followups send"
every = "1h"
between = "09:00-21:00"

[schedule.jobs.ninety]
command = "kpi daily"
every = "90m"

[schedule.jobs.odd]
command = "surveys send --limit 50"
every = "7m"
between = "22:30-01:10"

[schedule.jobs.weekly]
command = "kpi report --out 'reports/week %V.html'"
at = ["08:05", "17:45"]
days = ["mon", "fri"]

[schedule.jobs.fast]
command = "customers optout nobody@example.com"
every = "30s"
"""


def test_the_validator_refuses_what_cron_refuses():
    for bad in [
        "61 * * * * /bin/true",
        "* 24 * * * /bin/true",
        "*/0 * * * * /bin/true",
        "5-1 * * * * /bin/true",
        "* * * * /bin/true",
        "0 6 * * * /bin/date +%F",
    ]:
        try:
            parse_crontab(bad)
        except CrontabError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    env, entries = parse_crontab("CRON_TZ=UTC\n*/20 9-11,14 * * mon-fri /bin/true\n")
    assert env == {"CRON_TZ": "UTC"}
    assert wall_times_of(entries, date(2024, 4, 22)) == {
        (h, m) for h in (9, 10, 11, 14) for m in (0, 20, 40)
    }


def test_crontab_output_parses_and_matches_the_timetable_job_by_job(workspace):
    body = workspace.config.read_text()
    start, end = body.index("[schedule]"), body.index("### retention")
    workspace.config.write_text(body[:start] + "[schedule]\n" + MIXED + body[end:])
    proc = workspace.run("schedule", "crontab")
    assert proc.code == 0, proc.stderr
    env, _ = parse_crontab(proc.stdout)
    assert env == {"CRON_TZ": "Asia/Shanghai"}
    settings = load_config(workspace.config).section("schedule")
    # Split the output into each job's lines by its "# name:" comment.
    blocks: dict[str, str] = {}
    current = None
    for line in proc.stdout.splitlines():
        m = re.match(r"^# ([a-z0-9_-]+): ", line)
        if m:
            current = m.group(1)
            blocks[current] = ""
        elif current:
            blocks[current] += line + "\n"
    assert set(blocks) == set(settings.jobs)
    assert "not expressible in cron" in blocks["fast"]
    tz = ZoneInfo("Asia/Shanghai")
    for name, job in settings.jobs.items():
        if name == "fast":
            continue
        _, entries = parse_crontab(blocks[name])
        assert entries, name
        for day in (date(2024, 4, 22), date(2024, 4, 26), date(2024, 4, 27)):
            local = [t.astimezone(tz) for t in day_slots(job, day, "Asia/Shanghai")]
            expected = {(t.hour, t.minute) for t in local}
            assert wall_times_of(entries, day) == expected, (name, day)
        for _, command in entries:
            words = shlex.split(command.replace(r"\%", "%"))
            assert Path(words[0]).is_absolute() and Path(words[0]).exists()
            assert words[words.index("--config") + 1] == str(workspace.config.resolve())
            assert words[words.index("--log-format") + 1] == "json"
            assert "flock" not in command
            assert words[-3] == ">>" and Path(words[-2]).is_absolute() and words[-1] == "2>&1"


def test_a_crontab_line_runs_as_cron_would_and_logs_json(workspace):
    proc = workspace.run("schedule", "crontab", "--log", str(workspace.root / "cron.log"))
    _, entries = parse_crontab(proc.stdout)
    line = next(cmd for _, cmd in entries if " retention purge" in cmd)
    env = {"PATH": "/usr/bin:/bin", "HOME": workspace.env["HOME"], "CSOPS_TESTING": "1"}
    env["PYTHONPATH"] = workspace.env["PYTHONPATH"]  # only matters without an installed csops
    env["CSOPS_NOW"] = datetime(2024, 4, 20, tzinfo=timezone.utc).isoformat()
    cp = subprocess.run(["/bin/sh", "-c", line], env=env, timeout=60)
    assert cp.returncode == 0
    records = [json.loads(x) for x in (workspace.root / "cron.log").read_text().splitlines()]
    done = [r for r in records if r.get("job") == "retention" and "exit_code" in r]
    assert done and done[-1]["exit_code"] == 0 and "counts" in done[-1] and done[-1]["run_id"]


def test_the_shipped_crontab_example_is_valid_and_matches_the_default_timetable(workspace):
    example = (Path(__file__).resolve().parent.parent / "config" / "crontab.example").read_text()
    env, entries = parse_crontab(example)
    assert env == {"CRON_TZ": "Asia/Shanghai"} and entries
    proc = workspace.run(
        "schedule",
        "crontab",
        "--executable",
        "/opt/csops/venv/bin/csops",
        "--log",
        "/var/log/csops/csops.log",
        "--env-file",
        "/etc/csops/secrets.env",
    )
    generated = proc.stdout.replace(str(workspace.config.resolve()), "/srv/csops/config/csops.toml")

    def body(text: str) -> list[str]:
        return [x for x in text.splitlines() if x and not x.startswith("# csops timetable")]

    assert body(generated) == body(example)[-len(body(generated)) :]
