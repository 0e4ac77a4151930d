"""Closed sets to published masters: the queue, memory slots, retries and recovery.

A set judged complete is ``closed`` and queued here. Combines run through an
executor (combine/executors.py): child processes here (combine/child.py), as many
at once as ``max_combine_memory // mem_limit`` allows, or tasks on a Dask cluster
(combine/dask_executor.py). The combine answers with its temporary master and
QC, reported back through the main loop, which alone publishes it
(publish/master.py) and writes the catalog, the attempt history included. A
failed try sends the set back to ``closed`` and retries it later (MAX_TRIES in
all); a set that keeps failing ends ``failed`` with the last reason.

Each set's master sequence number is reserved in the catalog when its combine
first starts and kept across retries and restarts, so sets combining at once
never share a name (issue 11, finding 4); a temporary's name carries its set, so
clean-up touches that set's temporaries only.

At start, :meth:`Combines.recover` makes the catalog and the masters directory
agree after a crash: sets left combining are closed again, a master already on
disk for a closed set's exact inputs is adopted instead of written twice (judged
and recorded by the same code as a fresh master, publish/master.py), a set
whose master is already recorded is marked done, a master file nobody lists is
logged (``master.orphan``) and left alone. Whatever it meets, it sets that one
set aside (``failed``, with the reason; retried at the next start) and carries
on: it never stops the start. Each camera's ``latest.fits`` is checked then and
every LATEST_CHECK_SECONDS, and pointed at its newest master when it is not.
"""

from __future__ import annotations

import datetime as dt
import errno
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from biaswatch.catalog.store import Catalog
from biaswatch.combine.child import CombineJob, CombineResult
from biaswatch.combine.executors import CombineExecutor, LocalExecutor, Running
from biaswatch.combine.master_file import MasterInfo, master_path, temporaries_of
from biaswatch.config import Config
from biaswatch.publish.index import index_settings, write_index
from biaswatch.publish.master import (
    NewMaster,
    adopt_master,
    find_published,
    input_names,
    publish_master,
    repair_latest,
    report_orphans,
)
from biaswatch.publish.placement import either_place_taken, reconcile
from biaswatch.publish.previews import Previews
from biaswatch.rules.places import path_for_state
from biaswatch.rules.sets import input_digest

log = structlog.get_logger(__name__)

# Tries per set before it is 'failed': banzai retries a stack up to 3 times
# (reliability.md 2.3). A try that fails waits combine_retry_seconds * 2**(tries-1)
# first: a full disk or an unmounted masters directory gets minutes to be mended.
MAX_TRIES = 3
# How often each camera's latest.fits is checked (seconds): a deleted or wrong link
# is mended within this. One indexed query and a stat per camera: nothing to measure.
LATEST_CHECK_SECONDS = 10.0


class Combines:
    """The combine queue and the running combine children."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        published: Callable[[Path], None],
        now: Callable[[], dt.datetime],
        wake: Callable[[], None],
        retry_at: Callable[[int, dt.datetime], None],
        alarm: Callable[..., None] = lambda _name, **_details: None,
        executor: CombineExecutor | None = None,
        previews: Previews | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # executor, previews and monotonic are seams for tests (biaswatch.testing.fakes):
        # the defaults start processes and read the real clock.
        self._alarm = alarm
        self.executor = executor or LocalExecutor(config.service.combine_slots)
        self._config = config
        self._catalog = catalog
        self._published = published  # tells systemd's STATUS= line
        self._now = now
        self._wake = wake
        self._retry_at = retry_at
        self._queue: deque[int] = deque()
        self._running: dict[int, Running] = {}
        self.previews = previews or Previews()
        self._ready = False  # the fork server has preloaded (combine/child.py start_server)
        self._monotonic = monotonic
        self._latest_checked = monotonic()
        self._latest_missing: set[str] = set()  # newest masters whose file is gone, logged once

    def server_ready(self) -> None:
        """Combines may start (called by the main loop once the fork server serves)."""
        self._ready = True

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running (previews included)."""
        return not self._queue and not self._running and self.previews.idle

    def queue(self, set_id: int) -> None:
        """Combine this closed set when a slot is free."""
        if set_id not in self._queue and set_id not in self._running:
            self._queue.append(set_id)

    def step(self) -> None:
        """Publish what finished, then start queued sets while slots are free."""
        self.previews.step()
        self._record_attempts()
        for set_id, running in list(self._running.items()):
            result = running.poll()
            if result is not None:
                del self._running[set_id]
                self._record_attempts()
                if result.worker:  # its own answer ends the attempt, whatever events lag
                    outcome = "done" if result.temporary is not None else "failed"
                    self._catalog.attempt_answered(
                        set_id,
                        result.task,
                        self.executor.name,
                        result.worker,
                        outcome,
                        result.reason,
                    )
                self._finish(running.job, result)
                self._catalog.attempts_lost(set_id, "no answer: its worker or scheduler was lost")
        slots = self.executor.slots
        while self._ready and self._queue and len(self._running) < slots:
            self._start(self._queue.popleft())
        if self._monotonic() - self._latest_checked >= LATEST_CHECK_SECONDS:
            self.check_latest()

    def _record_attempts(self) -> None:
        for event in self.executor.events():
            if event.kind == "started":
                executor = event.executor or self.executor.name  # a Dask combine run here
                self._catalog.attempt_started(event.set_id, event.task, executor, event.worker)
            else:
                self._catalog.attempt_ended(
                    event.set_id, event.task, event.worker, event.kind, event.reason
                )

    def stop(self, reason: str) -> None:
        """Stop every running combine; their sets are closed again for the next start."""
        for running in self._running.values():
            running.stop()
            self._catalog.attempts_lost(running.job.set_id, f"abandoned: {reason}")
            for leftover in temporaries_of(Path(running.job.final), running.job.set_id):
                leftover.unlink(missing_ok=True)
            self._catalog.set_state(running.job.set_id, "closed", reason)
            log.warning("combine.abandoned", set=running.job.set_id, reason=reason)
        self._running.clear()

    # --- recovery -------------------------------------------------------

    def recover(self) -> None:
        """After a crash: adopt masters already written, queue the other closed sets.

        Each set is its own unit: whatever its rows or files hold, it is adopted,
        queued, or set aside with the reason, and the next one is looked at.
        """
        cameras = {camera.name for camera in self._config.cameras}
        indexed = cameras | self._reconcile()
        for set_id in self._catalog.requeue_interrupted():
            try:
                if self._camera_removed(set_id, cameras):
                    continue
                if not self._adopt(set_id):
                    self.queue(set_id)
            except Exception as exc:  # one set's boundary: set it aside, carry on
                self._set_aside(set_id, "combine.recover_failed", exc)
        self._report_orphans()
        self.check_latest()
        for camera in sorted(indexed):  # once at each start: an existing install gets one
            self.write_index(camera)

    def write_index(self, camera: str) -> None:
        """Rewrite the camera's index.json from the catalog (publish/index.py); never raises."""
        settings = index_settings(self._config, camera)
        write_index(self._catalog, self._config.service.masters_dir, camera, settings)

    def _camera_removed(self, set_id: int, cameras: set[str]) -> bool:
        """A set of a camera no longer configured is left as it is (combined if it returns)."""
        row = self._catalog.get_set(set_id)
        if row.camera in cameras:
            return False
        log.warning(
            "set.camera_removed",
            camera=row.camera,
            night=row.night,
            set=set_id,
            action="left closed; it is combined if the camera is configured again",
        )
        return True

    def _set_aside(self, set_id: int, event: str, exc: Exception) -> None:
        reason = f"set aside: {type(exc).__name__}: {exc}"
        log.exception(event, set=set_id, reason=reason, action=_SET_ASIDE)
        try:
            self._catalog.set_state(set_id, "failed", reason)
        except Exception:  # the catalog itself refuses: the log says it all
            log.exception("combine.set_aside_failed", set=set_id)

    def _reconcile(self) -> set[str]:
        """Each master's file to where its row says (publish/placement.py); cameras moved."""
        try:
            return reconcile(self._catalog)
        except (OSError, sqlite3.Error) as exc:
            log.error("master.reconcile_failed", error=str(exc))
            return set()

    def _report_orphans(self) -> None:
        try:
            report_orphans(self._catalog, self._config.service.masters_dir)
        except (OSError, sqlite3.Error) as exc:
            log.error("master.orphan_check_failed", error=str(exc))

    def check_latest(self) -> None:
        """Point each camera's ``latest.fits`` at its newest accepted master when it is not."""
        self._latest_checked = self._monotonic()
        repair_latest(self._catalog, self._config.service.masters_dir, self._latest_missing)

    def _adopt(self, set_id: int) -> bool:
        """Whether the set's master is already recorded or on disk (then recorded now)."""
        row = self._catalog.get_set(set_id)
        bound = log.bind(camera=row.camera, night=row.night, set=set_id)
        if self._catalog.has_master(set_id):  # e.g. a second service published it
            self._catalog.set_state(set_id, "done")
            bound.warning("set.repaired", reason="its master is recorded already; marked done")
            return True
        frames = self._catalog.set_inputs(set_id)
        digest = input_digest([f["sha256"] for f in frames])
        masters_dir = self._config.service.masters_dir
        for path, sequence in find_published(masters_dir, row.camera, row.night, digest):
            if self._catalog.master_recorded(str(path)):
                continue  # another set's master, of the same frames
            if not self._catalog.sequence_free(set_id, row.camera, row.night, sequence):
                bound.warning("master.not_adopted", file=str(path), reason="sequence taken")
                continue
            info = self._job_for(set_id, sequence).info
            adopt_master(self._catalog, set_id, info, path, self._now())
            bound.warning("master.adopted", path=str(path), reason=_ADOPTED)
            self.write_index(row.camera)
            return True
        return False

    # --- one combine ----------------------------------------------------

    def _start(self, set_id: int) -> None:
        try:
            job = self._job_for(set_id, self._catalog.reserve_sequence(set_id))
            # The reserved name taken already: an earlier try of this set got as far as
            # the final name (adopt it), or the file is not this set's (take a new number).
            # Only then are the night's master headers read (rare).
            if either_place_taken(Path(job.final)):
                if self._adopt(set_id):
                    return
                job = self._renumbered(job)
            self._catalog.set_state(set_id, "combining")
        except Exception as exc:  # one set's boundary: count a failed try, carry on
            log.exception("combine.start_failed", set=set_id)
            try:
                row = self._catalog.get_set(set_id)
                self._failed(set_id, row.camera, row.night, f"{type(exc).__name__}: {exc}")
            except Exception:  # the catalog itself refuses: the log says it all
                log.exception("combine.set_aside_failed", set=set_id)
            return
        log.info(
            "combine.started",
            camera=job.info.camera,
            night=job.info.night,
            set=set_id,
            frames=len(job.inputs),
            output=job.final,
            sequence=job.info.sequence,
        )
        self._running[set_id] = self.executor.start(job, self._wake)

    def _renumbered(self, job: CombineJob) -> CombineJob:
        """The job under a number above every master file on disk of its camera's night."""
        taken, info = Path(job.final), job.info
        # Both places (rules/places.py): a rejected master's number is taken too.
        stem, rejected = f"{info.camera}_{info.night}_", path_for_state(taken, "rejected")
        names = [*taken.parent.glob(f"bias_{stem}*"), *rejected.parent.glob(f"rejected_{stem}*")]
        numbers = [p.name.split(stem, 1)[1].split("_")[0] for p in names]
        on_disk = max((int(n) for n in numbers if n.isdigit()), default=0)
        sequence = self._catalog.reserve_sequence(job.set_id, above=on_disk)
        log.warning(
            "combine.sequence_taken",
            camera=info.camera,
            night=info.night,
            set=job.set_id,
            file=str(taken),
            sequence=sequence,
            reason="a file of the reserved name exists and is not this set's master; left alone",
        )
        return self._job_for(job.set_id, sequence)

    def _job_for(self, set_id: int, sequence: int) -> CombineJob:
        row = self._catalog.get_set(set_id)
        frames = self._catalog.set_inputs(set_id)
        camera = self._config.camera(row.camera)
        info = MasterInfo(
            camera=row.camera,
            night=row.night,
            sequence=sequence,
            geometry=row.geometry,
            raw_names=input_names([f["path"] for f in frames]),
            settings=camera.combine,
            mem_limit=self._config.service.mem_limit,
            input_digest=input_digest([f["sha256"] for f in frames]),
            master_sigma=camera.qc.master_sigma,
        )
        final = master_path(self._config.service.masters_dir, info)
        return CombineJob(set_id, tuple(f["calibrated"] for f in frames), str(final), info)

    def _finish(self, job: CombineJob, result: CombineResult) -> None:
        try:
            if result.temporary is None:
                self._failed(job.set_id, job.info.camera, job.info.night, str(result.reason))
                return
            master = NewMaster(
                job.set_id, job.info, Path(job.final), result.quality, result.segments
            )
            final = publish_master(
                self._catalog,
                self._config.service.masters_dir,
                master,
                Path(result.temporary),
                self._now(),
                result.seconds,
                result.startup,
                alarm=self._alarm,
            )
            self._published(final)
            self.write_index(job.info.camera)
            # Runs lost on a cluster (a killed worker, a vanished scheduler) may have
            # left their own temporary copies beside its accepted name.
            for leftover in temporaries_of(Path(job.final), job.set_id):
                leftover.unlink(missing_ok=True)
            self.previews.queue(final, Path(job.inputs[0]), len(job.inputs))
        except Exception as exc:  # one set's boundary: record it, carry on
            log.exception("set.publish_failed", set=job.set_id)
            if result.temporary is not None:
                Path(result.temporary).unlink(missing_ok=True)
            reason = f"publishing failed: {type(exc).__name__}: {exc}"
            self._failed(job.set_id, job.info.camera, job.info.night, reason)

    def _failed(self, set_id: int, camera: str, night: str, reason: str) -> None:
        state, tries = self._catalog.failed_try(set_id, reason, MAX_TRIES)
        bound = log.bind(camera=camera, night=night, set=set_id, tries=tries)
        if state == "failed":
            action = "fix the cause, then restart the service: failed sets are retried at start"
            bound.error("set.failed", reason=reason, action=action)
            self._alarm("set_failed", camera=camera, night=night, set=set_id, reason=reason)
            return
        wait = self._config.service.combine_retry_seconds * 2 ** (tries - 1)
        when = self._now() + dt.timedelta(seconds=wait)
        bound.warning(
            "combine.retrying", reason=reason, action=action_for(reason), retry_at=when.isoformat()
        )
        self._retry_at(set_id, when)


# What an operator can do about the errors a combine meets on the masters directory,
# keyed by errno name as it appears in the reason ("[Errno 28] No space left ...").
_ACTIONS = {
    "ENOSPC": "free space on the masters directory's file system",
    "EDQUOT": "raise the service user's disk quota, or free space",
    "EROFS": "the masters directory's file system is read-only: remount it read-write",
    "EACCES": "give the service's user write access to masters_dir",
    "EPERM": "give the service's user write access to masters_dir",
    "ENOTDIR": "something that is not a directory stands in masters_dir's path: move it",
    # Sequence numbers are reserved in the catalog, so a master's name taken means a
    # file the catalog does not list (put there by hand, or by another service on the
    # same masters_dir): it is left alone and the next try takes a free number.
    "EEXIST": "a file of that name exists already in masters_dir (not listed in the "
    "catalog: left alone); the next try takes a free sequence number. If it is a "
    "directory's name, move the file that stands there",
}

_SET_ASIDE = "marked failed with the reason; it is tried again at the next start"
_ADOPTED = "found on disk for exactly these inputs after an interrupted publication"


def action_for(reason: str) -> str:
    """What to do about a failed combine, from the errno in its reason."""
    match = re.search(r"\[Errno (\d+)\]", reason)
    name = errno.errorcode.get(int(match.group(1)), "") if match else ""
    return _ACTIONS.get(name, "see the reason; it is tried again automatically")
