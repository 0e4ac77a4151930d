"""Which process runs the service, and since when: one line in ``state_dir/biaswatch.pid``.

Written at start and removed at a clean stop. ``biaswatch status`` reads it and
checks the process still exists (a crash or SIGKILL leaves the file behind).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

NAME = "biaswatch.pid"


@dataclass(frozen=True, slots=True)
class Running:
    """The service's process id and when it started."""

    pid: int
    since: str


def write(state_dir: Path, now: dt.datetime) -> None:
    """Record this process as the running service."""
    (state_dir / NAME).write_text(f"{os.getpid()} {now.isoformat(timespec='seconds')}\n")


def remove(state_dir: Path) -> None:
    """Forget it, at a clean stop."""
    (state_dir / NAME).unlink(missing_ok=True)


def running(state_dir: Path) -> Running | None:
    """The service recorded in ``state_dir``, if its process is still alive."""
    try:
        pid_text, since = (state_dir / NAME).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user (systemd's biaswatch user)
    return Running(pid, since)
