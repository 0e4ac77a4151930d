"""A frame's segments calibrated, their QC, and the calibrated work file that holds them.

A segment is a named image region combined on its own (issue 13): each image
HDU of a frame with several (named by EXTNAME, else ``HDU<index>``), each
amplifier of ``calibrate.amplifiers`` (its name), or both (``EXTNAME.AMP``).
A frame with one image HDU and no amplifiers has one segment with no name and
is calibrated and written exactly as before.

The work file (read by combine/): one segment, a float32 primary image as
before; several image HDUs, an empty primary with the calibrated primary
header, then one float32 ImageHDU per HDU in raw order, EXTNAME = segment name;
amplifiers, each image carries BWNAMP, BWAN<i> and BWAS<i> (frames/amplifiers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.errors import FrameRejected
from biaswatch.frames.amplifiers import AmplifierRegion, amplifier_cards, calibrate_amplifiers
from biaswatch.frames.calibrate import calibrate_image, calibrated_header, resolve_section
from biaswatch.frames.readiness import RawFrame, SegmentImage
from biaswatch.frames.workfile import write_images
from biaswatch.rules.qc import FrameQC, frame_qc
from biaswatch.settings import CalibrateSettings


@dataclass(frozen=True, slots=True)
class CalibratedImage:
    """One image HDU of a frame calibrated: its pixels, header and amplifier regions."""

    name: str  # the HDU's segment name; "" for a frame of one image HDU
    raw: np.ndarray
    data: np.ndarray  # float32
    header: fits.Header  # calibrated; with BWNAMP... when it holds amplifiers
    amplifiers: tuple[AmplifierRegion, ...] = ()


def calibrate_frame(
    frame: RawFrame, settings: CalibrateSettings, camera: str
) -> list[CalibratedImage]:
    """Every image HDU of ``frame`` calibrated with the sections its own header gives."""
    return [_calibrate_one(part, settings, camera) for part in frame.images()]


def _calibrate_one(part: SegmentImage, settings: CalibrateSettings, camera: str) -> CalibratedImage:
    _check_finite(part.name, part.image)
    header = calibrated_header(part.own if part.own is not None else part.header)
    if not settings.amplifiers:
        data = calibrate_image(part.image, part.header, settings, camera)
        return CalibratedImage(part.name, part.image, data, header)
    try:
        data, regions = calibrate_amplifiers(part.image, part.header, settings)
    except FrameRejected as exc:
        raise FrameRejected(f"HDU {part.name}: {exc.reason}" if part.name else exc.reason) from None
    header.extend(amplifier_cards(regions), update=True)
    return CalibratedImage(part.name, part.image, data, header, tuple(regions))


def _check_finite(name: str, image: np.ndarray) -> None:
    """A raw bias holds finite readings; NaN or inf means a broken writer, not a bias."""
    if np.issubdtype(image.dtype, np.floating):
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            where = f" of HDU {name}" if name else ""
            raise FrameRejected(f"{bad} of {image.size} pixels{where} are NaN or infinite")


def raw_segments(frame: RawFrame, settings: CalibrateSettings) -> list[tuple[str, tuple[int, int]]]:
    """Each segment's name and RAW shape (rows, cols): an HDU's image, or an amplifier's data.

    From the raw frame and the camera's sections alone, with no calibration, so that
    ``masters --like`` labels a science frame as cheaply as the service labels a bias.

    Raises:
        FrameRejected: an amplifier's data section does not fit the image.
    """
    shapes: list[tuple[str, tuple[int, int]]] = []
    for part in frame.images():
        shape = (int(part.image.shape[0]), int(part.image.shape[1]))
        if not settings.amplifiers:
            shapes.append((part.name, shape))
        for amp in settings.amplifiers:
            data = resolve_section(amp.data, part.header, shape, f"amplifier {amp.name} data")
            if data is None:  # an amplifier's data is never "none" (settings.py)
                raise FrameRejected(f"amplifier {amp.name} has no data section")
            shapes.append((_joined(part.name, amp.name), data.shape()))
    return shapes


def segment_qc(
    images: list[CalibratedImage], *, saturation: float | None, ccd_temp: float | None
) -> tuple[FrameQC, tuple[tuple[str, FrameQC], ...]]:
    """The whole frame's QC and each segment's (empty for a frame of one segment).

    The whole frame's, for several segments, follows the master's aggregate rule
    (issue 13): the median of the segments' levels, the largest noise, and the
    saturated and zero fractions over all their pixels.
    """
    parts = [
        (_joined(image.name, name), raw, data)
        for image in images
        for name, raw, data in _regions(image)
    ]
    each = tuple(
        (name, frame_qc(raw, data, saturation=_saturation(raw, saturation), ccd_temp=ccd_temp))
        for name, raw, data in parts
    )
    if len(each) == 1:
        return each[0][1], ()
    return _aggregate([qc for _, qc in each], [raw.size for _, raw, _ in parts], ccd_temp), each


def _regions(image: CalibratedImage) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not image.amplifiers:
        return [("", image.raw, image.data)]
    return [(region.name, region.raw, region.data) for region in image.amplifiers]


def _joined(hdu: str, amplifier: str) -> str:
    return ".".join(part for part in (hdu, amplifier) if part)


def _aggregate(qcs: list[FrameQC], sizes: list[int], ccd_temp: float | None) -> FrameQC:
    weights = np.asarray(sizes, dtype=np.float64)
    weights /= max(float(weights.sum()), 1.0)
    return FrameQC(
        level=float(np.median([qc.level for qc in qcs])),
        noise=max(qc.noise for qc in qcs),
        saturated=float(np.dot(weights, [qc.saturated for qc in qcs])),
        zero=float(np.dot(weights, [qc.zero for qc in qcs])),
        ccd_temp=ccd_temp,
    )


def _saturation(raw: np.ndarray, configured: float | None) -> float:
    """The configured saturation, else the raw type's largest value (none for floats)."""
    if configured is not None:
        return configured
    if np.issubdtype(raw.dtype, np.integer):
        return float(np.iinfo(raw.dtype).max)
    return float("inf")


def write_work_file(frame: RawFrame, images: list[CalibratedImage], path: Path) -> Path:
    """Write the calibrated work file (temporary name, then rename) in the shared layout."""
    if len(images) == 1:
        hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [
            fits.PrimaryHDU(data=images[0].data, header=images[0].header)
        ]
    else:
        primary = calibrated_header(frame.primary if frame.primary is not None else frame.header)
        hdus = [fits.PrimaryHDU(header=primary)]
        hdus += [fits.ImageHDU(data=i.data, header=i.header, name=i.name) for i in images]
    return write_images(path, hdus)
