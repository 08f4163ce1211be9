"""A wheel built from the repo carries the default config and templates, so init works anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_installed_outside_the_repo_writes_a_working_workspace(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("csops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "csops/config_defaults/csops.toml" in names
    assert any(n.startswith("csops/templates/") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSOPS_")}
    env["PYTHONPATH"] = str(target)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import csops; print(csops.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        check=True,
    )
    assert where.stdout.startswith(str(target))
    init = subprocess.run(
        [sys.executable, "-m", "csops", "init", "shop"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    assert (elsewhere / "shop" / "config" / "csops.toml").is_file()
    assert (elsewhere / "shop" / "data" / "csops.db").is_file()
    doctor = subprocess.run(
        [sys.executable, "-m", "csops", "doctor", "--json"],
        capture_output=True,
        text=True,
        cwd=elsewhere / "shop",
        env=env,
        timeout=60,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
