"""Raw frames of every camera layout: the one factory tests and ``simulate`` build them with.

Issue 13 names the layouts seen at telescopes; each is small real FITS here:

``single``      one image, BIASSEC and TRIMSEC (today's camera);
``extensions``  an empty primary and N image extensions (one per CCD or amplifier),
                each with its EXTNAME and DATASEC, and BIASSEC only when asked
                (else the overscan is every column after DATASEC), a level each;
``amplifiers``  N amplifiers side by side in one image, their overscans at the end
                of the row in the same order (levels 944 and 966 ADU, as the
                2-amplifier spectrograph of issue 13);
``binned``      a window of a chip read with ``CCDSUM = '2 1'`` (DATASEC, BIASSEC).

Pixels are uint16 stored with BZERO = 32768, as cameras write them, and come from
``seed`` alone: the same arguments give the same bytes. Header keywords are set
with ``header=`` (a value, or None to delete one); :data:`BIAS_LABELS` holds the
ways real headers say "bias" and :func:`date_cards` the ways they say when.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from biaswatch.config import CameraConfig
from biaswatch.sections import Section
from biaswatch.testing.camera import (
    bias_value,
    bias_when_cards,
    frame_name,
    section_slices,
    write_in_pieces,
)

LayoutKind = Literal["single", "extensions", "amplifiers", "binned"]
LAYOUT_KINDS: tuple[LayoutKind, ...] = ("single", "extensions", "amplifiers", "binned")

# The labels issue 13 found in real headers, one bias each (keyword -> value).
BIAS_LABELS: dict[str, dict[str, object]] = {
    "imagetyp": {"IMAGETYP": "BIAS", "EXPTIME": 0.0},
    "zero": {"IMAGETYP": "zero", "EXPTIME": 0.0},
    "obstype": {"OBSTYPE": "Bias", "EXPTIME": 0.0},
    "dark_zero": {"OBSTYPE": "DARK", "EXPTIME": 0.0},
    # OBSTYPE 'dark' on every frame, science included; no EXPTIME at all.
    "object": {"OBJECT": "bias", "ELAPTIME": 0, "OBSTYPE": "dark", "EXPTIME": None},
}
DEFAULT_DATE = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
# A row ramp of 3 ADU over the readout, in data and overscan alike: what a
# median overscan per row removes (testing/camera.py uses the same drift).
_ROW_RAMP_ADU = 3.0


@dataclass(frozen=True, slots=True)
class RawSegment:
    """One readout region of a raw layout: its name, data and overscan, its level in ADU."""

    name: str
    data: Section
    overscan: Section
    level: float


@dataclass(frozen=True, slots=True)
class RawLayout:
    """Where a layout's segments lie: per HDU (``extensions``) or in one image."""

    kind: LayoutKind
    rows: int
    cols: int
    segments: tuple[RawSegment, ...]
    biassec: bool = True
    ccdsum: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """The raw shape (rows, cols) of one image HDU."""
        return self.rows, self.cols

    def amplifier_tables(self) -> list[dict[str, str]]:
        """``[[cameras.X.calibrate.amplifiers]]`` entries describing this layout's amplifiers."""
        return [
            {"name": s.name, "data": s.data.fits_string(), "overscan": s.overscan.fits_string()}
            for s in self.segments
        ]


def single_layout(rows: int = 40, data_cols: int = 40, overscan_cols: int = 8) -> RawLayout:
    """Today's camera: one image, overscan on the right, BIASSEC and TRIMSEC."""
    cols = data_cols + overscan_cols
    segment = RawSegment(
        "", Section(1, data_cols, 1, rows), Section(data_cols + 1, cols, 1, rows), 1000.0
    )
    return RawLayout("single", rows, cols, (segment,))


def extensions_layout(
    count: int = 3,
    *,
    rows: int = 40,
    data_cols: int = 40,
    overscan_cols: int = 8,
    prescan_cols: int = 0,
    levels: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    biassec: bool = False,
) -> RawLayout:
    """``count`` image extensions; DATASEC after ``prescan_cols``, overscan the columns after it.

    Levels default to 1000, 1010, 1020... ADU; names to CCD1, CCD2... With
    ``biassec`` each HDU also says BIASSEC (the overscan's last column left out,
    as readout electronics often spoil it).
    """
    levels = list(levels) if levels is not None else [1000.0 + 10 * i for i in range(count)]
    names = list(names) if names is not None else [f"CCD{i + 1}" for i in range(count)]
    if len(levels) != count or len(names) != count:
        raise ValueError(f"need {count} levels and names, got {len(levels)} and {len(names)}")
    cols = prescan_cols + data_cols + overscan_cols
    data = Section(prescan_cols + 1, prescan_cols + data_cols, 1, rows)
    last = cols - 1 if biassec and overscan_cols > 1 else cols
    overscan = Section(prescan_cols + data_cols + 1, last, 1, rows)
    segments = tuple(
        RawSegment(name, data, overscan, level) for name, level in zip(names, levels, strict=True)
    )
    return RawLayout("extensions", rows, cols, segments, biassec=biassec)


def amplifiers_layout(
    levels: Sequence[float] = (944.0, 966.0),
    *,
    rows: int = 35,
    amp_cols: int = 32,
    overscan_cols: int = 8,
    names: Sequence[str] | None = None,
) -> RawLayout:
    """Amplifiers side by side in one image, their overscans at the end of the row, in order.

    Each overscan leaves out its first column (the one next to the previous
    strip, where charge of the last data pixel smears), as the issue's example does.
    """
    names = list(names) if names is not None else [chr(ord("A") + i) for i in range(len(levels))]
    if len(names) != len(levels):
        raise ValueError(f"need {len(levels)} names, got {len(names)}")
    data_end = amp_cols * len(levels)
    segments = []
    for index, (name, level) in enumerate(zip(names, levels, strict=True)):
        data = Section(index * amp_cols + 1, (index + 1) * amp_cols, 1, rows)
        start = data_end + index * overscan_cols
        overscan = Section(start + 2, start + overscan_cols, 1, rows)
        segments.append(RawSegment(name, data, overscan, float(level)))
    cols = data_end + overscan_cols * len(levels)
    return RawLayout("amplifiers", rows, cols, tuple(segments))


def binned_layout(
    rows: int = 30, data_cols: int = 24, overscan_cols: int = 6, ccdsum: str = "2 1"
) -> RawLayout:
    """A window of a chip, binned: DATASEC, BIASSEC and ``CCDSUM`` (x then y binning)."""
    cols = data_cols + overscan_cols
    segment = RawSegment(
        "", Section(1, data_cols, 1, rows), Section(data_cols + 1, cols, 1, rows), 1000.0
    )
    return RawLayout("binned", rows, cols, (segment,), ccdsum=ccdsum)


def layout_named(kind: LayoutKind) -> RawLayout:
    """The default small layout of ``kind``."""
    if kind == "extensions":
        return extensions_layout()
    if kind == "amplifiers":
        return amplifiers_layout()
    return binned_layout() if kind == "binned" else single_layout()


def date_cards(
    when: dt.datetime = DEFAULT_DATE, *, date_only: bool = False, time_keyword: str = "UT"
) -> dict[str, object]:
    """DATE-OBS with its time, or the date alone plus the time in ``time_keyword`` (UT, UTC,
    TIME-OBS)."""
    utc = when.astimezone(dt.UTC).replace(tzinfo=None)
    if not date_only:
        return {"DATE-OBS": utc.isoformat(timespec="milliseconds")}
    return {"DATE-OBS": utc.date().isoformat(), time_keyword: utc.time().isoformat("milliseconds")}


def layout_bytes(
    layout: RawLayout,
    *,
    seed: int = 0,
    noise: float = 5.0,
    signal: float = 0.0,
    header: Mapping[str, object | None] | None = None,
) -> bytes:
    """A complete raw frame of ``layout``: level + row ramp + Gaussian ``noise`` from ``seed``.

    ``signal`` ADU are added to the data sections only (a flat or an arc, not a
    bias). ``header`` sets keywords in the primary HDU over the defaults
    (IMAGETYP = 'BIAS', EXPTIME = 0, DATE-OBS); None deletes one.
    """
    rng = np.random.default_rng(seed)
    cards: dict[str, object | None] = {**BIAS_LABELS["imagetyp"], **date_cards()}
    cards.update(header or {})
    if layout.ccdsum is not None:
        cards.setdefault("CCDSUM", layout.ccdsum)
    if layout.kind == "extensions":
        hdus = _extension_hdus(layout, rng, noise, signal)
    else:
        hdus = [fits.PrimaryHDU(_one_image(layout, rng, noise, signal))]
        _section_cards(hdus[0].header, layout, layout.segments[0])
    _apply(hdus[0].header, cards)
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def write_layout_frame(path: Path, layout: RawLayout, **options: Any) -> Path:
    """Write :func:`layout_bytes` (same options) to ``path`` and return ``path``."""
    path.write_bytes(layout_bytes(layout, **options))
    return path


def _extension_hdus(
    layout: RawLayout, rng: np.random.Generator, noise: float, signal: float
) -> list[Any]:
    hdus: list[Any] = [fits.PrimaryHDU()]
    for segment in layout.segments:
        pixels = _empty(layout)
        _fill(pixels, segment, layout.rows, rng, noise, signal)
        hdu = fits.ImageHDU(_to_uint16(pixels), name=segment.name)
        _section_cards(hdu.header, layout, segment)
        hdus.append(hdu)
    return hdus


def _one_image(
    layout: RawLayout, rng: np.random.Generator, noise: float, signal: float
) -> npt.NDArray[np.uint16]:
    pixels = _empty(layout)
    for segment in layout.segments:
        _fill(pixels, segment, layout.rows, rng, noise, signal)
    return _to_uint16(pixels)


def _empty(layout: RawLayout) -> npt.NDArray[np.float64]:
    # Columns no segment claims (prescan, skipped overscan columns) sit at the first level.
    return np.full(layout.shape, layout.segments[0].level, dtype=np.float64)


def _fill(
    pixels: npt.NDArray[np.float64],
    segment: RawSegment,
    rows: int,
    rng: np.random.Generator,
    noise: float,
    signal: float,
) -> None:
    ramp = np.linspace(0.0, _ROW_RAMP_ADU, rows)[:, np.newaxis]
    for section, extra in ((segment.data, signal), (segment.overscan, 0.0)):
        y, x = section_slices(section)
        shape = pixels[y, x].shape
        pixels[y, x] = segment.level + extra + ramp[y] + rng.normal(0.0, noise, shape)


def _to_uint16(pixels: npt.NDArray[np.float64]) -> npt.NDArray[np.uint16]:
    return np.clip(np.rint(pixels), 0, 65535).astype(np.uint16)


def _section_cards(header: fits.Header, layout: RawLayout, segment: RawSegment) -> None:
    """The sections a camera writes into an image HDU's header for this layout."""
    if layout.kind == "amplifiers":
        return  # the amplifiers' sections live in the camera's config, not the header
    header["DATASEC"] = (segment.data.fits_string(), "image section")
    if layout.kind != "extensions":
        header["TRIMSEC"] = (segment.data.fits_string(), "image section")
    if layout.biassec:
        header["BIASSEC"] = (segment.overscan.fits_string(), "overscan section")


def _apply(header: fits.Header, cards: Mapping[str, object | None]) -> None:
    for keyword, value in cards.items():
        if value is None:
            header.remove(keyword, ignore_missing=True, remove_all=True)
        else:
            header[keyword] = value


# --- the layouts as `biaswatch simulate --layout` writes them -----------------

# Realistic sizes, from the cameras of issue 13: an echelle CCD of 2048 rows with
# DATASEC [7:1030,1:2048] in 1070 columns; a window of a 2k chip read binned 2 x 1.
# Read noise of the simulated frames, ADU: of the order of testing/camera.py's 8 ADU.
_SIMULATED_NOISE = 8.0
# The two amplifiers of issue 13 sit at 944 and 966 ADU; more step up by as much.
_AMP_LEVEL, _AMP_STEP = 944.0, 22.0


def layout_for(camera: CameraConfig, kind: LayoutKind) -> RawLayout:
    """The raw layout ``simulate --layout kind`` writes for ``camera``.

    ``amplifiers`` follows the camera's ``calibrate.amplifiers`` (fixed sections),
    so that its frames are the ones its config describes.

    Raises:
        ValueError: ``amplifiers`` for a camera without fixed amplifier sections.
    """
    if kind == "extensions":
        return extensions_layout(4, rows=2048, data_cols=1024, overscan_cols=40, prescan_cols=6)
    if kind == "binned":
        return binned_layout(rows=512, data_cols=1024, overscan_cols=16)
    if kind == "single":
        return single_layout(2048, 2048, 32)
    return _configured_amplifiers(camera)


def _configured_amplifiers(camera: CameraConfig) -> RawLayout:
    amps = camera.calibrate.amplifiers
    if not amps or any(a.data.section is None or a.overscan.section is None for a in amps):
        raise ValueError(
            f"camera {camera.name} has no calibrate.amplifiers with fixed sections; "
            "--layout amplifiers writes the frames they describe (see config.toml's twoamp)"
        )
    segments = tuple(
        RawSegment(a.name, a.data.section, a.overscan.section, _AMP_LEVEL + _AMP_STEP * i)
        for i, a in enumerate(amps)
        if a.data.section is not None and a.overscan.section is not None
    )
    sections = [s for seg in segments for s in (seg.data, seg.overscan)]
    rows = max(max(s.y1, s.y2) for s in sections)
    cols = max(max(s.x1, s.x2) for s in sections)
    return RawLayout("amplifiers", rows, cols, segments)


_utc_clock = functools.partial(dt.datetime.now, dt.UTC)


def simulate_layout(
    camera: CameraConfig,
    kind: LayoutKind,
    *,
    frames: int,
    interval: float,
    seed: int | None = None,
    now: Callable[[], dt.datetime] = _utc_clock,
    on_frame: Callable[[Path], None] | None = None,
    pieces: int = 4,
    piece_delay: float = 0.2,
) -> list[Path]:
    """Write ``frames`` bias frames of layout ``kind`` into the camera's first watch directory.

    As :func:`biaswatch.testing.camera.simulate`: one every ``interval`` seconds,
    named by :func:`frame_name`, each written in ``pieces`` pieces.
    """
    layout = layout_for(camera, kind)
    rng = np.random.default_rng(seed)
    directory = camera.watch[0]
    directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    paths = []
    for number in range(1, frames + 1):
        time.sleep(max(0.0, start + (number - 1) * interval - time.monotonic()))
        when = now()
        # The labels the camera's rules look for: IMAGETYP, or every bias_when rule.
        cards = {
            camera.imagetyp_keyword: bias_value(camera),
            **dict(bias_when_cards(camera)),
            **date_cards(when),
        }
        payload = layout_bytes(
            layout, seed=int(rng.integers(2**31)), noise=_SIMULATED_NOISE, header=cards
        )
        path = directory / frame_name(camera.name, when, number)
        write_in_pieces(path, payload, pieces, piece_delay)
        paths.append(path)
        if on_frame is not None:
            on_frame(path)
    return paths
