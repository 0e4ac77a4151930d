"""`biaswatch status` on a state directory set up by the test, no service: the lock says running.

status exits with the Nagios plugin convention (rules/monitoring.py): 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN; its first line is the plugin's status line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.cli.status import last_finished_night
from biaswatch.config import load_config
from biaswatch.system import pidfile
from biaswatch.testing.helpers import run_cli, valid_frame, write_config
from biaswatch.testing.service import as_uid

# A hard bound on any status run here: a status that hangs fails the test, not the suite.
RUN_SECONDS = 60


def status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``biaswatch status``, whatever its exit status."""
    return run_cli("status", "--config", config, *args, timeout=RUN_SECONDS)


def status_json(config: Path) -> dict[str, Any]:
    """``biaswatch status --json``, parsed."""
    return dict(json.loads(status(config, "--json").stdout))


@contextmanager
def service_lock(config: Path) -> Iterator[None]:
    """The state directory's lock held by this test: status sees a running service."""
    lock = pidfile.take(config.parent / "state", dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC))
    try:
        yield
    finally:
        lock.release()


def catalog_with_night(config: Path, *, accepted: bool) -> str:
    """Frames of camera cryo in its last finished night, with an accepted master or none."""
    loaded = load_config(config)
    camera = next(c for c in loaded.cameras if c.name == "cryo")
    night = last_finished_night(loaded, camera, dt.datetime.now(dt.UTC))
    catalog = Catalog(loaded.service.state_dir / "catalog.sqlite")
    try:
        set_id = catalog.add_to_set(valid_frame("a.fits", night=night))
        if accepted:
            row = MasterRow("cryo", night, 1, "48x40-1x1", "/m/bias_1.fits", 1, "d", "t")
            catalog.record_master(set_id, row)
        # te had frames that night too, and its master: only cryo's night is in question.
        te_set = catalog.add_to_set(valid_frame("b.fits", night=night, camera="te"))
        te_row = MasterRow("te", night, 1, "48x40-1x1", "/m/bias_te.fits", 1, "d", "t")
        catalog.record_master(te_set, replace(te_row))
    finally:
        catalog.close()
    return night


def test_status_trusts_the_lock_not_the_pid_in_the_file(tmp_path: Path) -> None:
    """A file naming a live pid (1) but unlocked says not running; a held lock says running."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / pidfile.NAME).write_text("1 2026-12-01T00:00:00+00:00\n")  # left by a crash
    stale = status_json(config)["service"]
    text = status(config).stdout
    with service_lock(config):
        held = status_json(config)["service"]
    assert stale == {"running": False}
    assert text.startswith("BIASWATCH CRITICAL - service not running\nservice: not running\n")
    assert held == {"running": True, "pid": os.getpid(), "since": "2026-12-04T12:00:00+00:00"}
    assert status_json(config)["service"] == {"running": False}


def test_status_is_critical_when_the_service_does_not_run(tmp_path: Path) -> None:
    """No service: exit 2, CRITICAL first, in the text and in --json's assessment."""
    config = write_config(tmp_path)
    text = status(config)
    as_json = status(config, "--json")
    assessment = json.loads(as_json.stdout)["assessment"]
    assert (text.returncode, as_json.returncode) == (2, 2)
    assert text.stdout.splitlines()[0] == "BIASWATCH CRITICAL - service not running"
    assert assessment == {"status": "CRITICAL", "code": 2, "reasons": ["service not running"]}


def test_status_is_ok_with_a_running_service_and_every_night_mastered(tmp_path: Path) -> None:
    """A running service and an accepted master for each camera's finished night: exit 0, OK."""
    config = write_config(tmp_path)
    catalog_with_night(config, accepted=True)
    with service_lock(config):
        text = status(config)
        assessment = status_json(config)["assessment"]
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith("BIASWATCH OK - every camera has its master\nservice: running")
    assert assessment == {"status": "OK", "code": 0, "reasons": []}


def test_status_is_critical_for_a_finished_night_with_frames_but_no_master(
    tmp_path: Path,
) -> None:
    """Frames in cryo's last finished night and no accepted master: exit 2, naming the night."""
    config = write_config(tmp_path)
    night = catalog_with_night(config, accepted=False)
    with service_lock(config):
        text = status(config)
        assessment = status_json(config)["assessment"]
    reason = f"cryo: no accepted master for night {night}"
    assert text.returncode == 2
    assert text.stdout.splitlines()[0] == f"BIASWATCH CRITICAL - {reason}"
    assert assessment == {"status": "CRITICAL", "code": 2, "reasons": [reason]}


def test_status_warns_of_a_watch_directory_it_cannot_read(tmp_path: Path) -> None:
    """A missing watch directory is a WARNING (exit 1) naming camera and directory."""
    config = write_config(tmp_path)
    shutil.rmtree(tmp_path / "incoming" / "te")
    with service_lock(config):
        result = status(config)
    missing = tmp_path / "incoming" / "te"
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == f"BIASWATCH WARNING - te: {missing} missing"
    assert f"  watches {missing}: missing" in result.stdout


@pytest.mark.parametrize("given", ["0", "-1", "soon", "inf"])
def test_status_refuses_a_timeout_that_is_not_positive_seconds(tmp_path: Path, given: str) -> None:
    """--timeout must be a positive number of seconds: a one-line usage error, exit 2, JSON too."""
    config = write_config(tmp_path)
    plain = status(config, "--timeout", given)
    as_json = status(config, "--timeout", given, "--json")
    error = json.loads(as_json.stdout)["error"]
    assert (plain.returncode, as_json.returncode) == (2, 2)
    assert plain.stderr.strip().splitlines()[-1].startswith("biaswatch status: error: argument")
    assert "Traceback" not in plain.stderr
    assert error["exit_status"] == 2 and "--timeout" in error["message"]


def test_status_reports_a_catalog_it_cannot_read_as_unknown(tmp_path: Path) -> None:
    """A catalog SQLite cannot read is UNKNOWN (3): the plugin line, and --json's error object."""
    config = write_config(tmp_path)
    catalog = tmp_path / "state" / "catalog.sqlite"
    catalog.parent.mkdir()
    catalog.write_bytes(b"not a database, but a file some tool left here" * 100)
    with service_lock(config):
        text = status(config)
        as_json = status(config, "--json")
    error = json.loads(as_json.stdout)["error"]
    assert (text.returncode, as_json.returncode) == (3, 3)
    assert text.stdout.startswith("BIASWATCH UNKNOWN - cannot read the catalog: ")
    assert error["exit_status"] == 3 and error["catalog"] == str(catalog)
    assert "not a database" in error["message"]


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
    # Running, no catalog yet (no night to miss); but the watch directories lie under
    # pytest's 0700 tmp of root, and access(2) checks the real uid without capabilities:
    # WARNING, each named unreadable, as it would be to the service's own user.
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stderr
    assert lines[0].startswith("BIASWATCH WARNING - cryo: ") and lines[0].endswith(" unreadable")
    assert lines[1].startswith(f"service: running, pid {os.getpid()}, since 2026-12-04")
