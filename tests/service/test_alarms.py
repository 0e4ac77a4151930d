"""Alarms: warnings with stable names, the alert command with the details, night checks."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from biaswatch.hooks import AlertsConfig
from biaswatch.service.alarms import Alarms


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


def test_night_end_check_alarms_a_silent_camera_and_writes_the_report(tmp_path: Path) -> None:
    """After night_end, a camera with no frame that night raises camera_silent; a report appears."""
    from biaswatch.config import load_config
    from biaswatch.service.loop import Service
    from biaswatch.testing.fits import FakeClock

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


def rss_bytes() -> int:
    """This process's resident memory now, from /proc (proc(5), VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def shell_script(path: Path, body: str) -> tuple[str, ...]:
    """An alert command running ``body`` with /bin/sh, written to ``path``."""
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    return ("/bin/sh", str(path))


def wait_for_events(
    logs: list[dict[str, Any]], names: set[str], count: int, timeout: float
) -> None:
    """Wait until ``logs`` holds ``count`` events named in ``names``."""
    deadline = time.monotonic() + timeout
    while len([e for e in logs if e["event"] in names]) < count:
        assert time.monotonic() < deadline, f"fewer than {count} of {names} in {timeout} s"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """True once ``pid`` is no longer running (absent, or a zombie left to its new parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state follows the parenthesised name (proc(5)); an orphan that was killed
    # is a zombie until init reaps it, and some container inits never do.
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_command_printing_10_mb_keeps_the_service_memory_bounded(tmp_path: Path) -> None:
    """Eleven alerts at once each printing 10 MB leave RSS within 50 MiB and keep stderr's end."""
    script = "yes out | head -c 10000000\nyes err | head -c 10000000 >&2\necho last >&2\nexit 1\n"
    command = shell_script(tmp_path / "noisy.sh", script)
    alarms = Alarms(AlertsConfig(command=command, max_running=11, max_queued=11))
    before = peak = rss_bytes()
    with capture_logs() as logs:
        for n in range(11):
            alarms("set_failed", camera="cryo", n=n)
        deadline = time.monotonic() + 120
        while len([e for e in logs if e["event"] == "alert.failed"]) < 11:
            assert time.monotonic() < deadline, "11 alert.failed never came"
            peak = max(peak, rss_bytes())
            time.sleep(0.01)
    failed = [e for e in logs if e["event"] == "alert.failed"]
    # subprocess.run kept every byte: 11 x (10 MB + 10 MB, and again decoded) is ~440 MB.
    print(f"RSS grew by {(peak - before) / 2**20:.1f} MiB")
    assert peak - before < 50 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MiB"
    assert {e["status"] for e in failed} == {1}
    assert all(e["stderr"].endswith("err\nlast") for e in failed)
    assert max(len(e["stderr"]) for e in failed) <= 4096


def test_a_timed_out_command_and_the_child_it_forked_are_both_ended(tmp_path: Path) -> None:
    """At the timeout the command's whole process group is killed: no orphan keeps running."""
    pids = tmp_path / "pids"
    script = f"sleep 300 &\necho $! > {pids}.child\necho $$ > {pids}.command\nsleep 300\n"
    command = shell_script(tmp_path / "hang.sh", script)
    alarms = Alarms(AlertsConfig(command=command, timeout_seconds=1))
    start = time.monotonic()
    with capture_logs() as logs:
        alarms("no_master", camera="cryo")
        wait_for_events(logs, {"alert.failed", "alert.sent"}, 1, timeout=20)
    seconds = time.monotonic() - start
    child, parent = (int(Path(f"{pids}.{n}").read_text()) for n in ("child", "command"))
    deadline = time.monotonic() + 5
    while not (gone(child) and gone(parent)):
        assert time.monotonic() < deadline, f"left running: command {parent}, child {child}"
        time.sleep(0.05)
    (failed,) = [e for e in logs if e["event"] == "alert.failed"]
    assert "no answer in 1 s: its process group was killed" in failed["error"]
    assert seconds < 10


def test_thirty_alarms_at_once_run_at_most_two_commands_and_all_are_delivered(
    tmp_path: Path,
) -> None:
    """30 alarms in a burst: never more than max_running=2 commands at once, all 30 delivered."""
    running, delivered, counts = tmp_path / "running", tmp_path / "delivered", tmp_path / "counts"
    running.mkdir()
    script = (
        f"touch {running}/$$\n"
        f"ls {running} | wc -l >> {counts}\n"
        "sleep 0.2\n"
        f'payload=$(cat); echo "$payload" >> {delivered}\n'
        f"rm {running}/$$\n"
    )
    alarms = Alarms(AlertsConfig(command=shell_script(tmp_path / "count.sh", script)))
    with capture_logs() as logs:
        for n in range(30):
            alarms("set_failed", camera="cryo", n=n)
        wait_for_events(logs, {"alert.sent", "alert.failed"}, 30, timeout=120)
    assert len([e for e in logs if e["event"] == "alert.sent"]) == 30
    at_once = [int(line) for line in counts.read_text().split()]
    assert len(at_once) == 30 and max(at_once) <= 2, at_once
    sent = [json.loads(line) for line in delivered.read_text().splitlines()]
    assert sorted(d["n"] for d in sent) == list(range(30))


def test_alarms_beyond_the_queue_are_logged_as_dropped_with_a_count(tmp_path: Path) -> None:
    """With 1 running and 2 queued, 5 alarms at once run 3 commands and log 2 drops, counted."""
    delivered, started = tmp_path / "delivered", tmp_path / "started"
    script = f'touch {started}; sleep 1; payload=$(cat); echo "$payload" >> {delivered}\n'
    command = shell_script(tmp_path / "slow.sh", script)
    alarms = Alarms(AlertsConfig(command=command, max_running=1, max_queued=2))
    with capture_logs() as logs:
        alarms("set_failed", camera="cryo", n=0)
        wait_for_file(started)  # the first runs: the queue is empty again
        for n in range(1, 5):
            alarms("set_failed", camera="cryo", n=n)
        wait_for_events(logs, {"alert.sent"}, 3, timeout=30)
    warned = [e["n"] for e in logs if e["event"] == "alarm.set_failed"]
    dropped = [(e["alarm"], e["dropped"]) for e in logs if e["event"] == "alert.dropped"]
    assert warned == [0, 1, 2, 3, 4]  # every alarm is logged, sent or not
    assert dropped == [("alarm.set_failed", 1), ("alarm.set_failed", 2)]
    sent = [json.loads(line)["n"] for line in delivered.read_text().splitlines()]
    assert sorted(sent) == [0, 1, 2]
