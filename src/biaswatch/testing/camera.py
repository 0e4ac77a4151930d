"""Realistic raw CCD bias frames, written the way a camera program writes them.

Used by ``biaswatch simulate`` and the tests. A frame is level + the camera's
fixed pattern + a per-frame offset drift + read noise + a few cosmic rays, as
uint16 (BITPIX=16, BZERO=32768), written under its final name in pieces with
pauses, as camera software streams a readout: the watcher must wait for it.

The magnitudes below are illustrative, of the order seen in bias frames of
scientific and commercial CCD cameras (bias level ~1000 ADU, read noise a few
ADU, gradients of a few ADU, an amplifier glow of tens of ADU, hot columns of
tens to hundreds of ADU); they are not a model of any one detector.
"""

from __future__ import annotations

import functools
import io
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from biaswatch.config import CameraConfig
from biaswatch.sections import Section

# A 2k x 2k CCD (e.g. the e2v CCD42-40 is 2048 x 2048) with a 32-column serial
# overscan, a common controller setting; frames are then 2048 rows x 2080 cols.
DEFAULT_IMAGE = 2048
DEFAULT_OVERSCAN_COLS = 32

# Per-frame bias offset: controller electronics drift by a few ADU between
# frames; the drift shows in the overscan too, which is why it is subtracted.
_DRIFT_SIGMA_ADU = 3.0
# Expected cosmic-ray hits per frame: the sea-level muon flux is ~1 cm^-2 min^-1
# (PDG review "Cosmic rays"); a 2k x 2k chip of 13.5 um pixels is 7.6 cm^2 and
# collects them during a slow scientific readout of ~30-40 s: about 5.
_COSMIC_RAYS_PER_FRAME = 5
_UINT16_MAX = 65535

# Keywords astropy derives from the data array; copied headers must not carry
# them, or a stale BZERO/BITPIX could contradict the data that is written.
_STRUCTURAL = frozenset(
    {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT"}
    | {"BZERO", "BSCALE"}
)

FloatImage = npt.NDArray[np.float32]
RawImage = npt.NDArray[np.uint16]


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where the image and the overscan sit in a raw frame.

    ``rows``/``cols`` are the raw frame shape in numpy order; the sections are
    FITS notation (1-based, inclusive, x first). ``biassec`` is None when the
    camera has no overscan.
    """

    rows: int
    cols: int
    biassec: Section | None
    trimsec: Section

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"a frame needs at least one pixel, got {self.rows} x {self.cols}")
        for section in (self.biassec, self.trimsec):
            if section is not None and (problem := section.problem_with(self.shape)):
                raise ValueError(problem)

    @property
    def shape(self) -> tuple[int, int]:
        """The raw frame shape (rows, cols)."""
        return self.rows, self.cols


def section_slices(section: Section) -> tuple[slice, slice]:
    """The numpy (rows, cols) slices that select a FITS section."""
    rows = slice(min(section.y1, section.y2) - 1, max(section.y1, section.y2))
    cols = slice(min(section.x1, section.x2) - 1, max(section.x1, section.x2))
    return rows, cols


def geometry_for(camera: CameraConfig) -> Geometry:
    """A raw geometry that ``camera``'s calibrate settings accept.

    Fixed sections are used as given and the frame is the smallest that holds
    them; a section read from the header (or not used) gets the default: a
    2048 x 2048 image with a 32-column overscan strip on its right.
    """
    settings = camera.calibrate
    overscan = settings.overscan.section if settings.overscan.kind == "fixed" else None
    trim = settings.trim.section if settings.trim.kind == "fixed" else None
    overscan, trim = _sized(overscan, trim)
    if trim is None:
        trim = _image_beside(overscan)
    if overscan is None and settings.overscan.kind == "header":
        overscan = _strip_right_of(trim)
    extent = [section_slices(s) for s in (trim, overscan) if s is not None]
    rows, cols = (max(part[axis].stop for part in extent) for axis in (0, 1))
    return Geometry(rows=rows, cols=cols, biassec=overscan, trimsec=trim)


def _sized(*sections: Section | None) -> list[Section | None]:
    """Fixed sections with '*' or open ends made numbers: the other section's extent there,
    else the default image's."""
    given = [s for s in sections if s is not None]
    rows = max((v for s in given for v in (s.y1, s.y2)), default=0) or DEFAULT_IMAGE
    cols = max((v for s in given for v in (s.x1, s.x2)), default=0) or DEFAULT_IMAGE
    return [None if s is None else s.within((rows, cols)) for s in sections]


def _image_beside(overscan: Section | None) -> Section:
    """The default image, moved next to a fixed overscan it would overlap."""
    image = Section(1, DEFAULT_IMAGE, 1, DEFAULT_IMAGE)
    if overscan is None or not _overlap(image, overscan):
        return image
    rows, cols = section_slices(overscan)
    if cols.stop - cols.start <= rows.stop - rows.start:  # serial overscan: image to its right
        return Section(cols.stop + 1, cols.stop + DEFAULT_IMAGE, 1, DEFAULT_IMAGE)
    return Section(1, DEFAULT_IMAGE, rows.stop + 1, rows.stop + DEFAULT_IMAGE)  # parallel


def _strip_right_of(image: Section) -> Section:
    rows, cols = section_slices(image)
    return Section(cols.stop + 1, cols.stop + DEFAULT_OVERSCAN_COLS, rows.start + 1, rows.stop)


def _overlap(a: Section, b: Section) -> bool:
    pairs = zip(section_slices(a), section_slices(b), strict=True)
    return all(p.start < q.stop and q.start < p.stop for p, q in pairs)


def make_structure(geometry: Geometry, seed: int) -> FloatImage:
    """The camera's fixed bias pattern (ADU above the level), the same for every frame.

    The image area gets a column gradient with per-column fixed-pattern
    jitter, an amplifier-glow corner and a few hot columns; the whole frame,
    overscan included, gets a row ramp from the readout electronics, which
    overscan subtraction (one value per row) removes.
    """
    rng = np.random.default_rng(seed)
    row_ramp = _row_ramp(geometry.rows)
    structure = np.empty(geometry.shape, dtype=np.float32)
    structure[:] = _column_pattern(geometry.cols, rng)
    structure += row_ramp[:, np.newaxis]
    _add_amp_glow(structure, geometry)
    _add_hot_columns(structure, geometry, rng)
    if geometry.biassec is not None:
        rows, cols = section_slices(geometry.biassec)
        structure[rows, cols] = row_ramp[rows, np.newaxis]
    return structure


def _row_ramp(rows: int) -> FloatImage:
    # 3 ADU from first to last row: a slow drift of the bias during readout.
    return np.linspace(0.0, 3.0, rows, dtype=np.float32)


def _column_pattern(cols: int, rng: np.random.Generator) -> FloatImage:
    # 4 ADU across the chip plus 0.7 ADU rms column-to-column fixed pattern.
    gradient = np.linspace(0.0, 4.0, cols, dtype=np.float32)
    return gradient + rng.normal(0.0, 0.7, cols).astype(np.float32)


def _add_amp_glow(structure: FloatImage, geometry: Geometry) -> None:
    """40 ADU at the amplifier corner, falling off exponentially into the image."""
    rows, cols = section_slices(geometry.trimsec)
    image = structure[rows, cols]
    scale = max(image.shape) / 16.0  # ~128 px on a 2k chip
    # Only a box of 8 scale lengths: beyond it the glow is < 0.02 ADU.
    box_rows = min(image.shape[0], int(8 * scale) + 1)
    box_cols = min(image.shape[1], int(8 * scale) + 1)
    dy = np.arange(box_rows, dtype=np.float32)[:, np.newaxis]
    dx = np.arange(box_cols, dtype=np.float32)[np.newaxis, :]
    glow = 40.0 * np.exp(-np.sqrt(dy * dy + dx * dx) / scale)
    # The amplifier ends the serial register, next to the overscan; row 1 is
    # the row nearest the register.
    if _overscan_on_left(geometry):
        image[:box_rows, :box_cols] += glow
    else:
        image[:box_rows, -box_cols:] += glow[:, ::-1]


def _overscan_on_left(geometry: Geometry) -> bool:
    image_x0 = section_slices(geometry.trimsec)[1].start
    return geometry.biassec is not None and section_slices(geometry.biassec)[1].start < image_x0


def _add_hot_columns(structure: FloatImage, geometry: Geometry, rng: np.random.Generator) -> None:
    """2-5 hot columns of 20-200 ADU from a charge trap up to the last row.

    Charge of every pixel above a trap passes through it during the parallel
    transfer, so a trap brightens its column from the trap to the far end.
    """
    rows, cols = section_slices(geometry.trimsec)
    image = structure[rows, cols]
    for _ in range(int(rng.integers(2, 6))):
        column = int(rng.integers(0, image.shape[1]))
        start = int(rng.integers(0, image.shape[0]))
        image[start:, column] += np.float32(rng.uniform(20.0, 200.0))


def make_raw_bias(
    geometry: Geometry,
    rng: np.random.Generator,
    *,
    level: float = 1000.0,
    read_noise: float = 8.0,
    structure: FloatImage | None = None,
) -> RawImage:
    """One raw bias frame (uint16, ADU) of ``geometry``.

    ``structure`` is the camera's fixed pattern from :func:`make_structure`;
    pass the same array for every frame of a camera (None: the pattern of
    seed 0, the same for every call). Each frame adds its own offset drift (image
    and overscan alike), Gaussian read noise of ``read_noise`` ADU rms and a
    few cosmic rays in the image area.
    """
    if structure is None:
        structure = make_structure(geometry, seed=0)
    if structure.shape != geometry.shape:
        raise ValueError(f"structure is {structure.shape}, the geometry {geometry.shape}")
    frame = rng.standard_normal(geometry.shape, dtype=np.float32)
    frame *= np.float32(read_noise)
    frame += np.float32(level + rng.normal(0.0, _DRIFT_SIGMA_ADU))
    frame += structure
    _add_cosmic_rays(frame, geometry, rng)
    np.rint(frame, out=frame)
    np.clip(frame, 0, _UINT16_MAX, out=frame)
    return frame.astype(np.uint16)


def _add_cosmic_rays(frame: FloatImage, geometry: Geometry, rng: np.random.Generator) -> None:
    """Short straight tracks of 1-4 pixels, 300-3000 ADU, in the image area only."""
    rows, cols = section_slices(geometry.trimsec)
    image = frame[rows, cols]
    height, width = image.shape
    for _ in range(int(rng.poisson(_COSMIC_RAYS_PER_FRAME))):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        step_y, step_x = (int(v) for v in rng.integers(-1, 2, size=2))
        energy = rng.uniform(300.0, 3000.0)
        for _pixel in range(int(rng.integers(1, 5))):
            if 0 <= y < height and 0 <= x < width:
                image[y, x] += np.float32(energy)
            energy *= 0.6  # the deposit fades along the track
            y, x = y + step_y, x + step_x


def camera_header(
    camera: CameraConfig,
    geometry: Geometry,
    date_obs: datetime,
    index: int,
    *,
    gain: float = 1.5,
    read_noise: float = 8.0,
    ccd_temp: float = -100.0,
) -> fits.Header:
    """The primary header a camera program writes for bias frame ``index``.

    ``date_obs`` must be timezone-aware; it is written in UTC with millisecond
    precision. ``gain`` is e-/ADU and ``read_noise`` ADU (RDNOISE is written
    in electrons, as is customary); ``ccd_temp`` is in deg C (-100 is a
    typical LN2-cooled CCD). BIASSEC/TRIMSEC-like keywords are written only
    when the camera reads its sections from the header.
    """
    if date_obs.tzinfo is None:
        raise ValueError("date_obs must be timezone-aware (UTC is written)")
    header = fits.Header()
    header["SIMPLE"] = (True, "conforms to FITS standard")
    header["BITPIX"] = (16, "array data type")
    header["NAXIS"] = 2
    header["NAXIS1"] = geometry.cols
    header["NAXIS2"] = geometry.rows
    header["BZERO"] = (32768, "unsigned 16-bit data")
    header["BSCALE"] = 1
    header[camera.imagetyp_keyword] = (bias_value(camera), "type of image")
    header["EXPTIME"] = (0.0, "[s] exposure time")
    header["DATE-OBS"] = (_utc_iso(date_obs), "UTC start of readout")
    header["INSTRUME"] = (camera.name, "camera")
    header["XBINNING"] = 1
    header["YBINNING"] = 1
    header["CCD-TEMP"] = (ccd_temp, "[degC] CCD temperature")
    header["GAIN"] = (gain, "[e-/ADU]")
    header["RDNOISE"] = (round(read_noise * gain, 2), "[e-] read noise")
    header["FRAMENO"] = (index, "frame number in this sequence")
    for keyword, value in bias_when_cards(camera):
        header[keyword] = value  # after EXPTIME: a rule on it wins
    _add_section_keywords(header, camera, geometry)
    return header


def bias_value(camera: CameraConfig) -> str:
    """The imagetyp_keyword value a camera writes on a bias: upper case, as cameras do."""
    # The service compares lower case, so 'BIAS' and 'ZERO' match bias_values as given.
    return "BIAS" if "bias" in camera.bias_values else camera.bias_values[0].upper()


def bias_when_cards(camera: CameraConfig) -> list[tuple[str, object]]:
    """A card per bias_when rule holding its first value, as a camera would write it."""
    cards: list[tuple[str, object]] = []
    for rule in camera.bias_when or ():
        value = rule.values[0]
        if isinstance(value, str):
            cards.append((rule.keyword, value.upper()))
        elif isinstance(value, float) and value.is_integer():
            cards.append((rule.keyword, int(value)))
        else:
            cards.append((rule.keyword, value))
    return cards


def _utc_iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _add_section_keywords(header: fits.Header, camera: CameraConfig, geometry: Geometry) -> None:
    overscan, trim = camera.calibrate.overscan, camera.calibrate.trim
    if overscan.kind == "header":
        if geometry.biassec is None:
            raise ValueError(f"camera {camera.name} reads {overscan.keyword}; geometry has none")
        header[overscan.keyword] = (geometry.biassec.fits_string(), "overscan section")
    if trim.kind == "header":
        header[trim.keyword] = (geometry.trimsec.fits_string(), "image section")


def frame_bytes(
    data: npt.NDArray[Any], header: fits.Header, *, hdu: int | str | None = None
) -> bytes:
    """A complete FITS file holding ``data`` with ``header``'s keywords.

    Keywords astropy derives from the array (BITPIX, NAXISn, BZERO, ...) are
    taken from ``data``, so uint16 data is written as BITPIX=16 BZERO=32768.
    ``hdu`` (a camera's ``hdu`` setting) puts the image in an extension: an
    int n is the n-th HDU after an empty primary, a name an extension of that
    name; None or 0 is the primary HDU.
    """
    if isinstance(hdu, str) and hdu.isdigit():  # "1" from a hand-written config
        hdu = int(hdu)
    if hdu is None or hdu == 0 or (isinstance(hdu, str) and hdu.upper() == "PRIMARY"):
        hdus = [fits.PrimaryHDU(data)]
    elif isinstance(hdu, str):
        hdus = [fits.PrimaryHDU(), fits.ImageHDU(data, name=hdu.upper())]
    elif hdu > 0:
        hdus = [fits.PrimaryHDU(), *(fits.ImageHDU() for _ in range(hdu - 1)), fits.ImageHDU(data)]
    else:
        raise ValueError(f"hdu must be a name, None or >= 0, got {hdu}")
    hdus[-1].header.extend(
        (card for card in header.cards if card.keyword not in _STRUCTURAL), update=True
    )
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def write_in_pieces(path: Path, payload: bytes, pieces: int = 4, delay: float = 0.2) -> None:
    """Write ``payload`` to ``path`` as a camera does: under its final name, in pieces.

    The file is created (never overwritten: FileExistsError if it exists),
    then each of ``pieces`` chunks is written, flushed and fsynced, with
    ``delay`` seconds between chunks; nothing is written anywhere else.
    """
    if pieces < 1 or delay < 0:
        raise ValueError(f"need pieces >= 1 and delay >= 0, got {pieces} and {delay}")
    bounds = [len(payload) * i // pieces for i in range(pieces + 1)]
    with open(path, "xb") as stream:
        for number, (start, end) in enumerate(pairwise(bounds)):
            if number:
                time.sleep(delay)
            stream.write(payload[start:end])
            stream.flush()
            os.fsync(stream.fileno())


_utc_now = functools.partial(datetime.now, UTC)


def camera_seed(name: str) -> int:
    """The seed of a camera's fixed pattern: stable across runs and processes."""
    return zlib.crc32(name.encode("utf-8"))


def simulate(
    camera: CameraConfig,
    *,
    frames: int,
    interval: float,
    seed: int | None = None,
    now: Callable[[], datetime] = _utc_now,
    out_dir: Path | None = None,
    on_frame: Callable[[Path], None] | None = None,
    geometry: Geometry | None = None,
    pieces: int = 4,
    piece_delay: float = 0.2,
) -> list[Path]:
    """Write ``frames`` raw bias frames, one every ``interval`` seconds; return their paths.

    Frames go to ``out_dir`` (default ``camera.watch[0]``, created if
    missing), named ``{camera}_{UTC:%Y%m%dT%H%M%S}_{n:03d}_bias.fits`` with n
    counting from 1, each written in ``pieces`` pieces ``piece_delay`` s
    apart. DATE-OBS is ``now()`` at the start of each frame. ``seed`` seeds
    the noise; the fixed pattern depends on the camera name only, so every
    run of a camera shows the same structure. ``on_frame`` is called with
    each path once its file is complete.
    """
    if frames < 0 or interval < 0:
        raise ValueError(f"need frames >= 0 and interval >= 0, got {frames} and {interval}")
    geometry = geometry if geometry is not None else geometry_for(camera)
    structure = make_structure(geometry, camera_seed(camera.name))
    rng = np.random.default_rng(seed)
    directory = out_dir if out_dir is not None else camera.watch[0]
    directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    paths = []
    for number in range(1, frames + 1):
        # Scheduled from the start, so writing time does not accumulate.
        time.sleep(max(0.0, start + (number - 1) * interval - time.monotonic()))
        date_obs = now()
        data = make_raw_bias(geometry, rng, structure=structure)
        header = camera_header(camera, geometry, date_obs, number)
        path = directory / frame_name(camera.name, date_obs, number)
        write_in_pieces(path, frame_bytes(data, header, hdu=camera.hdu), pieces, piece_delay)
        paths.append(path)
        if on_frame is not None:
            on_frame(path)
    return paths


def frame_name(camera_name: str, date_obs: datetime, number: int) -> str:
    """The file name of frame ``number`` taken at ``date_obs``."""
    return f"{camera_name}_{date_obs.astimezone(UTC):%Y%m%dT%H%M%S}_{number:03d}_bias.fits"
