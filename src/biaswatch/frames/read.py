"""One settled file in, one catalog record out: read, classify, date, calibrate.

This is the unit of work for a frame, so it holds the frame's one broad
``except``: whatever goes wrong with one file becomes a ``rejected`` record
with a reason, and the service carries on with the next file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import structlog

from biaswatch.catalog.rows import FrameRecord
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.errors import FrameRejected
from biaswatch.fitsbytes import MAX_HEADER_CARDS
from biaswatch.frames.opening import FileBytes, read_bytes
from biaswatch.frames.readiness import (
    RawFrame,
    classify,
    geometry,
    header_text,
    observation_time,
    parse_frame,
    read_frame,
    type_keyword,
)
from biaswatch.frames.segments import (
    calibrate_frame,
    raw_segments,
    segment_qc,
    write_work_file,
)
from biaswatch.rules.nights import night_label

log = structlog.get_logger(__name__)


def ingest(path: Path, camera: CameraConfig, site: SiteConfig, work_dir: Path) -> FrameRecord:
    """Turn one complete file into a valid, ignored or rejected frame record."""
    got = read(path, camera)
    return got if isinstance(got, FrameRecord) else examine_bytes(got, camera, site, work_dir)


def read(path: Path, camera: CameraConfig) -> FileBytes | FrameRecord:
    """Read a file's bytes: the one step that touches the camera's disk; a rejection if it fails.

    Split from :func:`examine` so that a camera's own thread (frames/lanes.py) reads, and a
    hung mount holds that thread only, never the calibration workers every camera shares.
    It only reads (34 MB of a 4096 x 4128 uint16 frame: ~10 ms from the page cache);
    parsing and hashing are the workers' (they took the lane 0.09 s a frame, so a burst of
    16 frames queued 1.4 s behind one thread; benchmarks/ingest.py).
    """
    bound = log.bind(camera=camera.name, file=str(path))
    try:
        return read_bytes(path, camera)
    except FrameRejected as exc:
        return _rejected(bound, path, camera, exc.reason)
    except Exception as exc:  # one file's boundary: record it, never stop the service
        return _rejected(bound, path, camera, f"unreadable: {type(exc).__name__}: {exc}")


def examine_bytes(
    raw: FileBytes, camera: CameraConfig, site: SiteConfig, work_dir: Path
) -> FrameRecord:
    """Parse and hash a file's bytes, then :func:`examine` the frame (a calibration worker's)."""
    bound = log.bind(camera=camera.name, file=str(raw.path))
    try:
        frame = parse_frame(raw, camera)
    except FrameRejected as exc:
        return _rejected_bytes(bound, raw, camera, exc.reason)
    except Exception as exc:  # one file's boundary: record it, never stop the service
        bound.exception("frame.failed")
        return _rejected_bytes(bound, raw, camera, f"{type(exc).__name__}: {exc}")
    return examine(frame, camera, site, work_dir)


def examine(frame: RawFrame, camera: CameraConfig, site: SiteConfig, work_dir: Path) -> FrameRecord:
    """Classify, date and calibrate a frame already read (CPU and the work directory only)."""
    bound = log.bind(camera=camera.name, file=str(frame.path))
    try:
        return _examine(frame, camera, site, work_dir, bound)
    except FrameRejected as exc:
        return _rejected(bound, frame.path, camera, exc.reason, frame)
    except Exception as exc:  # one file's boundary: record it, never stop the service
        bound.exception("frame.failed")
        return _rejected(bound, frame.path, camera, f"{type(exc).__name__}: {exc}", frame)


def _examine(
    frame: RawFrame,
    camera: CameraConfig,
    site: SiteConfig,
    work_dir: Path,
    bound: structlog.stdlib.BoundLogger,
) -> FrameRecord:
    cards = len(frame.header)  # the image HDU's and the primary's, merged
    if cards > MAX_HEADER_CARDS:
        raise FrameRejected(f"header holds {cards} cards, more than {MAX_HEADER_CARDS}")
    kind = classify(frame.header, camera)
    base = _base(frame, camera, kind.imagetyp)
    if not kind.is_bias:
        bound.info("frame.ignored", reason=kind.reason)
        return replace(base, status="ignored", reason=kind.reason)
    when, note = observation_time(frame, camera.date_range, keywords=camera.date_keywords)
    night = night_label(when, site.zone, site.night_rollover).isoformat()
    if note is not None:
        bound.warning("frame.date_fallback", note=note, night=night)
    images = calibrate_frame(frame, camera.calibrate, camera.name)
    geom = configuration_label(frame, camera)
    quality, each = segment_qc(
        images,
        saturation=camera.qc.saturation,
        ccd_temp=_number(header_text(frame.header, camera.qc.ccd_temp_keyword)),
    )
    out = work_dir / camera.name / night / _work_name(frame)
    write_work_file(frame, images, out)
    bound.info(
        "frame.calibrated",
        night=night,
        geometry=geom,
        calibrated=str(out),
        segments=[name for name, _ in each],
    )
    return replace(
        base,
        status="valid",
        note=note,
        date_obs=when.isoformat(),
        night=night,
        geometry=geom,
        calibrated=str(out),
        qc=quality,
        segments_qc=each,
    )


def configuration_label(frame: RawFrame, camera: CameraConfig) -> str:
    """The geometry label of a frame: its raw segments, binning and group_by values.

    The one place the service, backfill and ``masters --like`` label a frame, so a
    frame always finds the masters of its own configuration.
    """
    return geometry(frame.header, raw_segments(frame, camera.calibrate), camera).label()


def label_of(path: Path, camera: CameraConfig) -> str:
    """The geometry label the service gives the frame at ``path`` (read-only, no record)."""
    return configuration_label(read_frame(path, camera), camera)


def _number(value: object) -> float | None:
    """A header value as a float, or None when absent or not a number."""
    try:
        return None if value is None or isinstance(value, bool) else float(str(value))
    except ValueError:
        return None


def _base(frame: RawFrame, camera: CameraConfig, imagetyp: str | None) -> FrameRecord:
    return FrameRecord(
        str(frame.path),
        camera.name,
        frame.size,
        frame.mtime_ns,
        status="rejected",
        sha256=frame.sha256,
        imagetyp=imagetyp,
    )


def _rejected(
    bound: structlog.stdlib.BoundLogger,
    path: Path,
    camera: CameraConfig,
    reason: str,
    frame: RawFrame | None = None,
) -> FrameRecord:
    bound.warning("frame.rejected", reason=reason)
    if frame is not None:
        # header_text never raises: a card that broke _examine must not break this too.
        base = _base(frame, camera, header_text(frame.header, type_keyword(camera)))
        return replace(base, reason=reason)
    return rejected_record(path, camera.name, reason)


def _rejected_bytes(
    bound: structlog.stdlib.BoundLogger, raw: FileBytes, camera: CameraConfig, reason: str
) -> FrameRecord:
    """A rejection of bytes already read: their size and mtime, no second look at the disk."""
    bound.warning("frame.rejected", reason=reason)
    return FrameRecord(
        str(raw.path), camera.name, raw.size, raw.mtime_ns, status="rejected", reason=reason
    )


def rejected_record(path: Path, camera: str, reason: str) -> FrameRecord:
    """A rejection for a file that could not be read as a frame at all."""
    try:
        st = path.stat()
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime_ns = -1, -1
    return FrameRecord(str(path), camera, size, mtime_ns, status="rejected", reason=reason)


def _work_name(frame: RawFrame) -> str:
    """The calibrated copy's name: the content's hash and a hash of the raw path.

    Never the raw name itself: a legal 255-byte name plus a suffix is longer than
    NAME_MAX (ENAMETOOLONG), and a name may hold any bytes. The content hash
    (64 bits of it; a clash needs ~4e9 frames of one camera and night, the birthday
    bound) names what was calibrated; the path hash keeps two files of equal
    content (a copy, recorded as a duplicate) from writing one work file.
    """
    tag = hashlib.sha256(os.fsencode(str(frame.path))).hexdigest()[:8]
    return f"{frame.sha256[:16]}-{tag}.fits"
