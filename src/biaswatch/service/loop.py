"""The service: one main loop that owns all state changes.

Threads and processes around it only report back: watchdog handlers queue
paths, apscheduler jobs queue set ids, each camera's lane (its own thread, so
that a hung mount stalls one camera only) returns frame records, a combine
child returns a temporary master. The main loop touches no camera's files,
and it alone writes the catalog, in one transaction per change, so there is
never a question of who changed what.

    events -> lane: readiness -> FITS complete? -> read -> calibrate (pool) -> catalog
           -> sets.decide -> combine (child process) -> publish -> catalog
"""

from __future__ import annotations

import datetime as dt
import queue
import signal
import sqlite3
import threading
from collections.abc import Callable

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from biaswatch import __version__
from biaswatch.catalog.open import open_catalog
from biaswatch.catalog.record import record_frame, record_frames
from biaswatch.catalog.rows import SetRow
from biaswatch.combine.child import ForkServer, start_server
from biaswatch.combine.factory import make_executor
from biaswatch.combine.master_file import is_temporary
from biaswatch.config import CameraConfig, Config
from biaswatch.frames import lanes
from biaswatch.frames.lanes import Lanes
from biaswatch.rules.sets import Action, Decision, decide_set
from biaswatch.service.alarms import NIGHT_CHECK, Alarms, night_end_check
from biaswatch.service.combines import Combines
from biaswatch.service.health import Health
from biaswatch.service.inbox import WAKE, Inbox, NightEnded, Overflowed, RetryDue, SetDue
from biaswatch.service.metrics import Metrics, live_state
from biaswatch.service.notices import NoticeSender
from biaswatch.service.reload import Reloads
from biaswatch.service.screening import screen
from biaswatch.system.clock import Clock, SystemClock
from biaswatch.system.faults import mark_service
from biaswatch.system.notify import Notifier, SystemdNotifier
from biaswatch.watch.handler import PathEvent
from biaswatch.watch.observers import Watcher, WatcherFailing
from biaswatch.watch.overflow import listen_for_overflows

log = structlog.get_logger(__name__)

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
        self.catalog = open_catalog(config.service.state_dir / "catalog.sqlite", self.clock.now)
        self.work_dir = config.service.work
        self.inbox: Inbox = queue.Queue()
        self.executor = make_executor(config.service, wake=lambda: self.inbox.put(WAKE))
        self.lanes = Lanes(
            config.cameras,
            config.site,
            self.work_dir,
            excluded=(config.service.masters_dir, config.service.state_dir, self.work_dir),
            catalog=config.service.state_dir / "catalog.sqlite",
            wake=lambda: self.inbox.put(WAKE),
            calibrator=self.executor.calibrator(),
        )
        self.watcher = Watcher(
            config.cameras,
            self.inbox.put,
            present=self.lanes.present,
            rebuild_grace=lanes.PROBE_SECONDS + 2 * lanes.TURN_SECONDS,
        )
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            # apscheduler 3 skips a job more than 1 s late by default (base.py
            # _configure); a completion check must run however late it is.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        service = config.service
        self.metrics = Metrics(
            service.metrics_file, service.metrics_address, service.metrics_seconds, self.clock.now
        )
        self.alarms = Alarms(config.alerts, counted=self.metrics.alarm)
        self.notices = NoticeSender(
            config.service.state_dir / "catalog.sqlite", config.notify, self.clock.now
        )
        self.health = Health(self.notifier, config.service.stall_seconds)
        self.reloads = Reloads(config, self.notifier)
        self.combines = Combines(
            config,
            self.catalog,
            self.health.published,
            now=self.clock.now,
            wake=lambda: self.inbox.put(WAKE),
            retry_at=self._retry_at,
            alarm=self.alarms,
            executor=self.executor,
        )
        self._deferred: set[int] = set()
        self._combine_ready = threading.Event()  # the fork server has preloaded
        self._server: ForkServer | None = None  # local executor only
        self._stop = threading.Event()
        self.reload_requested = False  # read by cli after run(): re-execute
        self._reload_asked = False
        self._unlisten: Callable[[], None] = lambda: None
        self.exit_status = 0
        self._last_rearm = 0.0
        self._last_rescan = 0.0
        self._overflowed = False  # an overflow rescan is due
        self._last_overflow_scan = float("-inf")

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

        A config that does not load is logged and the running one kept (service/reload.py).
        """
        self._reload_asked = False
        if self.reloads.check():
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
        if self.executor.name == "local":
            self._server = start_server(self._server_ready)
        else:  # the cluster's workers combine: no fork server here
            self._combine_ready.set()
        self.combines.recover()  # its repair_latest queues a latest.moved a crash left out
        self.notices.start()
        self.lanes.start(PROBE_SECONDS)
        self._unlisten = listen_for_overflows(lambda: self.inbox.put(Overflowed()))
        self.watcher.start()
        self._schedule_night_checks()
        self.scheduler.start()
        self.metrics.note(live_state(list(self.cameras), {}, ()))  # its first write has them
        self.metrics.start(self.config.service.state_dir / "catalog.sqlite")
        self.notifier.notify("READY=1")
        log.info(
            "service.started",
            version=__version__,
            config=str(self.config.path),
            cameras=sorted(self.cameras),
        )
        self.reloads.answer_handed_down()  # "reloaded": the new config is in effect
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
        taken = self.lanes.stop(LANE_STOP_SECONDS, stalled=self.health.stalled)
        self.catalog.note_seen(taken.seen, taken.vanished)
        for record in taken.finished:
            record_frame(self.catalog, record)
        self.combines.stop("service stopped during the combine")
        self.combines.previews.finish()
        if self._server is not None:  # its children were stopped just above
            self._server.stop()
        self.executor.close()
        self.metrics.stop()  # its last write, and its connection closed before ours
        self.notices.stop()  # before the catalog: the last connection closed checkpoints
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
        joined = record_frames(self.catalog, taken.finished)
        # Record the whole batch first, then judge each set once with all its frames.
        for set_id in sorted(set(joined)):
            self._evaluate(set_id)
        self._evaluate_deferred()
        if self._combine_ready.is_set():
            self.combines.server_ready()
        self.combines.step()
        self.notices.wake()  # a master published or a link moved queues notices
        self._supervise_watches(now)
        self.health.ping(now, watchers_alive=self.watcher.alive())
        stalled, degraded = self.health.stalled, self.watcher.degraded
        self.metrics.note(live_state(list(self.cameras), stalled, degraded))

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
        self.health.stalls(now, self.lanes.stuck(now))
        self.health.status(self.watcher.degraded)

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
            elif isinstance(item, NightEnded):
                self._night_check(item.camera)
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

    # --- sets -----------------------------------------------------------

    def _evaluate(self, set_id: int) -> None:
        bound = log.bind(set=set_id)
        try:
            row = self.catalog.get_set(set_id)
            bound = bound.bind(camera=row.camera, night=row.night)
            camera = self.cameras.get(row.camera)
            if row.state != "open" or camera is None:
                return  # not waiting, or its camera was removed from the config
            self._judge(row, camera)
        except Exception as exc:  # one set's boundary: no stored row may stop the service
            bound.exception("set.evaluate_failed", action="set aside as insufficient")
            self._set_aside(set_id, f"could not be judged: {type(exc).__name__}: {exc}")

    def _judge(self, row: SetRow, camera: CameraConfig) -> None:
        night = dt.date.fromisoformat(row.night)
        if not camera.date_range.contains_night(night, self.clock.now()):
            # A night no date_range frame can have (an older catalog, a header dated
            # 9999): waiting for its night_end would be waiting for ever.
            reason = f"night {row.night} is outside date_range {camera.date_range.describe()}"
            log.warning(
                "set.set_aside", camera=row.camera, night=row.night, set=row.id, reason=reason
            )
            self._set_aside(row.id, reason)
            return
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
            self._deferred.add(row.id)
            return
        self._act(row, decision)

    def _set_aside(self, set_id: int, reason: str) -> None:
        """'insufficient' with the reason: never judged again unless a frame joins it."""
        self._deferred.discard(set_id)
        try:
            self.catalog.set_state(set_id, "insufficient", f"set aside: {reason}")
        except sqlite3.Error as exc:  # the catalog itself failing: said, not raised
            log.error("set.set_aside_failed", set=set_id, error=str(exc))

    def _decide(self, row: SetRow, camera: CameraConfig) -> Decision:
        night = dt.date.fromisoformat(row.night)
        site, now = self.config.site, self.clock.now()
        return decide_set(row.frames, row.last_arrival, night, camera, site, now)

    def _act(self, row: SetRow, decision: Decision) -> None:
        bound = log.bind(camera=row.camera, night=row.night, set=row.id, frames=row.frames)
        if decision.action is Action.COMBINE:
            camera = self.cameras[row.camera]
            kept = screen(self.catalog, row.id, camera)
            if kept < camera.min_frames:
                reason = f"{row.frames - kept} frame(s) left out by QC, {kept} left: fewer "
                reason += f"than min_frames={camera.min_frames}"
                self.catalog.set_state(row.id, "insufficient", reason)
                bound.warning("set.insufficient", reason=reason)
                self.alarms(
                    "set_insufficient",
                    camera=row.camera,
                    night=row.night,
                    set=row.id,
                    reason=reason,
                )
                return
            self.catalog.set_state(row.id, "closed", decision.reason)
            bound.info("set.completed", reason=decision.reason, kept=kept)
            self.combines.queue(row.id)
        elif decision.action is Action.INSUFFICIENT:
            self.catalog.set_state(row.id, "insufficient", decision.reason)
            bound.warning("set.insufficient", reason=decision.reason)
            self.alarms(
                "set_insufficient",
                camera=row.camera,
                night=row.night,
                set=row.id,
                reason=decision.reason,
            )
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
            try:
                camera = self.catalog.get_set(set_id).camera
            except Exception:  # a row that cannot be read: _evaluate sets it aside
                camera = None
            if camera not in busy:
                self._deferred.discard(set_id)
                self._evaluate(set_id)

    def _schedule_night_checks(self) -> None:
        """Each camera's night is checked NIGHT_CHECK_MINUTES after its night_end."""
        for camera in self.config.cameras:
            at = dt.datetime.combine(dt.date(2000, 1, 1), camera.night_end) + NIGHT_CHECK
            self.scheduler.add_job(
                self.inbox.put,
                "cron",
                hour=at.hour,
                minute=at.minute,
                timezone=self.config.site.zone,
                args=[NightEnded(camera.name)],
                id=f"night-{camera.name}",
            )

    def _night_check(self, camera: str) -> None:
        night_end_check(self.config, self.catalog, self.alarms, camera, self.clock.now())

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
