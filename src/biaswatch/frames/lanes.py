"""Each camera's file work on a thread of its own: a hung mount stalls one camera, not all.

A hard NFS mount whose server went away blocks ``stat`` and ``read`` in the
kernel until the server returns (nfs(5), "hard"); no timeout or signal ends the
call. So the main loop never touches a camera's files. Each camera has a
:class:`Lane`: a thread that owns the camera's :class:`Intake` (settling, FITS
checks, reading) and probes its watch roots. The main loop sends it paths and
scan requests, takes its finished records, and asks how long it has been stuck
in one call (``stuck_for``), which the service reports as ``camera.stalled``.

Calibration itself (CPU and the local work directory) runs on one pool of
workers shared by all lanes, so memory and cores stay bounded however many
cameras there are.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import KnownReader
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.frames.intake import CALIBRATION_WORKERS, Intake
from biaswatch.watch.handler import PathEvent
from biaswatch.watch.scan import probe_directory

log = structlog.get_logger(__name__)

# A lane looks at its settling files this often when nothing arrives (seconds):
# well inside the shortest useful settle time, and idle lanes cost nothing.
TURN_SECONDS = 0.25
# Watch roots are probed this often: a deleted or restored root is noticed within it.
PROBE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Scan:
    """List a watch directory against the catalog; ``reason`` says why (for the log)."""

    directory: Path
    reason: str  # "start", "rescan", "overflow", "rebuilt" or "rearmed"


_NUDGE = "nudge"  # a calibration finished: turn now
_STOP = "stop"


@dataclass(slots=True)
class Taken:
    """What lanes hand to the main loop."""

    finished: list[FrameRecord] = field(default_factory=list)
    seen: list[FrameRecord] = field(default_factory=list)
    vanished: list[Path] = field(default_factory=list)


class Lane:
    """One camera's intake, on its own thread."""

    def __init__(
        self,
        camera: CameraConfig,
        make_intake: Callable[[KnownReader, Callable[[], None]], Intake],
        *,
        catalog: Path,
        wake: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
        probe: Callable[[Path], str] = probe_directory,
    ) -> None:
        self.camera = camera
        self._probe_root = probe
        self._make_intake = make_intake
        self._catalog = catalog
        self._wake = wake
        self._monotonic = monotonic
        self._requests: queue.Queue[PathEvent | Scan | str] = queue.Queue()
        self._lock = threading.Lock()
        self._out = Taken()
        self._busy = False
        self._present: dict[Path, str] = {}
        self._probed_at = float("-inf")
        self._probed = threading.Event()
        self._since: float | None = None  # when the current unit of work began
        self.doing = ""
        self._stopping = threading.Event()
        self._closed: list[FrameRecord] = []
        self._close_timeout: float | None = None
        # A daemon thread: one stuck in a hung mount must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name=f"lane-{camera.name}", daemon=True)

    # --- called from the main loop --------------------------------------------

    def start(self) -> None:
        """Start the lane's thread; it probes the watch roots first."""
        self._thread.start()

    def note(self, event: PathEvent) -> None:
        """Look at a path the watcher reported."""
        self._ask(event)

    def scan(self, directory: Path, reason: str) -> None:
        """List ``directory`` against the catalog."""
        self._ask(Scan(directory, reason))

    def _ask(self, request: PathEvent | Scan) -> None:
        # Under the lock, so the lane's "not busy" can never land after this "busy".
        with self._lock:
            self._busy = True
            self._requests.put(request)

    def take(self) -> Taken:
        """Records finished, paths seen and paths vanished since the last call."""
        with self._lock:
            out, self._out = self._out, Taken()
        return out

    @property
    def busy(self) -> bool:
        """Whether files of this camera are waiting, settling, being calibrated or not taken."""
        with self._lock:
            # Records not yet taken count: a set must not be judged without them.
            return self._busy or bool(self._out.finished or self._out.seen)

    def present(self, directory: Path) -> str | None:
        """The last probe of a watch root ("ok", "missing", "unreadable"); None if unknown."""
        with self._lock:
            return self._present.get(directory)

    def wait_probed(self, timeout: float) -> bool:
        """Wait for the first probe of the watch roots; False if it did not come in time."""
        return self._probed.wait(timeout)

    def stuck_for(self, now: float) -> float:
        """Seconds the lane has spent in its current unit of work (0 when idle)."""
        since = self._since
        return 0.0 if since is None else max(0.0, now - since)

    def stop(self, timeout: float) -> list[FrameRecord]:
        """Stop after the frames being calibrated (waiting at most ``timeout``)."""
        self._close_timeout = timeout
        self._stopping.set()
        self._requests.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "camera.stuck_at_stop",
                camera=self.camera.name,
                doing=self.doing,
                action="left behind: its files are scanned again at the next start",
            )
            return []
        return self._closed

    # --- the lane's thread ----------------------------------------------------

    def _run(self) -> None:
        known = KnownReader(self._catalog)  # opened on this thread, which alone uses it
        intake = self._make_intake(known, self._nudge)
        try:
            while not self._stopping.is_set():
                try:
                    self._turn(intake)
                except Exception:  # one turn's boundary: log it, carry on after a pause
                    log.exception("camera.lane_error", camera=self.camera.name, doing=self.doing)
                    self._since = None
                    self._stopping.wait(1.0)
            self._closed = intake.close(self._close_timeout)
        finally:
            known.close()

    def _nudge(self) -> None:
        """A calibration finished: turn now rather than at the next tick."""
        self._requests.put(_NUDGE)

    def _turn(self, intake: Intake) -> None:
        requests = self._next_requests()
        self._begin("checking files")
        now = self._monotonic()
        if now - self._probed_at >= PROBE_SECONDS:
            self._probe()
        for request in requests:
            if isinstance(request, PathEvent):
                intake.note(request.camera, request.path, now, closed=request.closed)
            else:
                self._scan(intake, request)
        finished = intake.poll(self._monotonic())
        seen, vanished = intake.take_seen()
        working = bool(intake.busy_cameras())
        with self._lock:
            self._out.finished += finished
            self._out.seen += seen
            self._out.vanished += vanished
            self._busy = working or not self._requests.empty()
        self._since = None
        if finished or seen or vanished:
            self._wake()

    def _next_requests(self) -> list[PathEvent | Scan]:
        try:
            first = self._requests.get(timeout=TURN_SECONDS)
        except queue.Empty:
            return []
        items = [first]
        while True:
            try:
                items.append(self._requests.get_nowait())
            except queue.Empty:
                return [i for i in items if not isinstance(i, str)]  # nudges and stop

    def _begin(self, doing: str) -> None:
        self.doing = doing
        self._since = self._monotonic()

    def _probe(self) -> None:
        found = {}
        for directory in self.camera.watch:
            self._begin(f"probing {directory}")
            found[directory] = self._probe_root(directory)
        with self._lock:
            self._present = found
        self._probed_at = self._monotonic()
        self._probed.set()

    def _scan(self, intake: Intake, request: Scan) -> None:
        doing = f"scanning {request.directory}"
        self._begin(doing)
        new = intake.scan(
            self.camera, request.directory, self._monotonic(), lambda: self._begin(doing)
        )
        bound = log.bind(camera=self.camera.name, directory=str(request.directory))
        if request.reason == "start":
            bound.info("scan.backlog", new=new)
        elif new and request.reason in ("rescan", "overflow"):
            # Files no event announced: inotify overflowed or a watcher missed them.
            bound.warning("scan.reconciled", missing=new)
        else:
            bound.debug("scan.reconciled", missing=new, reason=request.reason)


class Lanes:
    """The lanes of all cameras and the calibration workers they share."""

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        site: SiteConfig,
        work_dir: Path,
        *,
        excluded: Sequence[Path],
        catalog: Path,
        wake: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
        calibrator: Executor | None = None,
    ) -> None:
        # The service's own threads, or a cluster's (combine/dask_executor.py) lent by its executor.
        self._calibrator = calibrator or ThreadPoolExecutor(
            max_workers=CALIBRATION_WORKERS, thread_name_prefix="calibrate"
        )

        def intake_for(camera: CameraConfig) -> Callable[[KnownReader, Callable[[], None]], Intake]:
            def make(known: KnownReader, nudge: Callable[[], None]) -> Intake:
                return Intake(
                    {camera.name: camera},
                    site,
                    work_dir,
                    excluded=excluded,
                    known=known,
                    wake=nudge,
                    calibrator=self._calibrator,
                )

            return make

        self.lanes: Mapping[str, Lane] = {
            c.name: Lane(c, intake_for(c), catalog=catalog, wake=wake, monotonic=monotonic)
            for c in cameras
        }

    def start(self, probe_timeout: float) -> None:
        """Start every lane; wait (at most ``probe_timeout`` in all) for their first probes."""
        for lane in self.lanes.values():
            lane.start()
        deadline = time.monotonic() + probe_timeout
        for lane in self.lanes.values():
            lane.wait_probed(max(0.0, deadline - time.monotonic()))

    def note(self, event: PathEvent) -> None:
        """Route a watcher's path to its camera's lane."""
        lane = self.lanes.get(event.camera)
        if lane is not None:
            lane.note(event)

    def scan(self, camera: str, directory: Path, reason: str) -> None:
        """Ask a camera's lane to list one of its directories."""
        self.lanes[camera].scan(directory, reason)

    def take(self) -> Taken:
        """Finished records, seen records and vanished paths from every lane."""
        taken = Taken()
        for lane in self.lanes.values():
            out = lane.take()
            taken.finished += out.finished
            taken.seen += out.seen
            taken.vanished += out.vanished
        return taken

    def present(self, camera: str, directory: Path) -> str | None:
        """The camera lane's last probe of a watch root; None if not known yet."""
        lane = self.lanes.get(camera)
        return None if lane is None else lane.present(directory)

    def busy_cameras(self) -> set[str]:
        """Cameras with files waiting, settling or being calibrated."""
        return {name for name, lane in self.lanes.items() if lane.busy}

    def stuck(self, now: float) -> dict[str, tuple[float, str]]:
        """Per camera: seconds in its current unit of work, and what that work is."""
        return {name: (lane.stuck_for(now), lane.doing) for name, lane in self.lanes.items()}

    def stop(self, timeout: float, stalled: Collection[str] = ()) -> Taken:
        """Stop every lane; returns what they still finished.

        A lane stuck in a call is left behind: the ``stalled`` ones at once, the
        others after ``timeout`` in all.
        """
        deadline = time.monotonic() + timeout
        records: list[FrameRecord] = []
        for name, lane in self.lanes.items():
            wait = 0.1 if name in stalled else max(0.1, deadline - time.monotonic())
            records += lane.stop(wait)
        self._calibrator.shutdown(wait=False, cancel_futures=True)
        taken = self.take()
        taken.finished += records
        return taken
