"""The service: one main loop that owns all state changes.

Threads and processes around it only report back: watchdog handlers queue
paths, apscheduler jobs queue set ids, each camera's lane (its own thread, so
that a hung mount stalls one camera only) returns frame records, a combine
child returns a temporary master. The main loop touches no camera's files. The main loop alone
writes the catalog, in one transaction per change, so there is never a
question of who changed what.

    events -> lane: readiness -> FITS complete? -> read -> calibrate (pool) -> catalog
           -> sets.decide -> combine (child process) -> publish -> catalog
"""

from __future__ import annotations

import datetime as dt
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from biaswatch import __version__
from biaswatch.catalog import Catalog, FrameRecord, SetRow, set_aside_if_corrupt
from biaswatch.combines import Combines
from biaswatch.config import CameraConfig, Config, load_config
from biaswatch.errors import ConfigError
from biaswatch.faults import mark_service
from biaswatch.lanes import Lanes
from biaswatch.mounts import Mount, check_state_dir
from biaswatch.nights import night_end
from biaswatch.notify import Notifier, SystemdNotifier, watchdog_interval
from biaswatch.overflow import listen_for_overflows
from biaswatch.publish import is_temporary
from biaswatch.sets import Action, Decision, Rules, SetState, decide
from biaswatch.watch import PathEvent, Watcher, WatcherFailing
from biaswatch.worker import start_server

log = structlog.get_logger("biaswatch.service")

# Missing watch directories are looked for again this often (seconds).
REARM_SECONDS = 30.0
# At start, the lanes' first look at their watch roots is awaited this long; a
# root on a hung mount is armed later, when its lane answers (rearm).
PROBE_SECONDS = 5.0
# At stop, frames being calibrated may finish within this; a lane stuck in a
# hung mount is left behind (its files are scanned again at the next start).
LANE_STOP_SECONDS = 15.0
# After an inotify overflow, rescans are this far apart (seconds) while it lasts.
OVERFLOW_SCAN_SECONDS = 2.0


class Clock(Protocol):
    """Wall time (aware UTC) and monotonic seconds."""

    def now(self) -> dt.datetime:
        """The current time, aware UTC."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        """The current time, aware UTC."""
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class SetDue:
    """A timer fired for a set: decide again."""

    set_id: int


@dataclass(frozen=True, slots=True)
class RetryDue:
    """A failed set's back-off has passed: try its combine again."""

    set_id: int


@dataclass(frozen=True, slots=True)
class Overflowed:
    """The kernel dropped inotify events (overflow.py): rescan now."""


@dataclass(frozen=True, slots=True)
class Wake:
    """Something finished in a worker thread: run the loop now."""


WAKE = Wake()


def open_catalog(path: Path, clock: Clock, mounts: Sequence[Mount] | None = None) -> Catalog:
    """The catalog, set aside first if SQLite finds it corrupt (reliability.md 22).

    Raises:
        ConfigError: it would live on a network filesystem, where WAL cannot work.
    """
    problem = check_state_dir(path.parent, mounts)
    if problem is not None:
        raise ConfigError([f"[service] state_dir: {problem}"])
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    aside = set_aside_if_corrupt(path, stamp)
    if aside is not None:
        action = "rebuilding from a full scan; masters already on disk are adopted"
        log.error("catalog.corrupt", moved_to=str(aside), action=action)
    return Catalog(path, now=clock.now)


class Service:
    """The biaswatch daemon for one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.notifier = notifier or SystemdNotifier()
        self.cameras = {c.name: c for c in config.cameras}
        self.catalog = open_catalog(config.service.state_dir / "catalog.sqlite", self.clock)
        self.work_dir = config.service.state_dir / "work"
        self.inbox: queue.Queue[PathEvent | SetDue | RetryDue | Overflowed | Wake] = queue.Queue()
        self.lanes = Lanes(
            config.cameras,
            config.site,
            self.work_dir,
            excluded=(config.service.masters_dir, config.service.state_dir),
            catalog=config.service.state_dir / "catalog.sqlite",
            wake=lambda: self.inbox.put(WAKE),
        )
        self.watcher = Watcher(config.cameras, self.inbox.put, present=self.lanes.present)
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            # apscheduler 3 skips a job more than 1 s late by default (base.py
            # _configure); a completion check must run however late it is.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self.combines = Combines(
            config,
            self.catalog,
            self.notifier,
            now=self.clock.now,
            wake=lambda: self.inbox.put(WAKE),
            retry_at=self._retry_at,
        )
        self._deferred: set[int] = set()
        self._combine_ready = threading.Event()  # the fork server has preloaded
        self._stop = threading.Event()
        self.reload_requested = False  # read by cli after run(): re-execute
        self._reload_asked = False
        self._degraded = ""
        self._unlisten: Callable[[], None] = lambda: None
        self._stalled: dict[str, float] = {}  # camera -> when its stall began (monotonic)
        self.exit_status = 0
        self._last_rearm = 0.0
        self._last_rescan = 0.0
        self._overflowed = False  # an overflow rescan is due
        self._last_overflow_scan = float("-inf")
        self._last_ping = 0.0
        self._ping_every = watchdog_interval()

    # --- lifecycle ----------------------------------------------------------

    def request_stop(self, _signum: int = signal.SIGTERM, _frame: object = None) -> None:
        """Ask the main loop to stop (signal handler)."""
        self._stop.set()

    def request_reload(self, _signum: int = signal.SIGHUP, _frame: object = None) -> None:
        """SIGHUP: check the config file again at the next turn (signal handler)."""
        self._reload_asked = True
        self.inbox.put(WAKE)

    def _reload(self) -> None:
        """A valid new config: stop cleanly, and cli re-executes the service with it.

        Everything the service knows is in the catalog and on disk, so starting afresh
        is the one way to apply any change (cameras, directories, settings) correctly.
        A config that does not load is logged and the running one kept.
        """
        self._reload_asked = False
        try:
            load_config(self.config.path)
        except ConfigError as exc:
            log.error("config.reload_failed", problems=exc.problems, action="kept the old config")
            return
        log.info("config.reloading", config=str(self.config.path))
        self.notifier.notify("RELOADING=1")
        self.reload_requested = True
        self._stop.set()

    def run(self) -> int:
        """Start, loop until asked to stop, shut down cleanly; returns the exit status."""
        self._start()
        try:
            while not self._stop.is_set():
                self.step(self.config.service.poll_seconds)
        finally:
            self._shutdown()
        return self.exit_status

    def _start(self) -> None:
        for directory in (self.config.service.masters_dir, self.work_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        mark_service()
        start_server(self.config.service.state_dir / "cache" / "numba", self._server_ready)
        self.combines.recover()
        self.lanes.start(PROBE_SECONDS)
        self._unlisten = listen_for_overflows(lambda: self.inbox.put(Overflowed()))
        self.watcher.start()
        self.scheduler.start()
        self.notifier.notify("READY=1")
        log.info(
            "service.started",
            version=__version__,
            config=str(self.config.path),
            cameras=sorted(self.cameras),
        )
        # The backlog scan runs after READY=1 (reliability.md 2.2): a large
        # archive must not make systemd time out the start.
        self._rescan(self.clock.monotonic(), "start")
        for row in self.catalog.sets_in("open"):
            self._evaluate(row.id)

    def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        log.info("service.stopping")
        self.watcher.stop()
        self._unlisten()
        self.scheduler.shutdown(wait=False)
        taken = self.lanes.stop(LANE_STOP_SECONDS, stalled=self._stalled)
        self.catalog.note_seen(taken.seen, taken.vanished)
        for record in taken.finished:
            self._record(record)
        self.combines.stop("service stopped during the combine")
        self.catalog.close()
        log.info("service.stopped")

    def _remove_temporaries(self) -> None:
        for root in (self.config.service.masters_dir, self.work_dir):
            for path in root.rglob(".*partial-*"):
                if is_temporary(path):
                    path.unlink(missing_ok=True)
                    log.info("service.removed_temporary", file=str(path))

    # --- the loop -----------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn of the main loop: events, readiness, results, timers' work."""
        self._drain(timeout)
        if self._reload_asked:
            self._reload()
        now = self.clock.monotonic()
        taken = self.lanes.take()
        if taken.seen or taken.vanished:
            self.catalog.note_seen(taken.seen, taken.vanished)
        joined = [self._record(record) for record in taken.finished]
        # Record the whole batch first, then judge each set once with all its frames.
        for set_id in sorted({s for s in joined if s is not None}):
            self._evaluate(set_id)
        self._evaluate_deferred()
        if self._combine_ready.is_set():
            self.combines.server_ready()
        self.combines.step()
        self._supervise_watches(now)
        self._ping(now)

    def _supervise_watches(self, now: float) -> None:
        try:
            rebuilt = self.watcher.check()
        except WatcherFailing as exc:  # observers keep dying: let systemd restart us
            log.error("watch.failing", error=str(exc), action="exiting; systemd restarts it")
            self.exit_status = 1
            self._stop.set()
            return
        for camera, directory in rebuilt:  # observers rebuilt after a fault: look now
            self.lanes.scan(camera.name, directory, "rebuilt")
        if now - self._last_rearm >= REARM_SECONDS:
            self._last_rearm = now
            for camera, directory in self.watcher.rearm():
                self.lanes.scan(camera.name, directory, "rearmed")
        if now - self._last_rescan >= self.config.service.rescan_minutes * 60:
            self._rescan(now, "rescan")
        # An overflow burst brings many records: one rescan per OVERFLOW_SCAN_SECONDS,
        # and one more after the burst for files written while the first one ran.
        if self._overflowed and now - self._last_overflow_scan >= OVERFLOW_SCAN_SECONDS:
            self._overflowed = False
            self._last_overflow_scan = now
            self._rescan(now, "overflow")
        self._watch_stalls(now)
        self._report_degraded()

    def _watch_stalls(self, now: float) -> None:
        """Report cameras whose lane has had no answer from their files for stall_seconds."""
        limit = self.config.service.stall_seconds
        for camera, (seconds, doing) in self.lanes.stuck(now).items():
            if seconds >= limit and camera not in self._stalled:
                self._stalled[camera] = now - seconds
                log.warning(
                    "camera.stalled",
                    camera=camera,
                    seconds=round(seconds, 1),
                    doing=doing,
                    action="check the disk or mount holding its directories (NFS server "
                    "down?); other cameras go on, and this one resumes by itself",
                )
            elif seconds < limit and camera in self._stalled:
                began = self._stalled.pop(camera)
                log.info("camera.recovered", camera=camera, after_seconds=round(now - began, 1))

    def _report_degraded(self) -> None:
        stalled = [f"{camera}: no answer from its files" for camera in sorted(self._stalled)]
        degraded = "; ".join([*self.watcher.degraded, *stalled])
        if degraded != self._degraded:
            self._degraded = degraded
            status = f"degraded: {degraded}" if degraded else "watching"
            self.notifier.notify(f"STATUS={status}")

    def _rescan(self, now: float, reason: str) -> None:
        """Have every lane list its watched directories: events are only hints."""
        self._last_rescan = now
        for camera in self.config.cameras:
            for directory in self.watcher.watching.get(camera.name, []):
                self.lanes.scan(camera.name, directory, reason)

    def _drain(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(item, SetDue):
                self._evaluate(item.set_id)
            elif isinstance(item, RetryDue):
                self.combines.queue(item.set_id)
            elif isinstance(item, PathEvent):
                self.lanes.note(item)
            elif isinstance(item, Overflowed) and not self._overflowed:
                self._overflowed = True
                log.warning(
                    "watch.overflow",
                    action="events were lost; rescanning now. If this repeats, raise "
                    "fs.inotify.max_queued_events (sysctl; default 16384)",
                )
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _record(self, record: FrameRecord) -> int | None:
        """Write a frame record; returns the set it joined, if any."""
        if record.status != "valid":
            self.catalog.record_frame(record)
            return None
        before = self.catalog.frame(Path(record.path))
        if before is not None and before["status"] == "seen":
            before = None  # noticed, never judged: this is its first record
        if before is not None and before["sha256"] == record.sha256:
            self.catalog.touch_frame(record.path, record.size, record.mtime_ns)
            return None  # touched, not changed: it is in its set already
        twin = self.catalog.same_content(record.camera, str(record.sha256), record.path)
        if twin is not None:
            reason = f"duplicate of {twin} (same content): not combined twice"
            log.warning("frame.duplicate", camera=record.camera, file=record.path, twin=twin)
            self.catalog.record_frame(replace(record, status="ignored", reason=reason))
            return None
        if before is None:
            return self.catalog.add_to_set(record)
        set_id, left = self.catalog.replace_frame(record)
        action = (
            "updated in its set, not combined yet"
            if left is None
            else "its set is combined again as a new master version; the old one is kept"
        )
        log.warning(
            "frame.changed",
            camera=record.camera,
            file=record.path,
            set=set_id,
            previous_set=left,
            action=action,
        )
        return set_id

    # --- sets -----------------------------------------------------------

    def _evaluate(self, set_id: int) -> None:
        row = self.catalog.get_set(set_id)
        camera = self.cameras.get(row.camera)
        if row.state != "open" or camera is None:
            return  # not waiting, or its camera was removed from the config
        decision = self._decide(row, camera)
        partial = row.frames < camera.expected_frames
        # Quiet or night-end decisions wait until this camera's frames in
        # flight are recorded: a backlog of an ended night is judged once,
        # whole, not once per frame as each one lands.
        if (
            decision.action is not Action.WAIT
            and partial
            and row.camera in self.lanes.busy_cameras()
        ):
            self._deferred.add(set_id)
            return
        self._act(row, decision)

    def _decide(self, row: SetRow, camera: CameraConfig) -> Decision:
        site = self.config.site
        night = dt.date.fromisoformat(row.night)
        end = night_end(night, site.zone, site.night_rollover, camera.night_end)
        quiet = dt.timedelta(minutes=camera.quiet_minutes)
        rules = Rules(camera.expected_frames, camera.min_frames, quiet)
        return decide(SetState(row.frames, row.last_arrival, end), rules, self.clock.now())

    def _act(self, row: SetRow, decision: Decision) -> None:
        bound = log.bind(camera=row.camera, night=row.night, set=row.id, frames=row.frames)
        if decision.action is Action.COMBINE:
            self.catalog.set_state(row.id, "closed", decision.reason)
            bound.info("set.completed", reason=decision.reason)
            self.combines.queue(row.id)
        elif decision.action is Action.INSUFFICIENT:
            self.catalog.set_state(row.id, "insufficient", decision.reason)
            bound.warning("set.insufficient", reason=decision.reason)
        elif decision.recheck_at is not None:
            recheck = decision.recheck_at.isoformat()
            bound.debug("set.waiting", reason=decision.reason, recheck_at=recheck)
            self.scheduler.add_job(
                self.inbox.put,
                "date",
                run_date=decision.recheck_at,
                args=[SetDue(row.id)],
                id=f"set-{row.id}",
                replace_existing=True,
            )

    def _evaluate_deferred(self) -> None:
        if not self._deferred:
            return
        busy = self.lanes.busy_cameras()
        for set_id in list(self._deferred):
            if self.catalog.get_set(set_id).camera not in busy:
                self._deferred.discard(set_id)
                self._evaluate(set_id)

    def _server_ready(self, seconds: float) -> None:
        """The combine fork server serves children (called on its probe's thread)."""
        log.info("combine.server_ready", seconds=round(seconds, 2))
        self._combine_ready.set()
        self.inbox.put(WAKE)

    def _retry_at(self, set_id: int, when: dt.datetime) -> None:
        """Queue a closed set for another try at ``when`` (from Combines)."""
        self.scheduler.add_job(
            self.inbox.put,
            "date",
            run_date=when,
            args=[RetryDue(set_id)],
            id=f"retry-{set_id}",
            replace_existing=True,
        )

    # --- health -------------------------------------------------------------

    def _ping(self, now: float) -> None:
        # WATCHDOG=1 only when this loop is turning and the watchers live
        # (reliability.md 2.2): a dead observer must not look healthy.
        if self._ping_every is None or now - self._last_ping < self._ping_every:
            return
        if self.watcher.alive():
            self.notifier.notify("WATCHDOG=1")
            self._last_ping = now
        else:
            log.error("watch.observer_dead", action="restarting via the systemd watchdog")
