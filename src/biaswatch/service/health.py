"""What the service tells systemd about its health: STATUS=, WATCHDOG=1, stalled cameras.

Pure bookkeeping over what the main loop hands it (how long each camera's lane
has been stuck, whether the watchers live, why some are degraded); it never
looks at a file itself, so it cannot hang with them. Tests pass a recording
notifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from biaswatch.system.notify import Notifier, watchdog_interval

log = structlog.get_logger(__name__)

_STALLED_ACTION = (
    "check the disk or mount holding its directories (NFS server down?); "
    "other cameras go on, and this one resumes by itself"
)


class Health:
    """Stalled cameras, the STATUS= line, and the systemd watchdog ping."""

    def __init__(self, notifier: Notifier, stall_seconds: float) -> None:
        self._notifier = notifier
        self._stall_seconds = stall_seconds
        self.stalled: dict[str, float] = {}  # camera -> when its stall began (monotonic)
        self._status = ""  # the STATUS= text last sent
        self._degraded = ""  # what is degraded (watchers, stalled cameras), or ""
        self._last_master = ""
        self._last_ping = 0.0
        self._ping_every = watchdog_interval()

    def stalls(self, now: float, stuck: Mapping[str, tuple[float, str]]) -> None:
        """Log cameras stuck in one call for stall_seconds, and those that came back."""
        for camera, (seconds, doing) in stuck.items():
            if seconds >= self._stall_seconds and camera not in self.stalled:
                self.stalled[camera] = now - seconds
                log.warning(
                    "camera.stalled",
                    camera=camera,
                    seconds=round(seconds, 1),
                    doing=doing,
                    action=_STALLED_ACTION,
                )
            elif seconds < self._stall_seconds and camera in self.stalled:
                began = self.stalled.pop(camera)
                log.info("camera.recovered", camera=camera, after_seconds=round(now - began, 1))

    def status(self, degraded: Sequence[str]) -> None:
        """Send STATUS= when what is degraded (watchers, stalled cameras) changes."""
        stalled = [f"{camera}: no answer from its files" for camera in sorted(self.stalled)]
        self._degraded = "; ".join([*degraded, *stalled])
        self._send()

    def published(self, master: Path) -> None:
        """Name the newest master in STATUS=, beside whatever is still degraded."""
        self._last_master = master.name
        self._send()

    def _send(self) -> None:
        # One line for both: a publication must not hide from `systemctl status`
        # that some cameras are polling or stalled, nor a degradation the last master.
        state = f"degraded: {self._degraded}" if self._degraded else "watching"
        text = f"{state}; last master: {self._last_master}" if self._last_master else state
        if text != self._status:
            self._status = text
            self._notifier.notify(f"STATUS={text}")

    def ping(self, now: float, *, watchers_alive: bool) -> None:
        """WATCHDOG=1, but only while the loop turns and the watchers live.

        reliability.md 2.2: a dead observer must not look healthy, so systemd
        restarts the service. A stalled camera does not stop the ping: a restart
        cannot mend a mount, and the other cameras are working.
        """
        if self._ping_every is None or now - self._last_ping < self._ping_every:
            return
        if watchers_alive:
            self._notifier.notify("WATCHDOG=1")
            self._last_ping = now
        else:
            log.error("watch.observer_dead", action="restarting via the systemd watchdog")
