"""Alarms: warnings with stable names, the alert command with the details, night checks."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

from structlog.testing import capture_logs

from biaswatch.alarms import Alarms, night_alarm
from biaswatch.catalog import Catalog
from biaswatch.records import FrameRecord, MasterRow
from biaswatch.settings import AlertsConfig


def wait_for_file(path: Path, timeout: float = 20) -> str:
    """The file's text once it exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    time.sleep(0.1)  # let the writer finish
    return path.read_text()


def test_an_alarm_is_logged_and_given_to_the_alert_command(tmp_path: Path) -> None:
    """The command (a real process, no shell) gets the alarm as JSON and its name in the env."""
    out = tmp_path / "alert.json"
    script = (
        "import json, os, sys; d = json.load(sys.stdin); d['env'] = os.environ['BIASWATCH_ALARM'];"
        f" open({str(out)!r}, 'w').write(json.dumps(d))"
    )
    alarms = Alarms(AlertsConfig(command=(sys.executable, "-c", script)))
    with capture_logs() as logs:
        alarms("master_rejected", camera="cryo", night="2026-11-24", reason="level 30")
        sent = json.loads(wait_for_file(out))
    assert sent == {
        "alarm": "alarm.master_rejected",
        "camera": "cryo",
        "night": "2026-11-24",
        "reason": "level 30",
        "env": "alarm.master_rejected",
    }
    (warning,) = [e for e in logs if e["event"] == "alarm.master_rejected"]
    assert (warning["log_level"], warning["camera"]) == ("warning", "cryo")


def test_a_failing_alert_command_is_logged_not_raised(tmp_path: Path) -> None:
    """An alert program that exits 3 is reported as alert.failed with its stderr."""
    script = "import sys; sys.stderr.write('mail server down'); sys.exit(3)"
    alarms = Alarms(AlertsConfig(command=(sys.executable, "-c", script)))
    with capture_logs() as logs:
        alarms("set_failed", camera="te")
        deadline = time.monotonic() + 20
        while not any(e["event"] == "alert.failed" for e in logs):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    (failed,) = [e for e in logs if e["event"] == "alert.failed"]
    assert (failed["status"], failed["stderr"]) == (3, "mail server down")


def test_night_checks_tell_a_silent_camera_from_a_night_without_a_master(tmp_path: Path) -> None:
    """No frames: camera_silent; frames but nothing accepted: no_master; a master: nothing."""
    catalog = Catalog(tmp_path / "catalog.sqlite")
    night = "2026-11-24"
    assert night_alarm(catalog, "cryo", night) == (
        "camera_silent",
        "no frame from camera cryo in night 2026-11-24",
    )
    frame = FrameRecord(
        "/in/a.fits",
        "cryo",
        1,
        1,
        "valid",
        sha256="a",
        night=night,
        geometry="g",
        date_obs="2026-11-25T02:00:00",
    )
    set_id = catalog.add_to_set(frame)
    assert night_alarm(catalog, "cryo", night) == (
        "no_master",
        "1 frame(s) but no accepted master for night 2026-11-24",
    )
    master = MasterRow("cryo", night, 1, "g", "/m/1.fits", 1, "d", "now", None, "rejected")
    catalog.record_master(set_id, master)
    assert night_alarm(catalog, "cryo", night) is not None  # a rejected master is no master
    catalog._db.execute("UPDATE masters SET state = 'accepted'")
    assert night_alarm(catalog, "cryo", night) is None


def test_night_end_check_alarms_a_silent_camera_and_writes_the_report(tmp_path: Path) -> None:
    """After night_end, a camera with no frame that night raises camera_silent; a report appears."""
    from biaswatch.config import load_config
    from biaswatch.service import Service
    from biaswatch.testing import FakeClock

    config_path = tmp_path / "config.toml"
    config_path.write_text('[cameras.cam]\nwatch = ["in"]\nnight_end = "10:00"\n')
    config = load_config(config_path)
    # 10:10 in Chicago on 2026-11-25 (UTC-6): the check of night 2026-11-24.
    clock = FakeClock(dt.datetime(2026, 11, 25, 16, 10, tzinfo=dt.UTC))
    service = Service(config, clock=clock)
    try:
        with capture_logs() as logs:
            service._night_check("cam")
            report = tmp_path / "var" / "state" / "reports" / "2026-11-24.html"
            page = wait_for_file(report)
    finally:
        service.catalog.close()
    (alarm,) = [e for e in logs if e["event"] == "alarm.camera_silent"]
    assert (alarm["camera"], alarm["night"]) == ("cam", "2026-11-24")
    assert "<h1>biaswatch: night 2026-11-24</h1>" in page and "No master this night." in page
