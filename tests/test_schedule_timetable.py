"""The timetable under a fake clock: the right jobs at the right shop-local times, DST included.

The clock is injected (as everywhere in csops); the jobs are the real ``schedule.Scheduler`` with
our ``TimetableJob``s, stepped minute by minute, each run recorded by its callback.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import schedule as schedule_lib

from csops.config import ConfigError, parse_sections
from csops.scheduler import (
    ScheduleJob,
    ScheduleSettings,
    TimetableJob,
    next_run_after,
    plan_list,
)

UTC = timezone.utc


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def drive(jobs: dict[str, ScheduleJob], tz: str, start: datetime, end: datetime, step_s: int = 60):
    """Step a fake clock from start to end; return [(job, local wall time string)] of runs."""
    clock = FakeClock(start)
    ran: list[tuple[str, datetime]] = []
    sched = schedule_lib.Scheduler()
    for name, spec in jobs.items():
        sched.jobs.append(
            TimetableJob(name, spec, tz, clock, lambda n: ran.append((n, clock.now)), sched)
        )
    while clock.now < end:
        clock.now += timedelta(seconds=step_s)
        sched.run_pending()
    zone = ZoneInfo(tz)
    return [(n, t.astimezone(zone).strftime("%m-%d %H:%M %Z")) for n, t in ran]


def test_jobs_run_at_shop_local_times_across_the_local_midnight_not_the_utc_one():
    jobs = {
        "kpi": ScheduleJob(command="kpi daily", at=["06:00"]),
        "midnight": ScheduleJob(command="retention purge", at=["00:00"]),
        "followups": ScheduleJob(command="followups send", every="1h", between="22:00-01:00"),
    }
    # Asia/Shanghai is UTC+8: local midnight is 16:00 UTC, 06:00 local is 22:00 UTC.
    start = datetime(2024, 4, 20, 13, 30, tzinfo=UTC)  # 21:30 local
    ran = drive(jobs, "Asia/Shanghai", start, start + timedelta(hours=10))
    assert ran == [
        ("followups", "04-20 22:00 CST"),
        ("followups", "04-20 23:00 CST"),
        ("midnight", "04-21 00:00 CST"),  # same instant: in [schedule] order
        ("followups", "04-21 00:00 CST"),
        ("followups", "04-21 01:00 CST"),
        ("kpi", "04-21 06:00 CST"),
    ]


def test_every_15_minutes_runs_96_times_a_day_each_on_a_quarter_hour():
    jobs = {"import": ScheduleJob(command="import orders --from shopify-api", every="15m")}
    start = datetime(2024, 4, 19, 16, 0, tzinfo=UTC)  # local midnight in Shanghai
    ran = drive(jobs, "Asia/Shanghai", start, start + timedelta(days=1))
    assert len(ran) == 96  # 00:15 … 23:45, then the next day's 00:00 (not the start instant)
    assert ran[-1] == ("import", "04-21 00:00 CST")
    assert {t[9:11] for _, t in ran} == {"00", "15", "30", "45"}


def test_spring_forward_day_skipped_time_runs_once_shifted_and_intervals_do_not_double():
    jobs = {
        "at-0230": ScheduleJob(command="kpi daily", at=["02:30"]),
        "hourly": ScheduleJob(command="followups send", every="1h", between="00:00-05:00"),
    }
    tz = "America/New_York"  # 2024-03-10 02:00 EST -> 03:00 EDT
    start = datetime(2024, 3, 10, 4, 0, tzinfo=UTC)  # 23:00 EST on the 9th
    ran = drive(jobs, tz, start, start + timedelta(hours=8))
    assert ran == [
        ("hourly", "03-10 00:00 EST"),
        ("hourly", "03-10 01:00 EST"),
        ("hourly", "03-10 03:00 EDT"),
        ("at-0230", "03-10 03:30 EDT"),
        ("hourly", "03-10 04:00 EDT"),
        ("hourly", "03-10 05:00 EDT"),
    ]


def test_fall_back_day_repeated_time_runs_once_but_intervals_run_in_both_hours():
    jobs = {
        "at-0130": ScheduleJob(command="kpi daily", at=["01:30"]),
        "half-hourly": ScheduleJob(command="import orders", every="30m", between="01:00-02:00"),
    }
    tz = "America/New_York"  # 2024-11-03 02:00 EDT -> 01:00 EST
    start = datetime(2024, 11, 3, 4, 0, tzinfo=UTC)  # 00:00 EDT
    ran = drive(jobs, tz, start, start + timedelta(hours=5))
    assert ran == [
        ("half-hourly", "11-03 01:00 EDT"),
        ("at-0130", "11-03 01:30 EDT"),
        ("half-hourly", "11-03 01:30 EDT"),
        ("half-hourly", "11-03 01:00 EST"),
        ("half-hourly", "11-03 01:30 EST"),
        ("half-hourly", "11-03 02:00 EST"),
    ]


def test_days_filter_skips_other_weekdays():
    job = ScheduleJob(command="kpi report --out r.html", at=["08:00"], days=["mon"])
    after = datetime(2024, 4, 20, 0, 0, tzinfo=UTC)  # a Saturday
    nxt = next_run_after(job, after, "Europe/Berlin")
    assert nxt == datetime(2024, 4, 22, 6, 0, tzinfo=UTC)  # Monday 08:00 CEST


def test_a_scheduler_that_was_busy_runs_a_missed_job_once_not_once_per_missed_slot():
    jobs = {"import": ScheduleJob(command="import orders", every="15m")}
    start = datetime(2024, 4, 20, 0, 0, tzinfo=UTC)
    ran = drive(jobs, "UTC", start, start + timedelta(hours=2), step_s=3600)
    assert len(ran) == 2


def test_plan_list_gives_shop_time_and_utc_for_each_upcoming_run():
    settings = ScheduleSettings(jobs={"kpi": ScheduleJob(command="kpi daily", at=["06:00"])})
    rows = plan_list(settings, "Asia/Shanghai", datetime(2024, 4, 20, 2, 0, tzinfo=UTC), 2)
    assert [(r["next_run"], r["next_run_utc"]) for r in rows] == [
        ("2024-04-21T06:00:00+08:00", "2024-04-20T22:00:00Z"),
        ("2024-04-22T06:00:00+08:00", "2024-04-21T22:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("table", "field", "expected"),
    [
        ({"command": "kpi daily"}, "schedule.jobs.x", "every"),
        ({"command": "kpi daily", "every": "15m", "at": ["06:00"]}, "schedule.jobs.x", "every"),
        ({"command": "kpi daily", "at": ["6am"]}, "schedule.jobs.x", "HH:MM"),
        ({"command": "kpi daily", "every": "15 mins"}, "schedule.jobs.x", "30m"),
        ({"command": "kpi daily", "at": ["06:00"], "between": "09:00-10:00"}, "", "between"),
        ({"command": "csops kpi daily", "at": ["06:00"]}, "schedule.jobs.x", "subcommand"),
        ({"command": "kpi daily", "at": ["06:00"], "days": ["monday"]}, "", "mon"),
        ({"command": "kpi daily", "at": ["06:00"], "password": "x"}, "password", "_env"),
    ],
)
def test_bad_schedule_entries_are_config_errors_naming_the_job(table, field, expected):
    with pytest.raises(ConfigError) as info:
        parse_sections({"schedule": {"jobs": {"x": table}}}, "csops.toml")
    text = str(info.value)
    assert "csops.toml" in text and "schedule.jobs.x" in text
    assert field in text and expected in text


def test_schedule_list_shows_the_shop_offset_changing_across_a_dst_night(workspace):
    workspace.replace_config('timezone = "Asia/Shanghai"', 'timezone = "America/New_York"')
    body = workspace.config.read_text()
    start, end = body.index("[schedule]"), body.index("### retention")
    workspace.config.write_text(
        body[:start]
        + '[schedule]\n[schedule.jobs.kpi]\ncommand = "kpi daily"\nat = ["02:30"]\n'
        + body[end:]
    )
    proc = workspace.run(
        "schedule", "list", "--next", "3", "--json", env={"CSOPS_NOW": "2024-03-09T12:00:00Z"}
    )
    assert proc.code == 0, proc.stderr
    assert [(r["next_run"], r["next_run_utc"]) for r in proc.json()] == [
        ("2024-03-10T03:30:00-04:00", "2024-03-10T07:30:00Z"),  # 02:30 does not exist that night
        ("2024-03-11T02:30:00-04:00", "2024-03-11T06:30:00Z"),
        ("2024-03-12T02:30:00-04:00", "2024-03-12T06:30:00Z"),
    ]
