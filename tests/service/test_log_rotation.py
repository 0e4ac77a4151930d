"""The service's log file under rotation: renamed away, it is reopened at its path."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from biaswatch.testing.helpers import write_config, write_frames
from biaswatch.testing.service import running_service

SNIPPET = Path(__file__).parents[2] / "systemd" / "biaswatch.logrotate"


def events_in(path: Path) -> list[str]:
    """The event names of one JSON log file."""
    return [json.loads(line)["event"] for line in path.read_text().splitlines() if line]


def logrotate_config(tmp_path: Path, log: Path) -> Path:
    """The shipped snippet aimed at ``log``, its ``su`` naming the user running the test
    (the snippet's biaswatch user need not exist here)."""
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    text = SNIPPET.read_text().replace("/var/log/biaswatch/biaswatch.jsonl", str(log))
    text = text.replace("su biaswatch biaswatch", f"su {user} {group}")
    assert str(log) in text
    config = tmp_path / "logrotate.conf"
    config.write_text(text)
    return config


def test_rotation_under_a_running_service(tmp_path: Path) -> None:
    """After a rename (and logrotate's rotation, where installed), new events go to a
    new file at the configured path and the old lines stay in the renamed one."""
    config = write_config(tmp_path)
    with running_service(config) as service:
        log = service.log_path
        started = events_in(log)
        assert "service.started" in started
        log.rename(tmp_path / "renamed.jsonl")
        write_frames(config, "cryo", 2, interval=0.0, seed=1)
        service.wait_event("frame.calibrated", count=2, timeout=60)
        assert events_in(tmp_path / "renamed.jsonl") == started
        logrotate = shutil.which("logrotate")
        if logrotate is not None:
            rotate = logrotate_config(tmp_path, log)
            state = tmp_path / "logrotate.state"
            subprocess.run([logrotate, "-f", "-s", str(state), str(rotate)], check=True)
            assert not log.exists() or events_in(log) == []
            write_frames(config, "te", 2, interval=0.0, seed=2)
            service.wait_event("frame.calibrated", count=2, timeout=60)
            rotated = Path(f"{log}.1")
            assert events_in(rotated).count("frame.calibrated") == 2
        assert service.stop()[0] == 0
