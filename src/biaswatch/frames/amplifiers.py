"""Several amplifiers in one image: each corrected with its own overscan, then put back together.

A detector read through two (or four) output amplifiers gives one image whose
columns (or rows) belong to different amplifiers, each with its own bias level
and its own overscan strip, often all at the end of the row. One overscan for
the whole image leaves a step at the amplifier boundary (22 ADU for the 944 and
966 ADU amplifiers of issue 13). So each amplifier's data section is corrected
with its own overscan, by ccdproc's recipe (``subtract_overscan`` with
``overscan=`` that strip, then nothing to trim: the data section is the cut),
and the calibrated image is the data sections at their raw positions, trimmed to
their bounding box. Its header says where each amplifier lies (BWNAMP, BWAN<i>,
BWAS<i>, in the calibrated image's coordinates), so the combine and its QC can
find them again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from biaswatch.errors import FrameRejected
from biaswatch.frames.calibrate import ccdproc_overscan_model, resolve_section
from biaswatch.sections import Section
from biaswatch.settings import AmplifierSettings, CalibrateSettings


@dataclass(frozen=True, slots=True)
class AmplifierRegion:
    """One amplifier of a calibrated image: where it lies there, its raw and calibrated pixels."""

    name: str
    section: Section  # in the calibrated image, FITS 1-based, ascending
    raw: np.ndarray  # the raw data section (for the saturated and zero fractions)
    data: np.ndarray  # the calibrated pixels (a view into the calibrated image)


def calibrate_amplifiers(
    image: np.ndarray, header: fits.Header, settings: CalibrateSettings
) -> tuple[np.ndarray, list[AmplifierRegion]]:
    """The calibrated image (float32) of ``settings.amplifiers`` and each amplifier's region.

    Raises:
        FrameRejected: a section does not fit, an overscan does not span its data,
            or the data sections overlap or leave holes in their bounding box.
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    cuts = [_amplifier_cut(image, header, shape, amp, settings) for amp in settings.amplifiers]
    box = _bounding_box([section for _, section, _ in cuts])
    out = np.zeros(box.shape(), dtype=np.float32)
    filled = np.zeros(box.shape(), dtype=np.uint8)
    regions = []
    for name, section, piece in cuts:
        placed = _relative(section, box)
        rows, cols = _amp_slices(placed)
        out[rows, cols] = piece
        filled[rows, cols] += 1
        raw = image[_amp_slices(section)]
        regions.append(AmplifierRegion(name, placed, raw, out[rows, cols]))
    _check_tiling(filled, box)
    return out, regions


def amplifier_cards(regions: list[AmplifierRegion]) -> list[tuple[str, object, str]]:
    """BWNAMP, then BWAN<i> (name) and BWAS<i> (section in the calibrated image) per amplifier."""
    cards: list[tuple[str, object, str]] = [("BWNAMP", len(regions), "amplifiers in this image")]
    for index, region in enumerate(regions, start=1):
        cards.append((f"BWAN{index}", region.name, "amplifier name"))
        cards.append((f"BWAS{index}", region.section.fits_string(), "amplifier section"))
    return cards


def _amplifier_cut(
    image: np.ndarray,
    header: fits.Header,
    shape: tuple[int, int],
    amp: AmplifierSettings,
    settings: CalibrateSettings,
) -> tuple[str, Section, np.ndarray]:
    """One amplifier's data section minus its own overscan (ccdproc), and where it was."""
    where = f"amplifier {amp.name}"
    data = resolve_section(amp.data, header, shape, f"{where} data")
    overscan = resolve_section(amp.overscan, header, shape, f"{where} overscan")
    assert data is not None and overscan is not None  # an amplifier's sections are never none
    # Ascending: the pixels sit at their raw positions, never flipped (a reversed
    # section selects the same pixels, as ccdproc's parser reads it).
    data, overscan = _ascending(data), _ascending(overscan)
    axis = settings.overscan_axis if amp.overscan_axis is None else amp.overscan_axis
    model = settings.overscan_model if amp.overscan_model is None else amp.overscan_model
    _check_spans(where, data, overscan, axis)
    if model == "median":
        piece = _median_corrected(image, data, overscan, axis)
    else:
        piece = _fitted_corrected(image, data, overscan, axis, model)
    return amp.name, data, piece


def _median_corrected(image: np.ndarray, data: Section, overscan: Section, axis: int) -> np.ndarray:
    """ccdproc's subtract_overscan(overscan=strip, median=True) of the data section, in numpy.

    The same float32 operations (the strip's median along ``axis``, subtracted per row
    or column) without CCDData's copies of the whole image; tests/unit/test_calibrate.py
    holds it to ccdproc's pixels.
    """
    kept = image[data.slices(image.shape)]
    strip = np.asarray(image[overscan.slices(image.shape)], dtype=np.float32)
    level = np.median(strip, axis=axis)
    level = level[:, np.newaxis] if axis == 1 else level[np.newaxis, :]
    return np.asarray(np.subtract(kept, level, dtype=np.float32, casting="unsafe"))


def _fitted_corrected(
    image: np.ndarray, data: Section, overscan: Section, axis: int, model: str
) -> np.ndarray:
    """A fitted overscan model (``poly:N``) by ccdproc itself, imported only then (0.4 s)."""
    import ccdproc  # lazily: a median overscan needs none of it
    from astropy import units as u
    from astropy.nddata import CCDData

    ccd = CCDData(image.astype(np.float32), unit=u.adu)
    corrected = ccdproc.subtract_overscan(
        ccdproc.trim_image(ccd, fits_section=data.fits_string()),
        overscan=ccdproc.trim_image(ccd, fits_section=overscan.fits_string()),
        overscan_axis=axis,
        median=True,
        model=ccdproc_overscan_model(model),
    )
    return np.asarray(corrected.data, dtype=np.float32)


def _check_spans(where: str, data: Section, overscan: Section, axis: int) -> None:
    # ccdproc subtracts one overscan value per row (axis 1) or column (axis 0): the
    # strip must lie beside the data over the same rows (or columns).
    same = (data.y1, data.y2) == (overscan.y1, overscan.y2)
    if axis == 0:
        same = (data.x1, data.x2) == (overscan.x1, overscan.x2)
    if not same:
        along = "rows" if axis == 1 else "columns"
        raise FrameRejected(
            f"{where}: overscan {overscan.fits_string()} does not cover the same {along} as "
            f"its data {data.fits_string()} (overscan_axis = {axis})"
        )


def _ascending(section: Section) -> Section:
    return Section(
        min(section.x1, section.x2),
        max(section.x1, section.x2),
        min(section.y1, section.y2),
        max(section.y1, section.y2),
    )


def _bounding_box(sections: list[Section]) -> Section:
    return Section(
        min(s.x1 for s in sections),
        max(s.x2 for s in sections),
        min(s.y1 for s in sections),
        max(s.y2 for s in sections),
    )


def _relative(section: Section, box: Section) -> Section:
    """``section`` in the coordinates of an image cut out at ``box``."""
    dx, dy = box.x1 - 1, box.y1 - 1
    return Section(section.x1 - dx, section.x2 - dx, section.y1 - dy, section.y2 - dy)


def _amp_slices(section: Section) -> tuple[slice, slice]:
    return slice(section.y1 - 1, section.y2), slice(section.x1 - 1, section.x2)


def _check_tiling(filled: np.ndarray, box: Section) -> None:
    """The amplifiers' data must cover their bounding box once: no overlap, no hole."""
    overlap = int(np.count_nonzero(filled > 1))
    holes = int(np.count_nonzero(filled == 0))
    if overlap or holes:
        raise FrameRejected(
            f"the amplifiers' data sections do not tile their bounding box {box.fits_string()}: "
            f"{overlap} pixels in two amplifiers, {holes} pixels in none"
        )
