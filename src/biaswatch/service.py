"""The service: one main loop that owns all state changes.

Threads and processes around it only report back: watchdog handlers queue
paths, apscheduler jobs queue set ids, a calibration thread returns frame
records, a combine child returns a temporary master. The main loop alone
writes the catalog, in one transaction per change, so there is never a
question of who changed what.

    events -> readiness -> FITS complete? -> calibrate (thread) -> catalog
           -> sets.decide -> combine (child process) -> publish -> catalog
"""

from __future__ import annotations

import datetime as dt
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from biaswatch import __version__
from biaswatch.catalog import Catalog, FrameRecord, SetRow
from biaswatch.config import CameraConfig, Config
from biaswatch.intake import Intake
from biaswatch.nights import night_end
from biaswatch.notify import Notifier, SystemdNotifier, watchdog_interval
from biaswatch.publish import MasterInfo, input_names, is_temporary, master_path, publish_master
from biaswatch.sets import Action, Decision, Rules, SetState, decide, input_digest
from biaswatch.watch import PathEvent, Watcher
from biaswatch.worker import CombineJob, CombineProcess, CombineResult, start_server

log = structlog.get_logger("biaswatch.service")

# Missing watch directories are looked for again this often (seconds).
REARM_SECONDS = 30.0


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
class Wake:
    """Something finished in a worker thread: run the loop now."""


WAKE = Wake()


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
        self.catalog = Catalog(config.service.state_dir / "catalog.sqlite", now=self.clock.now)
        self.work_dir = config.service.state_dir / "work"
        self.inbox: queue.Queue[PathEvent | SetDue | Wake] = queue.Queue()
        self.intake = Intake(
            self.cameras,
            config.site,
            self.work_dir,
            excluded=(config.service.masters_dir, config.service.state_dir),
            known=self.catalog.is_known,
            recorded=self.catalog.is_recorded,
            wake=lambda: self.inbox.put(WAKE),
        )
        self.watcher = Watcher(config.cameras, self.inbox.put)
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            # apscheduler 3 skips a job more than 1 s late by default (base.py
            # _configure); a completion check must run however late it is.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self._queued_sets: deque[int] = deque()
        self._deferred: set[int] = set()
        self._combine: CombineProcess | None = None
        self._combine_ready = threading.Event()  # the fork server has preloaded
        self._stop = threading.Event()
        self._last_rearm = 0.0
        self._last_ping = 0.0
        self._ping_every = watchdog_interval()

    # --- lifecycle ----------------------------------------------------------

    def request_stop(self, _signum: int = signal.SIGTERM, _frame: object = None) -> None:
        """Ask the main loop to stop (signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Start, loop until asked to stop, shut down cleanly; returns the exit status."""
        self._start()
        try:
            while not self._stop.is_set():
                self.step(self.config.service.poll_seconds)
        finally:
            self._shutdown()
        return 0

    def _start(self) -> None:
        for directory in (self.config.service.masters_dir, self.work_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        start_server(self.config.service.state_dir / "cache" / "numba", self._server_ready)
        reopened = self.catalog.reopen_interrupted()
        self.watcher.start()
        self.scheduler.start()
        self.notifier.notify("READY=1")
        log.info(
            "service.started",
            version=__version__,
            config=str(self.config.path),
            cameras=sorted(self.cameras),
            reopened_sets=reopened,
        )
        # The backlog scan runs after READY=1 (reliability.md 2.2): a large
        # archive must not make systemd time out the start.
        for camera in self.config.cameras:
            for directory in self.watcher.watching.get(camera.name, []):
                self.intake.scan(camera, directory, self.clock.monotonic())
        for row in self.catalog.sets_in("open"):
            self._evaluate(row.id)

    def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        log.info("service.stopping")
        self.watcher.stop()
        self.scheduler.shutdown(wait=False)
        for record in self.intake.close():
            self._record(record)
        if self._combine is not None:
            self._abandon_combine(self._combine, "service stopped during the combine")
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
        now = self.clock.monotonic()
        joined = [self._record(record) for record in self.intake.poll(now)]
        # Record the whole batch first, then judge each set once with all its frames.
        for set_id in sorted({s for s in joined if s is not None}):
            self._evaluate(set_id)
        self._evaluate_deferred()
        self._poll_combine()
        self._start_next_combine()
        if now - self._last_rearm >= REARM_SECONDS:
            self._last_rearm = now
            for camera, directory in self.watcher.rearm():
                self.intake.scan(camera, directory, now)
        self._ping(now)

    def _drain(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(item, SetDue):
                self._evaluate(item.set_id)
            elif isinstance(item, PathEvent):
                self.intake.note(item.camera, item.path, self.clock.monotonic(), closed=item.closed)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _record(self, record: FrameRecord) -> int | None:
        """Write a frame record; returns the set it joined, if any."""
        if record.status != "valid":
            self.catalog.record_frame(record)
            return None
        return self.catalog.add_to_set(record)

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
            and row.camera in self.intake.busy_cameras()
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
            self.catalog.set_state(row.id, "combining", decision.reason)
            bound.info("set.completed", reason=decision.reason)
            self._queued_sets.append(row.id)
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
        busy = self.intake.busy_cameras()
        for set_id in list(self._deferred):
            if self.catalog.get_set(set_id).camera not in busy:
                self._deferred.discard(set_id)
                self._evaluate(set_id)

    def _server_ready(self, seconds: float) -> None:
        """The combine fork server serves children (called on its probe's thread)."""
        log.info("combine.server_ready", seconds=round(seconds, 2))
        self._combine_ready.set()
        self.inbox.put(WAKE)

    def _start_next_combine(self) -> None:
        if self._combine is not None or not self._queued_sets or not self._combine_ready.is_set():
            return
        set_id = self._queued_sets.popleft()
        job = self._job_for(set_id)
        log.info(
            "combine.started",
            camera=job.info.camera,
            night=job.info.night,
            set=set_id,
            frames=len(job.inputs),
            output=job.final,
        )
        self._combine = CombineProcess(job, wake=lambda: self.inbox.put(WAKE))

    def _job_for(self, set_id: int) -> CombineJob:
        row = self.catalog.get_set(set_id)
        frames = self.catalog.set_inputs(set_id)
        camera = self.cameras[row.camera]
        info = MasterInfo(
            camera=row.camera,
            night=row.night,
            sequence=self.catalog.next_sequence(row.camera, row.night),
            geometry=row.geometry,
            raw_names=input_names([f["path"] for f in frames]),
            settings=camera.combine,
            mem_limit=self.config.service.mem_limit,
            input_digest=input_digest([f["sha256"] for f in frames]),
        )
        final = master_path(self.config.service.masters_dir, info)
        return CombineJob(set_id, tuple(f["calibrated"] for f in frames), str(final), info)

    def _poll_combine(self) -> None:
        if self._combine is None:
            return
        result = self._combine.poll()
        if result is None:
            return
        job, self._combine = self._combine.job, None
        try:
            self._publish(job, result)
        except Exception as exc:  # one set's boundary: record it, carry on
            log.exception(
                "set.failed", camera=job.info.camera, night=job.info.night, set=job.set_id
            )
            self.catalog.set_state(job.set_id, "failed", f"publishing failed: {exc}")

    def _publish(self, job: CombineJob, result: CombineResult) -> None:
        if result.temporary is None:
            self.catalog.set_state(job.set_id, "failed", result.reason)
            info = job.info
            log.error(
                "set.failed",
                camera=info.camera,
                night=info.night,
                set=job.set_id,
                reason=result.reason,
            )
            return
        final = publish_master(
            self.catalog,
            self.config.service.masters_dir,
            job.set_id,
            job.info,
            Path(result.temporary),
            Path(job.final),
            self.clock.now(),
            result.seconds,
            result.startup,
        )
        self.notifier.notify(f"STATUS=last master: {final.name}")

    def _abandon_combine(self, running: CombineProcess, reason: str) -> None:
        running.stop()
        final = Path(running.job.final)
        for leftover in final.parent.glob(f".{final.name}.partial-*"):
            leftover.unlink(missing_ok=True)
        self.catalog.set_state(running.job.set_id, "open", reason)
        log.warning("combine.abandoned", set=running.job.set_id, reason=reason)

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
