"""The watchdog observers of every camera: native inotify, or polling on network mounts.

Their handlers (watch/handler.py) only queue paths; watch/scan.py lists what is already
there, so frames that landed while the service was down, or that no event
announced, are not missed. Whether a root exists is asked of the camera's own
thread (frames/lanes.py), never looked up here, so a hung mount cannot block the loop.

Nothing in watchdog restarts a dead thread or reports a lost root (W8, W10),
so :meth:`Watcher.check` does, and an inotify limit (W9) degrades a camera to
polling instead of stopping the service.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

try:
    from watchdog.observers.inotify import InotifyObserver
except ImportError:  # not Linux: no inotify, and no unpaired moves to mend
    InotifyObserver = None  # type: ignore[assignment,misc]
from watchdog.observers.polling import PollingObserver

from biaswatch.config import CameraConfig
from biaswatch.system.mounts import Mount, polls, read_mounts
from biaswatch.watch.handler import PathEvent, PathHandler
from biaswatch.watch.scan import NOT_A_DIRECTORY, probe_directory

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Limit:
    """An inotify limit: its errno name, what it means, and the sysctl that lifts it."""

    name: str
    reason: str
    sysctl: str


# The two limits watchdog raises (W9); the operator gets the exact command.
_INOTIFY_LIMITS = {
    errno.ENOSPC: _Limit(
        "ENOSPC", "inotify watch limit reached", "fs.inotify.max_user_watches=524288"
    ),
    errno.EMFILE: _Limit(
        "EMFILE", "inotify instance limit reached", "fs.inotify.max_user_instances=1024"
    ),
}

# More observer deaths than this within the window means something keeps
# killing them: better a clean systemd restart than rebuilding in a loop.
MAX_REBUILDS = 5
REBUILD_WINDOW_SECONDS = 600.0

_JOIN_SECONDS = 5.0
# Stopping joins every emitter; one stuck in a hung mount would never return.
_STOP_SECONDS = 5.0
_REARM_ACTION = "looked for again every 30 s, and scanned when it is back"


class WatcherFailing(Exception):
    """The observers keep dying; the service should exit so systemd restarts it."""


def native_observer() -> BaseObserver:
    """The platform's observer; on inotify, with full move events.

    Without them watchdog reports a file renamed in from an unwatched directory (a
    camera program's ``rename(tmp, final)`` across directories, a mosaic's readout
    moved in) as ``created`` (watchdog inotify.py: an unpaired IN_MOVED_TO), which
    looks like a file still being written and waits settle_seconds; with them it is
    ``moved``, which the handler treats as whole (watch/handler.py).
    """
    if Observer is InotifyObserver:
        return InotifyObserver(generate_full_events=True)
    return Observer()


def _polling_observer(interval: float) -> BaseObserver:
    return PollingObserver(timeout=interval)


@dataclass(frozen=True, slots=True)
class _Kind:
    """Which observer serves a camera: the native one, or polling at ``interval``."""

    interval: float | None = None

    @property
    def label(self) -> str:
        return "native" if self.interval is None else f"polling every {self.interval:g} s"


_NATIVE = _Kind()


def _dead_threads(observer: BaseObserver) -> list[str]:
    """The threads of ``observer`` that stopped running, by name; empty when all run."""
    dead = [] if observer.is_alive() else ["observer"]
    dead += [f"emitter {e.watch.path}" for e in list(observer.emitters) if not e.is_alive()]
    # watchdog 7's InotifyObserver reads the kernel queue on one more thread of
    # its own; if it dies, no emitter ever gets another event.
    reader = getattr(observer, "_inotify_fd", None)
    if reader is not None and hasattr(reader, "is_alive") and not reader.is_alive():
        dead.append("inotify reader")
    return dead


def _stop_all(observers: Sequence[BaseObserver]) -> None:
    for observer in observers:
        observer.stop()
    for observer in observers:
        with contextlib.suppress(RuntimeError):
            observer.join(timeout=_JOIN_SECONDS)


def _discard(observer: BaseObserver) -> None:
    """Stop ``observer`` and its emitters, whether or not it ever started."""
    observer.stop()
    # join() refuses a thread that never started; such an observer has nothing to wait for.
    with contextlib.suppress(RuntimeError):
        observer.join(timeout=_JOIN_SECONDS)


class Watcher:
    """The watchdog observers for all cameras: native, and polling where asked or forced.

    ``native`` and ``polling`` build the observers and ``monotonic`` times the
    rebuilds; ``mounts`` (None: /proc/self/mountinfo, read at start) tells which
    directories are on a network filesystem. Tests inject them.
    ``present(camera, directory)`` says whether a watch root is there ("ok",
    "missing", "unreadable", or None while unknown); the service answers from each
    camera's own thread (frames/lanes.py), so that a hung mount never blocks the main loop;
    its answers may then be up to ``rebuild_grace`` seconds old.
    """

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        sink: Callable[[PathEvent], None],
        *,
        native: Callable[[], BaseObserver] = native_observer,
        polling: Callable[[float], BaseObserver] = _polling_observer,
        monotonic: Callable[[], float] = time.monotonic,
        mounts: Sequence[Mount] | None = None,
        present: Callable[[str, Path], str | None] | None = None,
        rebuild_grace: float = 0.0,
    ) -> None:
        self._cameras = cameras
        self._mounts = mounts
        self._present = present or (lambda _camera, directory: probe_directory(directory))
        self._rebuild_grace = rebuild_grace
        self._dead_since: dict[_Kind, float] = {}
        self._sink = sink
        self._native = native
        self._polling = polling
        self._monotonic = monotonic
        self._running = False
        self._kind: dict[str, _Kind] = {}
        self._observers: dict[_Kind, BaseObserver] = {}
        self._watches: dict[tuple[str, Path], ObservedWatch] = {}
        self._degraded: dict[str, str] = {}
        self._rebuilds: deque[float] = deque()
        self.watching: dict[str, list[Path]] = {}

    # --- public -------------------------------------------------------------

    def start(self) -> None:
        """Schedule every existing watch directory; report the missing ones."""
        self._running = True
        mounts = read_mounts() if self._mounts is None else self._mounts
        for camera in self._cameras:
            polling = polls(camera.name, camera.polling, camera.watch, mounts)
            polled = camera.poll_interval_seconds if polling else None
            self._kind[camera.name] = _Kind(polled)
            self.watching[camera.name] = []
        for camera in self._cameras:
            self._arm(camera, [d for d in camera.watch if self._usable(camera, d)])

    def rearm(self) -> list[tuple[CameraConfig, Path]]:
        """Schedule watch directories that were missing and now exist; returns them."""
        if not self._running:
            return []
        added = []
        for camera in self._cameras:
            armed = self.watching.setdefault(camera.name, [])
            missing = [
                d for d in camera.watch if d not in armed and self._present(camera.name, d) == "ok"
            ]
            for _, directory in self._arm(camera, [d for d in missing if self._usable(camera, d)]):
                log.info("watch.directory_armed", camera=camera.name, directory=str(directory))
                added.append((camera, directory))
        return added

    def check(self) -> list[tuple[CameraConfig, Path]]:
        """Unschedule lost roots and rebuild dead observers; returns what to scan again.

        Cheap enough for every main-loop turn: thread liveness and the last
        answer of ``present`` per armed root, no file access.

        Raises:
            WatcherFailing: when an observer dies after MAX_REBUILDS rebuilds
                within REBUILD_WINDOW_SECONDS.
        """
        if not self._running:
            return []
        # Lost roots first: a deleted root's emitter stops itself (W10), and
        # that is a directory to wait for, not an observer to rebuild.
        self._forget_lost()
        rescan: list[tuple[CameraConfig, Path]] = []
        now = self._monotonic()
        for kind, observer in list(self._observers.items()):
            dead = _dead_threads(observer)
            if not dead:
                self._dead_since.pop(kind, None)
                continue
            # ``present`` may answer from a probe up to rebuild_grace old: wait that
            # long, so a root deleted just now is found lost, not rebuilt in vain.
            since = self._dead_since.setdefault(kind, now)
            if now - since >= self._rebuild_grace:
                del self._dead_since[kind]
                rescan += self._rebuild(kind, observer, dead)
        return rescan

    @property
    def degraded(self) -> tuple[str, ...]:
        """Why some cameras are watched worse than configured; empty when all is well."""
        return tuple(self._degraded[c.name] for c in self._cameras if c.name in self._degraded)

    def alive(self) -> bool:
        """Whether every observer thread and every emitter thread is still running."""
        return not any(_dead_threads(o) for o in self._observers.values())

    def stop(self) -> None:
        """Stop and join the observers, giving up on any stuck in a hung mount."""
        self._running = False
        observers = list(self._observers.values())
        stopper = threading.Thread(target=_stop_all, args=(observers,), daemon=True)
        stopper.start()
        stopper.join(_STOP_SECONDS)
        if stopper.is_alive():
            log.warning(
                "watch.stop_stuck",
                action="an emitter is stuck in a filesystem call (a hung mount?); "
                "exiting without waiting for it",
            )

    # --- arming -------------------------------------------------------------

    def _usable(self, camera: CameraConfig, directory: Path) -> bool:
        state = self._present(camera.name, directory)
        if state is None:  # no answer yet (a hung mount?): the service reports stalls
            return False
        if state == "missing":
            log.warning(
                "watch.directory_missing",
                camera=camera.name,
                directory=str(directory),
                action=f"create it or fix [cameras.{camera.name}] watch; looked for again "
                "every 30 s",
            )
            return False
        if state == NOT_A_DIRECTORY:
            log.error(
                "watch.not_a_directory",
                camera=camera.name,
                directory=str(directory),
                action=f"a file stands where the directory should be: move it away or fix "
                f"[cameras.{camera.name}] watch; looked for again every 30 s",
            )
            return False
        if state == "unreadable":
            log.error(
                "watch.directory_unreadable",
                camera=camera.name,
                directory=str(directory),
                action="give the service's user read access to it",
            )
            return False
        return True

    def _arm(
        self, camera: CameraConfig, directories: Sequence[Path]
    ) -> list[tuple[CameraConfig, Path]]:
        """Schedule ``directories`` on the camera's observer; returns those now armed."""
        if not directories:
            return []
        kind = self._kind[camera.name]
        armed = []
        try:
            observer = self._observer(kind)
            for directory in directories:
                if self._schedule(observer, camera, directory):
                    armed.append((camera, directory))
        except OSError as error:
            limit = _INOTIFY_LIMITS.get(error.errno or 0)
            if kind != _NATIVE or limit is None:
                raise
            return self._fall_back(camera, [*self.watching[camera.name], *directories], limit)
        return armed

    def _observer(self, kind: _Kind) -> BaseObserver:
        """The running observer of ``kind``, built and started if there is none yet."""
        observer = self._observers.get(kind)
        if observer is not None:
            return observer
        observer = self._native() if kind.interval is None else self._polling(kind.interval)
        try:
            # Started empty: each emitter then starts in schedule(), so an
            # inotify limit (W9) surfaces for the camera and directory it hits.
            observer.start()
        except BaseException:
            _discard(observer)
            raise
        self._observers[kind] = observer
        return observer

    def _schedule(self, observer: BaseObserver, camera: CameraConfig, directory: Path) -> bool:
        """Watch ``directory`` recursively; native inotify limits propagate, the rest is logged."""
        handler = PathHandler(camera, directory, self._sink)
        try:
            watch = observer.schedule(handler, str(directory), recursive=True)
        except OSError as error:
            # EMFILE from a polling snapshot is the process's own fd limit, not inotify's.
            if error.errno in _INOTIFY_LIMITS and self._kind[camera.name] == _NATIVE:
                raise
            # Gone or unreadable between the check and the watch: rearm retries it.
            log.warning(
                "watch.arm_failed",
                camera=camera.name,
                directory=str(directory),
                error=str(error),
                action=_REARM_ACTION,
            )
            return False
        self._watches[(camera.name, directory)] = watch
        self.watching[camera.name].append(directory)
        return True

    def _fall_back(
        self, camera: CameraConfig, directories: Sequence[Path], limit: _Limit
    ) -> list[tuple[CameraConfig, Path]]:
        """Move ``camera`` to a polling observer after an inotify limit (W9)."""
        interval = camera.poll_interval_seconds
        wanted = list(dict.fromkeys(directories))
        log.error(
            "watch.inotify_limit",
            camera=camera.name,
            directory=", ".join(str(d) for d in wanted),
            errno=limit.name,
            action=f"raise it (sysctl -w {limit.sysctl}, and persist it in /etc/sysctl.d/), "
            f"then restart biaswatch; polling every {interval:g} s meanwhile",
        )
        self._degraded[camera.name] = f"{camera.name}: polling every {interval:g} s, {limit.reason}"
        # Its native watches go too: one camera, one kind of observer.
        for directory in list(self.watching[camera.name]):
            self._unschedule(camera, directory)
        self._retire_if_idle(_NATIVE)
        self._kind[camera.name] = _Kind(interval)
        return self._arm(camera, wanted)

    def _unschedule(self, camera: CameraConfig, directory: Path) -> None:
        watch = self._watches.pop((camera.name, directory), None)
        observer = self._observers.get(self._kind[camera.name])
        if watch is not None and observer is not None:
            # Already gone if the observer cleared its watches as it stopped.
            with contextlib.suppress(KeyError):
                observer.unschedule(watch)
        self.watching[camera.name].remove(directory)

    def _retire_if_idle(self, kind: _Kind) -> None:
        observer = self._observers.get(kind)
        if observer is not None and not any(
            self._kind[name] == kind and dirs for name, dirs in self.watching.items()
        ):
            del self._observers[kind]
            _discard(observer)

    # --- checking -----------------------------------------------------------

    def _forget_lost(self) -> None:
        """Unschedule armed roots that no longer exist, so rearm() picks them up again."""
        for camera in self._cameras:
            armed = self.watching.get(camera.name, [])
            gone = ("missing", NOT_A_DIRECTORY)
            for directory in [d for d in armed if self._present(camera.name, d) in gone]:
                log.warning(
                    "watch.directory_lost",
                    camera=camera.name,
                    directory=str(directory),
                    action=f"restore it (or its mount); {_REARM_ACTION}",
                )
                self._unschedule(camera, directory)

    def _rebuild(
        self, kind: _Kind, observer: BaseObserver, dead: list[str]
    ) -> list[tuple[CameraConfig, Path]]:
        """Replace a dead observer by a new one with the same watches; returns them."""
        served = [c for c in self._cameras if self._kind.get(c.name) == kind]
        directories = {c.name: list(self.watching[c.name]) for c in served}
        log.error(
            "watch.observer_died",
            observer=kind.label,
            cameras=[c.name for c in served],
            directories=[str(d) for dirs in directories.values() for d in dirs],
            dead=dead,
            action="rebuilt and rescanned; if this repeats, look for errors just before it",
        )
        now = self._monotonic()
        while self._rebuilds and now - self._rebuilds[0] >= REBUILD_WINDOW_SECONDS:
            self._rebuilds.popleft()
        if len(self._rebuilds) >= MAX_REBUILDS:
            # Left dead on purpose: alive() stays False, so no WATCHDOG=1 either.
            raise WatcherFailing(
                f"watchdog observer ({kind.label}) died again after {MAX_REBUILDS} rebuilds "
                f"within {REBUILD_WINDOW_SECONDS:g} s; giving up so systemd restarts the service"
            )
        self._rebuilds.append(now)
        del self._observers[kind]
        _discard(observer)
        for camera in served:
            for directory in directories[camera.name]:
                self._watches.pop((camera.name, directory), None)
            self.watching[camera.name] = []
        rescan = []
        for camera in served:
            rescan += self._arm(camera, directories[camera.name])
        return rescan
