"""Where combines and calibrations run: worker processes here, or a Dask cluster.

:class:`Combines` starts each combine through an executor and polls what it
started; it never knows which kind it has. Both kinds report every run of a
task as :class:`AttemptEvent` s (started, then done or failed), which Combines
writes to the catalog's attempt history. The local executor is the embedded
default (child.py: one fresh child process per combine); dask_executor.py is the
Dask one, chosen by ``[service] executor = "dask"``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, Protocol

from biaswatch.combine.child import CombineJob, CombineProcess, CombineResult

AttemptKind = Literal["started", "done", "failed"]


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One run of one task of a set's combine: where, and how far it got."""

    set_id: int
    task: str  # "combine", or "band 2/8" and "assemble" for a split combine
    worker: str
    kind: AttemptKind
    reason: str | None = None
    executor: str | None = None  # where it ran, if not the executor's own kind (fallback)


class Running(Protocol):
    """A combine in progress, polled by the main loop."""

    job: CombineJob

    def poll(self) -> CombineResult | None:
        """The result once there is one; None meanwhile."""

    def stop(self) -> None:
        """Abandon it (the service is stopping)."""


class CombineExecutor(Protocol):
    """Starts combines; reports their attempts; may lend a calibration executor."""

    name: str
    slots: int  # combines in flight at once

    def start(self, job: CombineJob, wake: Callable[[], None]) -> Running:
        """Start combining ``job``; ``wake`` is called when it has news."""

    def events(self) -> list[AttemptEvent]:
        """Attempt events since the last call, oldest first."""

    def calibrator(self) -> Executor | None:
        """Where frames are calibrated; None: the service's own thread pool."""

    def close(self) -> None:
        """Release connections (running combines were stopped already)."""


class LocalExecutor:
    """One child process per combine on this machine (child.py)."""

    name = "local"

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._events: list[AttemptEvent] = []

    def start(self, job: CombineJob, wake: Callable[[], None]) -> Running:
        """Fork the combine's child."""
        return LocalCombine(job, wake, self._events.append)

    def events(self) -> list[AttemptEvent]:
        """Started and finished children since the last call."""
        # Emptied in place: each LocalCombine reports through this list's append.
        out = list(self._events)
        self._events.clear()
        return out

    def calibrator(self) -> Executor | None:
        """None: the lanes calibrate on the service's own threads."""
        return None

    def close(self) -> None:
        """Nothing to release."""


class LocalCombine:
    """A :class:`CombineProcess` that reports its attempt."""

    def __init__(
        self, job: CombineJob, wake: Callable[[], None], report: Callable[[AttemptEvent], None]
    ) -> None:
        self.job = job
        self._report = report
        self._process = CombineProcess(job, wake=wake)
        self._worker = f"pid {self._process.pid}"
        report(AttemptEvent(job.set_id, "combine", self._worker, "started"))

    def poll(self) -> CombineResult | None:
        """The child's result, reported as the attempt's end."""
        result = self._process.poll()
        if result is not None:
            kind: AttemptKind = "done" if result.temporary is not None else "failed"
            self._report(
                AttemptEvent(self.job.set_id, "combine", self._worker, kind, result.reason)
            )
        return result

    def stop(self) -> None:
        """Terminate the child."""
        self._process.stop()
