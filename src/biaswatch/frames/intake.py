"""From a noticed path to a frame record: settle, check FITS, calibrate.

The :class:`Intake` holds the frames in flight: paths waiting to settle and
frames being calibrated on a worker thread. It only reads the catalog (is
this file already known?) and hands finished records back to the service,
which alone writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path

import structlog

from biaswatch.catalog.rows import FrameRecord
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.errors import FrameRejected
from biaswatch.fitsbytes import file_status
from biaswatch.frames.opening import check_budget, holes, open_frame
from biaswatch.frames.read import examine_bytes, read, rejected_record
from biaswatch.frames.readiness import Readiness
from biaswatch.watch.scan import scan_dir

log = structlog.get_logger(__name__)

CALIBRATION_WORKERS = 2
# Frames read ahead of the workers: while both calibrate, the lane has the next frame's
# bytes ready (34 MB, ~25 ms to read for 4096 x 4128 uint16), so a worker that finishes
# starts the next frame at once instead of idling through the lane's turn and read.
READ_AHEAD = 1
# An unreadable file is looked at again after settle_seconds * 2**failures, at most
# this often: five minutes keeps a permission problem from costing more than a stat.
MAX_RETRY_WAIT = 300.0
# Settled files examined in one poll at most: the lane hands its records to the
# main loop (and answers stop) between polls; at ~1 ms per junk file, about 0.5 s.
MAX_LOOKS_PER_POLL = 500


class Intake:
    """Paths noticed -> settled -> whole FITS -> calibrated (or rejected) records."""

    def __init__(
        self,
        cameras: Mapping[str, CameraConfig],
        site: SiteConfig,
        work_dir: Path,
        *,
        excluded: Sequence[Path],
        known: Callable[[Path, int, int], bool],
        wake: Callable[[], None],
        calibrator: Executor | None = None,
    ) -> None:
        self._cameras = cameras
        self._site = site
        self._work_dir = work_dir
        self._excluded = tuple(excluded)
        self._known = known
        self._wake = wake
        self._readiness = Readiness()
        self._camera_of: dict[Path, str] = {}
        # Two workers: numpy and file writes release the GIL, and on two cores a burst
        # of 4096 x 4128 frames is calibrated twice as fast, so the last frame of a set
        # does not queue behind the others (benchmarks/latency.py). The service shares
        # one pool among all cameras (frames/lanes.py); an Intake on its own makes its own.
        self._owns_calibrator = calibrator is None
        self._calibrator = calibrator or ThreadPoolExecutor(
            max_workers=CALIBRATION_WORKERS, thread_name_prefix="calibrate"
        )
        self._calibrating: dict[Path, Future[FrameRecord]] = {}
        self._finished: list[FrameRecord] = []
        self._failures: dict[Path, int] = {}  # unreadable paths: looks that failed
        self._seen: list[FrameRecord] = []  # noted, not yet in the catalog as 'seen'
        self._closing = False
        self._lost: dict[Path, int] = {}  # calibrations that got no answer, per path

    def note(self, camera: str, path: Path, now: float, *, closed: bool = False) -> bool:
        """Start watching ``path`` unless excluded, gone or already recorded as it is."""
        if path in self._readiness:
            # Already settling: a writer's many events need no stat or catalog query.
            if closed:
                self._readiness.mark_closed(path)
            return False
        if any(path == e or e in path.parents for e in self._excluded):
            return False
        try:
            st = path.stat()
        except OSError:
            return False
        if path in self._calibrating or self._known(path, st.st_size, st.st_mtime_ns):
            return False
        settle = self._cameras[camera].settle_seconds
        self._readiness.note(path, settle, now, closed=closed)
        self._camera_of[path] = camera
        self._seen.append(FrameRecord(str(path), camera, st.st_size, st.st_mtime_ns, "seen"))
        return True

    def take_seen(self) -> tuple[list[FrameRecord], list[Path]]:
        """Paths noted since the last call, and paths that vanished before being judged."""
        seen, self._seen = self._seen, []
        vanished, self._readiness.vanished = self._readiness.vanished, []
        return seen, vanished

    def scan(
        self,
        camera: CameraConfig,
        directory: Path,
        now: float,
        progress: Callable[[], None] | None = None,
    ) -> int:
        """Note every candidate file below ``directory``; returns how many were new.

        ``progress`` is called after each directory listed (a long scan is not a stall).
        """
        found = sum(
            self.note(camera.name, path, now)
            for path in scan_dir(directory, camera.patterns, self._excluded, progress)
        )
        log.info("watch.scanned", camera=camera.name, directory=str(directory), new=found)
        return found

    def poll(self, now: float) -> list[FrameRecord]:
        """Examine settled paths; return the records finished since the last poll."""
        self._harvest(now)
        # Read no more frames than the workers can take, plus READ_AHEAD: memory stays
        # bounded (one 4096 x 4128 uint16 frame more: 34 MB of bytes). Files
        # rejected on the spot take no worker, so keep going: taking only `capacity`
        # files per turn rejected junk at 8 a second (2 per 0.25 s lane turn) while
        # a real frame behind it waited (issue 11, finding 10).
        looked: set[Path] = set()  # each file once per poll (settle_seconds may be 0)
        while len(looked) < MAX_LOOKS_PER_POLL:
            capacity = CALIBRATION_WORKERS + READ_AHEAD - len(self._calibrating)
            settled = self._readiness.settled(now, limit=capacity) if capacity > 0 else []
            fresh = [path for path in settled if path not in looked]
            if not fresh:
                break
            for path in fresh:
                looked.add(path)
                self._examine(path, now)
        self._harvest(now)
        finished, self._finished = self._finished, []
        return finished

    def _harvest(self, now: float) -> None:
        for path, future in list(self._calibrating.items()):
            if future.done():
                del self._calibrating[path]
                if future.cancelled() or future.exception() is not None:
                    self._calibration_lost(path, future, now)
                else:
                    self._lost.pop(path, None)
                    self._finished.append(future.result())

    def _calibration_lost(self, path: Path, future: Future[FrameRecord], now: float) -> None:
        """No answer for a frame (its cluster worker or scheduler went away): look again.

        ``examine`` records every fault of the file itself, so a calibration that
        raised or was cancelled says nothing about the frame: it is noted again and
        read again after a back-off, never rejected for it.
        """
        if self._closing:  # cancelled by close(): it stays 'seen'; the next start scans it
            return
        camera = self._cameras[self._camera_of[path]]
        count = self._lost[path] = self._lost.get(path, 0) + 1
        wait = min(camera.settle_seconds * 2**count, MAX_RETRY_WAIT)
        error = "cancelled" if future.cancelled() else repr(future.exception())
        log.warning(
            "frame.calibration_lost",
            camera=camera.name,
            file=str(path),
            error=error,
            tries=count,
            action=f"calibrated again in {wait:g} s",
        )
        self._readiness.note(path, wait, now)

    def busy_cameras(self) -> set[str]:
        """Cameras with files still settling or being calibrated."""
        self._camera_of = {
            path: camera
            for path, camera in self._camera_of.items()
            if path in self._readiness or path in self._calibrating
        }
        return set(self._camera_of.values())

    def close(self, timeout: float | None = None) -> list[FrameRecord]:
        """Finish the frames being calibrated (within ``timeout``); returns what finished."""
        self._closing = True
        for future in self._calibrating.values():
            future.cancel()
        wait(list(self._calibrating.values()), timeout=timeout)
        if self._owns_calibrator:
            self._calibrator.shutdown(wait=False, cancel_futures=True)
        return self.poll(float("-inf"))

    def _examine(self, path: Path, now: float) -> None:
        camera = self._cameras[self._camera_of[path]]
        try:
            self._examine_file(path, camera, now)
        except FrameRejected as exc:
            self._reject(path, camera, exc.reason)
        except OSError as exc:  # vanished or unreadable between events: look again later
            self._unreadable(path, camera, exc, now)
        else:
            self._failures.pop(path, None)

    def _unreadable(self, path: Path, camera: CameraConfig, exc: OSError, now: float) -> None:
        """Log a file that cannot be read once, then count; look again with back-off."""
        count = self._failures[path] = self._failures.get(path, 0) + 1
        wait = min(camera.settle_seconds * 2**count, MAX_RETRY_WAIT)
        bound = log.bind(camera=camera.name, file=str(path), error=str(exc))
        if count == 1:
            action = "check its permissions; it is looked at again, less and less often"
            bound.warning("frame.unreadable", action=action)
        else:  # a file failing every look must not flood the journal (reliability.md 26)
            bound.debug("frame.unreadable", repeats=count, next_look_seconds=wait)
        self._readiness.restart_settle(path, now, wait)

    def _examine_file(self, path: Path, camera: CameraConfig, now: float) -> None:
        # A file already recorded under another size or mtime is examined again like a
        # new one; the service compares content hashes (touched, changed or completed).
        with open_frame(path, camera) as f:
            told = check_budget(f, camera)
            status = file_status(f)
            sparse = holes(f, told) if status.state == "complete" else None
        if sparse is not None:
            self._wait_or_give_up(path, camera, sparse, now)
        elif status.state == "complete":
            self._readiness.forget(path)
            frame = read(path, camera)  # on this thread: the only read of the camera's disk
            if isinstance(frame, FrameRecord):
                self._finished.append(frame)
                return
            future = self._calibrator.submit(
                examine_bytes, frame, camera, self._site, self._work_dir
            )
            self._calibrating[path] = future
            # Wake the main loop as soon as the frame is done, not at its next poll.
            future.add_done_callback(lambda _done: self._wake())
        elif status.state == "not_fits":
            self._reject(path, camera, f"not a FITS file: {status.detail}")
        else:
            self._wait_or_give_up(path, camera, status.detail, now)

    def _wait_or_give_up(self, path: Path, camera: CameraConfig, detail: str, now: float) -> None:
        since = self._readiness.waiting_since(path)
        if since is not None and now - since >= camera.max_incomplete_minutes * 60:
            minutes = camera.max_incomplete_minutes
            self._reject(path, camera, f"truncated: {detail} after waiting {minutes:g} min")
        else:
            log.debug("frame.incomplete", camera=camera.name, file=str(path), detail=detail)
            self._readiness.restart_settle(path, now)

    def _reject(self, path: Path, camera: CameraConfig, reason: str) -> None:
        self._readiness.forget(path)
        log.warning("frame.rejected", camera=camera.name, file=str(path), reason=reason)
        self._finished.append(rejected_record(path, camera.name, reason))
