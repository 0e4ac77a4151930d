"""Watching camera directories: watchdog events become queued paths, nothing more.

A watchdog event is only a hint to look now (reliability.md, W1-W12): the
handler does no I/O and never raises (an exception kills watchdog's
dispatcher thread, W8); the service decides readiness itself. Moves into a
watched tree arrive as ``moved`` with ``dest_path`` (W7), closes as
``closed`` on inotify only (W3). ``scan`` lists what is already there, so
frames that landed while the service was down are not missed.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from biaswatch.config import CameraConfig

log = structlog.get_logger("biaswatch.watch")

# Names that writers use while a file is incomplete (rsync's ".name.XXXX",
# browsers' ".part", editors' "~"): never frames under these names.
_TEMPORARY = ("*.tmp", "*.part", "*.partial", "*~", "*.swp")


@dataclass(frozen=True, slots=True)
class PathEvent:
    """A path worth looking at, for a camera; ``closed`` if its writer closed it."""

    camera: str
    path: Path
    closed: bool = False


def is_candidate(path: Path, patterns: Sequence[str]) -> bool:
    """Whether a file name matches the camera's patterns and is not a temporary name."""
    name = path.name
    if name.startswith(".") or any(fnmatch.fnmatch(name, t) for t in _TEMPORARY):
        return False
    return any(fnmatch.fnmatch(name, p) for p in patterns)


class _Handler(FileSystemEventHandler):
    """Puts candidate paths of one camera on the queue; does nothing else."""

    def __init__(self, camera: CameraConfig, sink: Callable[[PathEvent], None]) -> None:
        self._camera = camera
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._queue(event)
        except Exception:  # W8: an exception here would kill the dispatcher thread
            log.exception("watch.handler_failed", camera=self._camera.name)

    def _queue(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if event.is_directory:
            # A directory moved in (or created with files already in it) is scanned.
            if event.event_type in ("created", "moved"):
                for found in scan_dir(path, self._camera.patterns):
                    self._sink(PathEvent(self._camera.name, found))
            return
        if is_candidate(path, self._camera.patterns):
            self._sink(PathEvent(self._camera.name, path, event.event_type == "closed"))


def scan_dir(root: Path, patterns: Sequence[str], exclude: Sequence[Path] = ()) -> Iterator[Path]:
    """Every candidate file below ``root``, skipping ``exclude`` trees; errors are logged."""

    def report(error: OSError) -> None:
        log.warning("watch.scan_error", directory=str(root), error=str(error))

    for dirpath, dirnames, filenames in os.walk(root, onerror=report):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not _excluded(here / d, exclude)]
        for name in filenames:
            path = here / name
            if is_candidate(path, patterns):
                yield path


def _excluded(path: Path, exclude: Sequence[Path]) -> bool:
    return any(path == e or e in path.parents for e in exclude)


class Watcher:
    """The watchdog observers for all cameras: native, and polling where asked."""

    def __init__(self, cameras: Sequence[CameraConfig], sink: Callable[[PathEvent], None]) -> None:
        self._cameras = cameras
        self._sink = sink
        self._observers: list[BaseObserver] = []
        self._observer_for: dict[str, BaseObserver] = {}
        self.watching: dict[str, list[Path]] = {}

    def start(self) -> None:
        """Schedule every existing watch directory; report the missing ones."""
        native = Observer()
        polled: dict[float, BaseObserver] = {}
        for camera in self._cameras:
            if camera.polling:
                interval = camera.poll_interval_seconds
                observer = polled.setdefault(interval, PollingObserver(timeout=interval))
            else:
                observer = native
            self._observer_for[camera.name] = observer
            self.watching[camera.name] = self._schedule(observer, camera, camera.watch)
        self._observers = [native, *polled.values()]
        for observer in self._observers:
            observer.start()

    def rearm(self) -> list[tuple[CameraConfig, Path]]:
        """Schedule watch directories that were missing and now exist; returns them."""
        added = []
        for camera in self._cameras:
            armed = self.watching.setdefault(camera.name, [])
            missing = [d for d in camera.watch if d not in armed and d.is_dir()]
            for directory in self._schedule(self._observer_for[camera.name], camera, missing):
                log.info("watch.directory_armed", camera=camera.name, directory=str(directory))
                armed.append(directory)
                added.append((camera, directory))
        return added

    def _schedule(
        self, observer: BaseObserver, camera: CameraConfig, directories: Sequence[Path]
    ) -> list[Path]:
        armed = []
        for directory in directories:
            if not directory.is_dir():
                log.warning(
                    "watch.directory_missing",
                    camera=camera.name,
                    directory=str(directory),
                    action=f"create it or fix [cameras.{camera.name}] watch; looked for again "
                    "every 30 s",
                )
                continue
            if not os.access(directory, os.R_OK | os.X_OK):
                log.error(
                    "watch.directory_unreadable",
                    camera=camera.name,
                    directory=str(directory),
                    action="give the service's user read access to it",
                )
                continue
            observer.schedule(_Handler(camera, self._sink), str(directory), recursive=True)
            armed.append(directory)
        return armed

    def alive(self) -> bool:
        """Whether every observer thread is still running."""
        return all(o.is_alive() for o in self._observers)

    def stop(self) -> None:
        """Stop and join the observers."""
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout=5)
