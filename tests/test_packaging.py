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

    venv = tmp_path / "fresh-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSOPS_", "PYTHON"))}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import csops; print(csops.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        check=True,
    )
    assert where.stdout.startswith(str(venv))
    csops = str(venv / "bin" / "csops")
    init = subprocess.run(
        [csops, "init", "shop"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60
    )
    assert init.returncode == 0, init.stderr
    assert (elsewhere / "shop" / "config" / "csops.toml").is_file()
    assert (elsewhere / "shop" / "data" / "csops.db").is_file()
    assert (elsewhere / "shop" / "templates" / "messages").is_dir()
    doctor = subprocess.run(
        [csops, "doctor", "--json"],
        capture_output=True,
        text=True,
        cwd=elsewhere / "shop",
        env={**env, "CSOPS_SIGNING_KEYS": "wheel-test-signing-key"},
        timeout=60,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
