"""``biaswatch log`` as an operator runs it, on the log the real service wrote."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from biaswatch.testing.helpers import run_cli, write_config, write_frames
from biaswatch.testing.service import running_service


def log_lines(config: Path, *args: str) -> list[str]:
    """The lines ``biaswatch log`` prints with these filters."""
    return run_cli("log", "--config", config, *args, check=True).stdout.splitlines()


def test_log_filters_by_camera_level_and_night(tmp_path: Path) -> None:
    """Warnings of one camera, one camera's whole story, one night: each as readable lines."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config) as service:
        (tmp_path / "incoming" / "cryo" / "junk.fits").write_bytes(b"not a FITS file" * 300)
        write_frames(config, "cryo", 3, interval=0.0)
        write_frames(config, "te", 3, interval=0.0)
        published = service.wait_event("master.published", count=2, timeout=120)
        service.wait_event("frame.rejected")
        assert service.stop()[0] == 0
    warnings = log_lines(config, "--camera", "cryo", "--level", "warning")
    assert any(" WARNING frame.rejected camera=cryo " in line for line in warnings), warnings
    assert not any(" INFO " in line or "camera=te" in line for line in warnings)
    te_story = log_lines(config, "--camera", "te")
    assert any(" INFO    master.published camera=te night=" in line for line in te_story)
    assert not any("camera=cryo" in line for line in te_story)
    night = published[0]["night"]
    tonight = log_lines(config, "--night", night)
    assert sum(" master.published " in line for line in tonight) == 2
    assert log_lines(config, "--night", "2001-01-01") == []


def test_follow_prints_events_as_they_are_written(tmp_path: Path) -> None:
    """With --follow, a line appended to the log is printed within a second or two."""
    config = write_config(tmp_path)
    log = tmp_path / "log" / "biaswatch.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("")
    command = [sys.executable, "-m", "biaswatch", "log", "--config", str(config), "--follow"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as follower:
        try:
            time.sleep(1.0)
            event = {"event": "set.failed", "level": "error", "camera": "cryo"}
            event |= {"reason": "disk full", "timestamp": "2026-11-25T03:00:00Z"}
            with log.open("a") as f:
                f.write(json.dumps(event) + "\n")
            assert follower.stdout is not None
            line = follower.stdout.readline()
        finally:
            follower.terminate()
    assert line.strip() == '2026-11-25 03:00:00Z ERROR   set.failed camera=cryo reason="disk full"'
