"""Test helpers for the scheduler and foundation tests: no process outlives its test."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import Workspace

_started: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Register a process the test started so it is killed if the test fails midway."""
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_leftover_processes(monkeypatch):
    original = Workspace.popen

    def popen(self, *args, **kwargs):
        return track(original(self, *args, **kwargs))

    monkeypatch.setattr(Workspace, "popen", popen)
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
