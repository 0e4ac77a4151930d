"""Fakes for unit tests of the service's parts: a combine executor and previews, no process.

:class:`FakeExecutor` implements the CombineExecutor Protocol (combine/executors.py)
without starting anything: it records each job ``Combines`` hands it, and the test
decides when and how each one ends (:meth:`FakeExecutor.succeed`, ``fail``, ``die``;
until then the combine is still running). A success writes a real temporary master
next to the job's final name through the child's own code (combine/child.py
``finish_master``), so what ``Combines`` then publishes is a real file. It reports
attempt events as the local executor does. :class:`FakePreviews` records the
previews ``Combines`` asks for instead of drawing them in a process.

The fake clock and notifier are in :mod:`biaswatch.testing.fits`.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.combine.child import CombineJob, CombineResult, death_reason, finish_master
from biaswatch.combine.executors import AttemptEvent, AttemptKind
from biaswatch.publish.previews import Previews
from biaswatch.rules.qc import MasterQC


class FakeCombine:
    """One combine the test ends: None from :meth:`poll` until it is given an outcome."""

    def __init__(self, job: CombineJob, worker: str, report: Callable[[AttemptEvent], None]):
        self.job = job
        self.worker = worker
        self.stopped = False
        self._report = report
        self._outcome: CombineResult | None = None
        report(AttemptEvent(job.set_id, "combine", worker, "started"))

    @property
    def ended(self) -> bool:
        """Whether the test gave it an outcome or the service stopped it."""
        return self._outcome is not None or self.stopped

    def end(self, result: CombineResult) -> None:
        """The answer the next :meth:`poll` returns."""
        if self.ended:
            raise RuntimeError(f"set {self.job.set_id}'s combine has ended already")
        self._outcome = result

    def poll(self) -> CombineResult | None:
        """The outcome once the test gave one (reported as the attempt's end); None before."""
        if self._outcome is None or self.stopped:
            return None
        kind: AttemptKind = "done" if self._outcome.temporary is not None else "failed"
        self._report(
            AttemptEvent(self.job.set_id, "combine", self.worker, kind, self._outcome.reason)
        )
        self.stopped = True  # answered once, as a child answers once
        return self._outcome

    def stop(self) -> None:
        """Abandoned by the service (it is stopping)."""
        self.stopped = True


class FakeExecutor:
    """A CombineExecutor that starts no process; the test ends each combine."""

    name = "fake"

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.jobs: list[CombineJob] = []  # every job started, in order (retries included)
        self.closed = False
        self._combines: list[FakeCombine] = []
        self._events: list[AttemptEvent] = []

    def start(self, job: CombineJob, wake: Callable[[], None]) -> FakeCombine:  # noqa: ARG002
        """Record the job; it runs until the test ends it."""
        self.jobs.append(job)
        combine = FakeCombine(job, f"fake {len(self.jobs)}", self._events.append)
        self._combines.append(combine)
        return combine

    def events(self) -> list[AttemptEvent]:
        """Attempt events since the last call, oldest first."""
        # Emptied in place: each FakeCombine reports through this list's append.
        out = list(self._events)
        self._events.clear()
        return out

    def calibrator(self) -> Executor | None:
        """None: the service's own threads calibrate."""
        return None

    def close(self) -> None:
        """Remember that the service closed it."""
        self.closed = True

    def running(self) -> list[int]:
        """The sets whose combine was started and has not ended, in start order."""
        return [c.job.set_id for c in self._combines if not c.ended]

    def combine_of(self, set_id: int) -> FakeCombine:
        """The set's combine still running (ValueError if none)."""
        for combine in self._combines:
            if combine.job.set_id == set_id and not combine.ended:
                return combine
        raise ValueError(f"no combine of set {set_id} is running")

    def succeed(self, set_id: int, quality: MasterQC | None = None) -> Path:
        """Write the set's temporary master (the child's own code); answer with it.

        ``quality``, when given, replaces the measured QC in the answer only (the
        header keeps the measured one), so a test can tell which of the two was used.
        """
        combine = self.combine_of(set_id)
        result = finish_master(combine.job, _mean_of(combine.job.inputs), time.perf_counter())
        if quality is not None:
            result = dataclasses.replace(result, quality=quality)
        combine.end(dataclasses.replace(result, worker=combine.worker))
        return Path(str(result.temporary))

    def fail(self, set_id: int, reason: str) -> None:
        """Answer that the combine failed (as the engine's CombineFailed does)."""
        combine = self.combine_of(set_id)
        combine.end(CombineResult(set_id, None, reason, worker=combine.worker))

    def die(self, set_id: int, signum: int = signal.SIGKILL) -> str:
        """End the combine as a child killed by ``signum``: no answer; returns the reason."""
        reason = death_reason(-signum)
        self.combine_of(set_id).end(CombineResult(set_id, None, reason))
        return reason


def _mean_of(inputs: tuple[str, ...]) -> np.ndarray:
    """The inputs' mean image: a real master of real pixels, with no combine kernel."""
    stack = [np.asarray(fits.getdata(path), dtype=np.float32) for path in inputs]
    return np.asarray(np.mean(stack, axis=0), dtype=np.float32)


class FakePreviews(Previews):
    """Previews that record what they were asked to draw and start no process."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[Path, Path, int]] = []

    def queue(self, master: Path, single: Path, ncombine: int) -> None:
        """Record the request."""
        self.asked.append((master, single, ncombine))

    def step(self) -> None:
        """Nothing is ever drawing."""

    def finish(self, timeout: float = 0.0) -> None:
        """Nothing to wait for."""
