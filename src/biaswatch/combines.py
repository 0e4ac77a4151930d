"""Closed sets to published masters: the queue, memory slots, retries and recovery.

A set judged complete is ``closed`` and queued here. Combines run through an
executor (executors.py): child processes here (worker.py), as many at once as
``max_combine_memory // mem_limit`` allows, or tasks on a Dask cluster
(cluster.py). Each is reported back through the main loop, which alone writes
the catalog, the attempt history included. A failed try
sends the set back to ``closed`` and retries it later (MAX_TRIES in all); a set
that keeps failing ends ``failed`` with the last reason.

At start, :meth:`Combines.recover` makes the catalog and the masters directory
agree after a crash: sets left combining are closed again, a master already on
disk for a closed set's exact inputs is adopted instead of written twice, and
each camera's ``latest.fits`` is pointed at its newest master.
"""

from __future__ import annotations

import datetime as dt
import errno
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog
from astropy.io import fits

from biaswatch.catalog import Catalog
from biaswatch.config import Config
from biaswatch.executors import CombineExecutor, LocalExecutor, Running
from biaswatch.previews import Previews
from biaswatch.publish import (
    MasterInfo,
    find_published,
    input_names,
    master_path,
    point_latest,
    publish_master,
    verdict_for,
)
from biaswatch.qc import master_qc_from_header
from biaswatch.records import MasterRow
from biaswatch.sets import input_digest
from biaswatch.worker import CombineJob, CombineResult

log = structlog.get_logger("biaswatch.combines")

# Tries per set before it is 'failed': banzai retries a stack up to 3 times
# (reliability.md 2.3). A try that fails waits combine_retry_seconds * 2**(tries-1)
# first: a full disk or an unmounted masters directory gets minutes to be mended.
MAX_TRIES = 3


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
    ) -> None:
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
        self.previews = Previews()
        self._ready = False  # the fork server has preloaded (worker.start_server)

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
            final = Path(running.job.final)
            for leftover in final.parent.glob(f".{final.name}.partial-*"):
                leftover.unlink(missing_ok=True)
            self._catalog.set_state(running.job.set_id, "closed", reason)
            log.warning("combine.abandoned", set=running.job.set_id, reason=reason)
        self._running.clear()

    # --- recovery -------------------------------------------------------

    def recover(self) -> None:
        """After a crash: adopt masters already written, queue the other closed sets."""
        for set_id in self._catalog.requeue_interrupted():
            if not self._adopt(set_id):
                self.queue(set_id)
        masters_dir = self._config.service.masters_dir
        for camera, newest in self._catalog.newest_masters().items():
            link = masters_dir / camera / "latest.fits"
            if not (link.exists() and link.resolve() == Path(newest.path).resolve()):
                point_latest(link, Path(newest.path))
                log.info("master.latest_repaired", camera=camera, path=newest.path)

    def _adopt(self, set_id: int) -> bool:
        row = self._catalog.get_set(set_id)
        frames = self._catalog.set_inputs(set_id)
        digest = input_digest([f["sha256"] for f in frames])
        found = find_published(self._config.service.masters_dir, row.camera, row.night, digest)
        if found is None:
            return False
        path, sequence = found
        quality = master_qc_from_header(fits.getheader(path))
        sigma = self._config.camera(row.camera).qc.master_sigma
        verdict = verdict_for(self._catalog, row.camera, row.geometry, quality, sigma)
        master = MasterRow(
            row.camera,
            row.night,
            sequence,
            row.geometry,
            str(path),
            len(frames),
            digest,
            self._now().isoformat(),
            quality,
            verdict.state,
            "biaswatch",
            verdict.reason,
        )
        self._catalog.record_master(set_id, master)
        log.warning(
            "master.adopted",
            camera=row.camera,
            night=row.night,
            set=set_id,
            path=str(path),
            reason="found on disk for exactly these inputs after an interrupted publication",
        )
        return True

    # --- one combine ----------------------------------------------------

    def _start(self, set_id: int) -> None:
        job = self._job_for(set_id)
        # The next sequence's name taken already: an earlier try got as far as the final
        # name, then failed. Only then are the night's master headers read (rare).
        if Path(job.final).exists() and self._adopt(set_id):
            return
        self._catalog.set_state(set_id, "combining")
        log.info(
            "combine.started",
            camera=job.info.camera,
            night=job.info.night,
            set=set_id,
            frames=len(job.inputs),
            output=job.final,
        )
        self._running[set_id] = self.executor.start(job, self._wake)

    def _job_for(self, set_id: int) -> CombineJob:
        row = self._catalog.get_set(set_id)
        frames = self._catalog.set_inputs(set_id)
        camera = self._config.camera(row.camera)
        info = MasterInfo(
            camera=row.camera,
            night=row.night,
            sequence=self._catalog.next_sequence(row.camera, row.night),
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
                self._failed(job, str(result.reason))
                return
            final = publish_master(
                self._catalog,
                self._config.service.masters_dir,
                job.set_id,
                job.info,
                Path(result.temporary),
                Path(job.final),
                self._now(),
                result.seconds,
                result.startup,
                alarm=self._alarm,
            )
            self._published(final)
            # Runs lost on a cluster (a killed worker, a vanished scheduler) may have
            # left their own temporary copies beside it.
            for leftover in final.parent.glob(f".{final.name}.partial-*"):
                leftover.unlink(missing_ok=True)
            self.previews.queue(final, Path(job.inputs[0]), len(job.inputs))
        except Exception as exc:  # one set's boundary: record it, carry on
            log.exception("set.publish_failed", set=job.set_id)
            if result.temporary is not None:
                Path(result.temporary).unlink(missing_ok=True)
            self._failed(job, f"publishing failed: {type(exc).__name__}: {exc}")

    def _failed(self, job: CombineJob, reason: str) -> None:
        info = job.info
        state, tries = self._catalog.failed_try(job.set_id, reason, MAX_TRIES)
        bound = log.bind(camera=info.camera, night=info.night, set=job.set_id, tries=tries)
        if state == "failed":
            action = "fix the cause, then restart the service: failed sets are retried at start"
            bound.error("set.failed", reason=reason, action=action)
            self._alarm(
                "set_failed", camera=info.camera, night=info.night, set=job.set_id, reason=reason
            )
            return
        wait = self._config.service.combine_retry_seconds * 2 ** (tries - 1)
        when = self._now() + dt.timedelta(seconds=wait)
        bound.warning(
            "combine.retrying", reason=reason, action=action_for(reason), retry_at=when.isoformat()
        )
        self._retry_at(job.set_id, when)


# What an operator can do about the errors a combine meets on the masters directory,
# keyed by errno name as it appears in the reason ("[Errno 28] No space left ...").
_ACTIONS = {
    "ENOSPC": "free space on the masters directory's file system",
    "EDQUOT": "raise the service user's disk quota, or free space",
    "EROFS": "the masters directory's file system is read-only: remount it read-write",
    "EACCES": "give the service's user write access to masters_dir",
    "EPERM": "give the service's user write access to masters_dir",
    "ENOTDIR": "something that is not a directory stands in masters_dir's path: move it",
    "EEXIST": "something that is not a directory stands in masters_dir's path: move it",
}


def action_for(reason: str) -> str:
    """What to do about a failed combine, from the errno in its reason."""
    match = re.search(r"\[Errno (\d+)\]", reason)
    name = errno.errorcode.get(int(match.group(1)), "") if match else ""
    return _ACTIONS.get(name, "see the reason; it is tried again automatically")
