"""Before a set is combined: leave out the frames that do not belong in it.

When a set is judged complete, its frames' quality (stored with each frame
when it was calibrated, rules/qc.py) is compared across the set. A frame far from
the others (a light leak, a flat labelled bias, a bad amplifier, a level
still settling) is rejected with its reason and the set goes on without it;
so is a frame one of whose segments (an image HDU or an amplifier) is far from
the same segment of the others, with the segment named; a set taken away from
its CCD temperature set-point is flagged. If too few
frames remain, the set is insufficient rather than combined from what is left.
"""

from __future__ import annotations

import structlog

from biaswatch.catalog.store import Catalog, stored_frame_qc, stored_segments_qc
from biaswatch.config import CameraConfig
from biaswatch.rules.qc import FrameQC, segment_outliers, set_outliers, temperature_flag

log = structlog.get_logger(__name__)


def screen(catalog: Catalog, set_id: int, camera: CameraConfig) -> int:
    """Reject the set's outliers and flag its temperature; returns how many frames remain."""
    rows = catalog.set_inputs(set_id)
    measured: list[tuple[str, FrameQC]] = [
        (row["path"], quality) for row in rows if (quality := stored_frame_qc(row)) is not None
    ]
    settings = camera.qc
    bound = log.bind(camera=camera.name, night=rows[0]["night"] if rows else None, set=set_id)
    outliers = set_outliers(
        measured, sigma=settings.outlier_sigma, max_bad_fraction=settings.max_bad_fraction
    )
    # Then each segment (image HDU or amplifier) against the same segment of the others.
    out = {outlier.path for outlier in outliers}
    segments = [(row["path"], stored_segments_qc(row)) for row in rows if row["path"] not in out]
    outliers += segment_outliers(
        segments, sigma=settings.outlier_sigma, max_bad_fraction=settings.max_bad_fraction
    )
    for outlier in outliers:
        catalog.leave_out(outlier.path, outlier.reason)
        bound.warning("frame.outlier", file=outlier.path, reason=outlier.reason)
    temps = [quality.ccd_temp for _, quality in measured]
    flag = temperature_flag(temps, settings.ccd_temp_setpoint, settings.ccd_temp_tolerance)
    if flag is not None:
        catalog.flag_set(set_id, flag)
        bound.warning("set.temperature", flag=flag, action="combined anyway; check the cooling")
    return len(rows) - len(outliers)
