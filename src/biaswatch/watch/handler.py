"""The watchdog handler: an event becomes a queued path, and nothing more.

A watchdog event is only a hint to look now (reliability.md W1-W12). The handler
does no I/O beyond listing a directory moved in, and never raises: an exception
kills watchdog's dispatcher thread for every camera on the observer (W8). Moves
into a watched tree arrive as ``moved`` with ``dest_path`` (W7); closes as
``closed``, on inotify only (W3).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from biaswatch.config import CameraConfig
from biaswatch.watch.scan import is_candidate, scan_dir

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PathEvent:
    """A path worth looking at, for a camera; ``closed`` if its writer closed it."""

    camera: str
    path: Path
    closed: bool = False


class PathHandler(FileSystemEventHandler):
    """Puts candidate paths of one camera's watch root on the queue; does nothing else."""

    def __init__(
        self, camera: CameraConfig, directory: Path, sink: Callable[[PathEvent], None]
    ) -> None:
        self._camera = camera
        self._directory = directory
        self._sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        """Queue the event's candidate paths; log, never raise, if that fails."""
        # dispatch, not on_any_event, so that nothing of the handler runs
        # unguarded: one exception here kills the dispatcher thread for every
        # camera on this observer, silently (W8).
        try:
            self._queue(event)
        except Exception:
            log.exception(
                "watch.handler_failed",
                camera=self._camera.name,
                directory=str(self._directory),
                event_type=event.event_type,
                path=os.fsdecode(event.src_path),
            )

    def _queue(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        if not raw:  # moved out to an unwatched directory (full move events): gone here
            return
        path = Path(os.fsdecode(raw))
        if event.is_directory:
            # A directory moved in (or created with files already in it) is scanned.
            if event.event_type in ("created", "moved"):
                for found in scan_dir(path, self._camera.patterns):
                    self._sink(PathEvent(self._camera.name, found))
            return
        if is_candidate(path, self._camera.patterns):
            # A file renamed in is whole: writers that rename write elsewhere first. It is
            # taken at once, as a closed one, not after settle_seconds (2 s by default);
            # fits_status still checks its length.
            whole = event.event_type in ("closed", "moved")
            self._sink(PathEvent(self._camera.name, path, whole))
