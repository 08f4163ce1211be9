"""The shipped systemd unit runs `schedule run` the way the scheduler's stop logic expects."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "config" / "csops.service"


def load_unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_restarts_on_failure_as_a_dedicated_user_and_stops_gracefully():
    unit = load_unit()
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["--log-format", "json", "schedule", "run"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["User"] == "csops" and service["Group"] == "csops"
    assert service["KillMode"] == "mixed"  # SIGTERM to the scheduler only; it drains its jobs
    assert service["KillSignal"] == "SIGTERM"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"]
    assert service["UMask"] == "0077"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path):
    text = UNIT.read_text().replace("/opt/csops/venv/bin/csops", sys.executable + " -m csops")
    unit = tmp_path / "csops.service"
    unit.write_text(text)
    cp = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (cp.stdout + cp.stderr).splitlines() if "csops.service" in line]
    assert cp.returncode == 0 and problems == [], problems
