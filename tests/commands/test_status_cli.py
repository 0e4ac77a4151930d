"""`biaswatch status` on a state directory set up by the test, no service: the lock says running."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from biaswatch.system import pidfile
from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.service import as_uid


def status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``biaswatch status``."""
    return run_cli("status", "--config", config, *args, check=True)


def status_json(config: Path) -> dict[str, Any]:
    """``biaswatch status --json``, parsed."""
    return dict(json.loads(status(config, "--json").stdout))


def test_status_trusts_the_lock_not_the_pid_in_the_file(tmp_path: Path) -> None:
    """A file naming a live pid (1) but unlocked says not running; a held lock says running."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / pidfile.NAME).write_text("1 2026-12-01T00:00:00+00:00\n")  # left by a crash
    stale = status_json(config)["service"]
    text = status(config).stdout
    lock = pidfile.take(state, dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC))
    try:
        held = status_json(config)["service"]
    finally:
        lock.release()
    assert stale == {"running": False}
    assert text.startswith("service: not running\n")
    assert held == {"running": True, "pid": os.getpid(), "since": "2026-12-04T12:00:00+00:00"}
    assert status_json(config)["service"] == {"running": False}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run status as another uid")
def test_status_as_a_user_who_may_not_write_the_state_directory(tmp_path: Path) -> None:
    """An operator who may read but not write the lock file still sees the running service."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    config = write_config(tmp_path)
    state = tmp_path / "state"
    lock = pidfile.take(state, dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC))
    # Another uid, able to read anything (CAP_DAC_READ_SEARCH) but to write nothing of root's.
    command = [*as_uid(47126), sys.executable, "-m", "biaswatch", "status", "--config", str(config)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"service: running, pid {os.getpid()}, since 2026-12-04")
