"""``biaswatch reload`` with no service to answer (exit 69, nothing left behind), and what
``status`` makes of the lock's new name, the legacy lock and the runtime pidfile. The reloads
a real service answers are in tests/service/test_reload.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from biaswatch.testing.helpers import run_cli, write_config

EX_UNAVAILABLE = 69


def lock_holder(state: Path, *, ignore_sighup: bool = False) -> subprocess.Popen[bytes]:
    """A process that takes the state directory's lock as a service would, and sleeps.

    Returned once it holds the lock; the caller kills it (``with ... as holder``).
    """
    code = (
        "import datetime as dt, signal, sys, time\n"
        "from pathlib import Path\n"
        "from biaswatch.system import pidfile\n"
        f"{'signal.signal(signal.SIGHUP, signal.SIG_IGN)' if ignore_sighup else ''}\n"
        "lock = pidfile.take(Path(sys.argv[1]), dt.datetime.now(dt.UTC))\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def test_reload_with_no_service_exits_69(tmp_path: Path) -> None:
    """No service holds the lock (a stale one names pid 1): exit 69, nothing signalled."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "biaswatch.lock").write_text("1 2026-12-01T00:00:00+00:00\n")

    result = run_cli("reload", "--config", config, "--json", timeout=60)

    assert result.returncode == EX_UNAVAILABLE, result.stderr
    error = json.loads(result.stdout)["error"]
    assert "no biaswatch service is running" in error["message"]


def test_reload_that_gets_no_answer_exits_69_in_time(tmp_path: Path) -> None:
    """A lock holder that ignores SIGHUP: exit 69 after --timeout, its request withdrawn."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    with lock_holder(state, ignore_sighup=True) as deaf:
        try:
            (state / "run").mkdir()
            start = time.monotonic()
            result = run_cli("reload", "--config", config, "--timeout", "1", timeout=60)
            took = time.monotonic() - start
            left = list((state / "run").iterdir())
        finally:
            deaf.kill()

    assert result.returncode == EX_UNAVAILABLE, result.stderr
    assert f"(pid {deaf.pid}) did not answer within 1 s" in result.stderr
    assert took < 30
    assert left == []


def test_status_trusts_no_pidfile_and_sees_a_legacy_holder(tmp_path: Path) -> None:
    """Stale files naming pid 1: not running; a held legacy lock (older version): running."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    for name in ("biaswatch.lock", "biaswatch.pid", "run/biaswatch.pid"):
        (state / name).write_text("1 2026-12-01T00:00:00+00:00\n")  # left by crashes

    stale = status_json(config)
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    legacy = [sys.executable, "-c", code, str(state / "biaswatch.pid")]
    with subprocess.Popen(legacy, stdout=subprocess.PIPE) as older:
        try:
            assert older.stdout is not None and older.stdout.readline() == b"locked\n"
            held = status_json(config)
        finally:
            older.kill()

    assert stale["service"] == {"running": False}
    assert stale["assessment"]["status"] == "CRITICAL"  # service not running
    assert held["service"]["running"] is True and held["service"]["pid"] == 1


def status_json(config: Path) -> dict[str, Any]:
    """``status --json``, parsed; its exit status must be its assessment's Nagios code."""
    result = run_cli("status", "--config", config, "--json")
    report = dict(json.loads(result.stdout))
    assert result.returncode == report["assessment"]["code"], result.stderr
    return report


def test_reload_of_another_pid_than_the_lock_holder_exits_69(tmp_path: Path) -> None:
    """--pid naming a process that does not hold the lock: exit 69, and it is not signalled."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    with lock_holder(state) as holder:
        try:
            # Pid 1 is never signalled: the lock names another pid.
            result = run_cli("reload", "--config", config, "--pid", "1", "--json", timeout=60)
        finally:
            holder.kill()

    assert result.returncode == EX_UNAVAILABLE, result.stderr
    message = json.loads(result.stdout)["error"]["message"]
    assert message.endswith(f"is held by pid {holder.pid}, not pid 1")
    assert not (state / "run").exists() or list((state / "run").iterdir()) == []
