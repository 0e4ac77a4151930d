"""Calibrate one raw bias: subtract the overscan, trim, keep float32.

This is the seed recipe's first step (ccdproc ``subtract_overscan`` with a
median collapse, then ``trim_image``), run once per frame as it lands so that
only the combine is left when a set completes. A section that does not fit
the frame is that frame's error, naming the setting or keyword, never a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog
from astropy.io import fits

from biaswatch.errors import FrameRejected
from biaswatch.frames.readiness import header_value
from biaswatch.frames.workfile import write_images
from biaswatch.sections import Section, SectionSource
from biaswatch.settings import CalibrateSettings

if TYPE_CHECKING:
    from astropy.modeling.models import Polynomial1D

log = structlog.get_logger(__name__)

# (camera, source) pairs whose "auto" overscan choice was logged: once each per process.
_CHOSEN: set[tuple[str, str]] = set()

# Keywords that describe the raw layout and would be wrong after trimming.
_RAW_LAYOUT = ("BIASSEC", "TRIMSEC", "DATASEC", "CCDSEC", "BZERO", "BSCALE")
_STRUCTURE = ("SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME")


def resolve_section(
    source: SectionSource, header: fits.Header, shape: tuple[int, int], setting: str
) -> Section | None:
    """The section to use for ``setting`` ("overscan" or "trim"), checked against ``shape``.

    Raises:
        FrameRejected: the keyword is missing or unreadable, or the section does not fit.
    """
    if source.kind == "none":
        return None
    if source.kind == "auto":
        return auto_overscan(header, shape)[0]
    if source.kind == "header":
        origin = f"{setting} = header:{source.keyword}"
        value = header_value(header, source.keyword)
        if value is None:
            raise FrameRejected(f"{origin}: keyword {source.keyword} is missing from the header")
        try:
            section = Section.parse(str(value))
        except ValueError as exc:
            raise FrameRejected(f"{origin}: {exc}") from None
    else:
        assert source.section is not None
        origin, section = f"{setting} = {source.describe()}", source.section
    problem = section.problem_with(shape)
    if problem is not None:
        raise FrameRejected(f"{origin}: {problem}")
    return section.within(shape)  # '*' and open ends made this image's numbers


def auto_overscan(header: fits.Header, shape: tuple[int, int]) -> tuple[Section, str]:
    """``overscan = "auto"``: BIASSEC when the HDU has it, else every column after DATASEC.

    Returns the section and where it came from ("BIASSEC" or "after DATASEC").

    Raises:
        FrameRejected: neither keyword, an unreadable one, or no column after DATASEC.
    """
    if header_value(header, "BIASSEC") is not None:
        source = SectionSource("header", keyword="BIASSEC")
        section = resolve_section(source, header, shape, "overscan = auto")
        assert section is not None
        return section, "BIASSEC"
    datasec = resolve_section(
        SectionSource("header", keyword="DATASEC"), header, shape, "overscan = auto (no BIASSEC)"
    )
    assert datasec is not None
    last = max(datasec.x1, datasec.x2)
    rows, cols = shape
    if last >= cols:
        raise FrameRejected(
            f"overscan = auto: no BIASSEC, and DATASEC {datasec.fits_string()} reaches the "
            f"last of the {cols} columns, leaving no overscan after it"
        )
    # Every row: ccdproc subtracts one overscan value per row of the whole image.
    return Section(last + 1, cols, 1, rows), "after DATASEC"


def note_overscan_choice(camera: str, header: fits.Header) -> None:
    """Log once per camera (and source) which overscan "auto" chose (calibrate.overscan_chosen)."""
    source = "BIASSEC" if header_value(header, "BIASSEC") is not None else "after DATASEC"
    if (camera, source) not in _CHOSEN:
        _CHOSEN.add((camera, source))
        log.info("calibrate.overscan_chosen", camera=camera, source=source)


def calibrate_image(
    image: np.ndarray, header: fits.Header, settings: CalibrateSettings, camera: str = ""
) -> np.ndarray:
    """Overscan-subtract and trim ``image`` as ccdproc does; returns float32.

    Raises:
        FrameRejected: a section does not fit, or ccdproc refuses the frame.
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    overscan = resolve_section(settings.overscan, header, shape, "overscan")
    if settings.overscan.kind == "auto":
        note_overscan_choice(camera, header)
    trim = resolve_section(settings.trim, header, shape, "trim")
    if overscan is not None:
        _check_overscan_spans(overscan, shape, settings)
    if overscan is not None and settings.overscan_model != "median":
        return _calibrate_with_ccdproc(image, overscan, trim, settings)
    return median_calibrated(image, overscan, trim, settings.overscan_axis)


def median_calibrated(
    image: np.ndarray, overscan: Section | None, trim: Section | None, axis: int
) -> np.ndarray:
    """ccdproc's ``subtract_overscan(median=True)`` then ``trim_image``, in numpy alone.

    The same operations on the same float32 values as ccdproc (core.py: the
    overscan's ``np.median`` along ``axis``, reshaped and subtracted), but only on
    the trimmed pixels and without CCDData's copies: 0.07 -> 0.03 s for a
    4096 x 4128 frame (benchmarks/ingest.py). float32 halves the memory traffic and
    is exact for median overscans: raw values and their medians are multiples of
    0.5 below 2**16, so their difference is exact in float32.
    """
    shape = image.shape
    rows, cols = trim.slices(shape) if trim is not None else (slice(None), slice(None))
    kept = image[rows, cols]
    if overscan is None:
        return np.array(kept, dtype=np.float32)  # a copy of its own, as CCDData's
    strip = np.asarray(image[overscan.slices(shape)], dtype=np.float32)
    level = np.median(strip, axis=axis)
    # One value per row (axis 1) or column (axis 0) of the whole image, then the trim's.
    level = level[rows][:, np.newaxis] if axis == 1 else level[cols][np.newaxis, :]
    # Each raw value cast to float32 first, as ccdproc's image.astype(float32), in one pass.
    return np.asarray(np.subtract(kept, level, dtype=np.float32, casting="unsafe"))


def _calibrate_with_ccdproc(
    image: np.ndarray, overscan: Section, trim: Section | None, settings: CalibrateSettings
) -> np.ndarray:
    """A fitted overscan (``poly:N``): ccdproc's own fit, imported only for it (0.4 s)."""
    import ccdproc  # lazily: most cameras never fit a model
    from astropy import units as u
    from astropy.nddata import CCDData

    # A poly:N fit is float64 in ccdproc and promotes the subtraction to float64 itself.
    ccd = CCDData(image.astype(np.float32), unit=u.adu)
    ccd = ccdproc.subtract_overscan(
        ccd,
        fits_section=overscan.fits_string(),
        overscan_axis=settings.overscan_axis,
        median=True,
        model=ccdproc_overscan_model(settings.overscan_model),
    )
    if trim is not None:
        ccd = ccdproc.trim_image(ccd, fits_section=trim.fits_string())
    return np.asarray(ccd.data, dtype=np.float32)


def _check_overscan_spans(
    section: Section, shape: tuple[int, int], settings: CalibrateSettings
) -> None:
    # ccdproc collapses the overscan along overscan_axis and subtracts the
    # result row by row (axis 1) or column by column (axis 0): the strip must
    # cover every row (or column), or numpy cannot broadcast it.
    rows, cols = section.shape()
    axis = settings.overscan_axis
    if (axis == 1 and rows != shape[0]) or (axis == 0 and cols != shape[1]):
        along = "rows" if axis == 1 else "columns"
        raise FrameRejected(
            f"overscan = {settings.overscan.describe()} ({section.fits_string()}) does not cover "
            f"all {shape[0] if axis == 1 else shape[1]} {along} needed for overscan_axis={axis}"
        )


def ccdproc_overscan_model(model: str) -> Polynomial1D | None:
    """ccdproc's model for an ``overscan_model`` setting (None: the median)."""
    from astropy.modeling.models import Polynomial1D  # only for a fit

    if model == "median":
        return None
    return Polynomial1D(degree=int(model.split(":", 1)[1]))


def calibrated_header(raw: fits.Header) -> fits.Header:
    """The raw header without the raw-layout keywords that trimming invalidates.

    One ``Header(cards)`` call: ``Header.append`` card by card is quadratic in
    astropy (20,000 cards took 32 s, 100,000 took 9 minutes; issue 11, finding 10).
    Cards astropy cannot parse (control characters) are left out: a bad OBSERVER
    card is no reason to lose a bias, and writing it would fail verification.
    """
    kept = [card for card in raw.cards if _kept(card)]
    return fits.Header(kept)


def _kept(card: fits.Card) -> bool:
    key = card.keyword
    if not key or key in _RAW_LAYOUT or key in _STRUCTURE or key.startswith("NAXIS"):
        return False
    try:
        card.verify("exception")
    except Exception:  # astropy's VerifyError: the card cannot be written back
        return False
    return True


def write_calibrated(data: np.ndarray, header: fits.Header, path: Path) -> Path:
    """Write a calibrated frame to the work area (temporary name, then rename)."""
    return write_images(path, [fits.PrimaryHDU(data=data, header=header)])
