"""The reference a master is checked against: the seed recipe, run with ccdproc per segment.

For each segment (an image HDU, or an amplifier of one image) every raw frame is
calibrated as the astropy CCD guide does it (``subtract_overscan`` with the median of
the overscan, then ``trim_image`` to the data section) and the calibrated frames are
combined with ``ccdproc.combine`` and the seed's statistics (average, 5/5 sigma clipping
around the median with ``mad_std``). The result is a ``CCDData`` per segment, with the
mask and the uncertainty ``ccdproc.combine`` computes, which a master's segment must
equal. ccdproc is imported only when a reference is made: it is a test's cost, not the
package's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class RecipeSegment:
    """Where one segment's pixels are in a raw frame, in FITS section notation.

    ``hdu`` is the HDU's index or EXTNAME; ``overscan`` and ``data`` are sections of
    that HDU's image (``[x1:x2,y1:y2]``, 1-based, inclusive, as ccdproc reads them).
    """

    name: str
    hdu: int | str
    overscan: str
    data: str
    overscan_axis: int = 1


def recipe_calibrated(raw: Path, segment: RecipeSegment) -> Any:
    """One raw frame's segment calibrated the guide's way: overscan median, then trim."""
    import ccdproc
    from astropy.nddata import CCDData

    ccd = CCDData.read(raw, hdu=segment.hdu, unit="adu")
    ccd = ccdproc.subtract_overscan(
        ccd, fits_section=segment.overscan, median=True, overscan_axis=segment.overscan_axis
    )
    return ccdproc.trim_image(ccd, fits_section=segment.data)


def recipe_master(
    raws: Sequence[Path], segments: Sequence[RecipeSegment], mem_limit: float = 350e6
) -> dict[str, Any]:
    """Segment name -> ``ccdproc.combine`` of its calibrated frames (data, mask, uncertainty)."""
    import ccdproc
    from astropy.stats import mad_std

    masters = {}
    for segment in segments:
        calibrated = [recipe_calibrated(raw, segment) for raw in raws]
        masters[segment.name] = ccdproc.combine(
            calibrated,
            method="average",
            sigma_clip=True,
            sigma_clip_low_thresh=5,
            sigma_clip_high_thresh=5,
            sigma_clip_func=np.ma.median,
            sigma_clip_dev_func=mad_std,
            mem_limit=mem_limit,
            unit="adu",
        )
    return masters


def largest_difference(master: Any, reference: Any) -> tuple[float, float, int]:
    """Data difference (ADU), relative uncertainty difference, and mask pixels that differ.

    ``master`` and ``reference`` are CCDData; a missing mask counts as all False, a
    missing uncertainty as an infinite difference (the master must carry one).
    """
    data = float(np.max(np.abs(np.asarray(master.data, float) - np.asarray(reference.data, float))))
    if master.uncertainty is None or reference.uncertainty is None:
        relative = float("inf")
    else:
        mine = np.asarray(master.uncertainty.array, float)
        theirs = np.asarray(reference.uncertainty.array, float)
        scale = np.where(theirs == 0, 1.0, np.abs(theirs))
        relative = float(np.nanmax(np.abs(mine - theirs) / scale))
    masks = [
        np.zeros(np.shape(ccd.data), bool) if ccd.mask is None else np.asarray(ccd.mask, bool)
        for ccd in (master, reference)
    ]
    return data, relative, int(np.count_nonzero(masks[0] != masks[1]))
