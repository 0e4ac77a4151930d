"""Test support shipped with biaswatch: small real FITS files, a clock, a notifier.

Everything here writes or fakes real things (FITS files readable by astropy
and ccdproc, sd_notify messages) so that tests exercise the code paths the
service runs at night, only smaller and faster.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from biaswatch.testing.camera import write_in_pieces

if TYPE_CHECKING:
    from biaswatch.settings import CombineSettings

__all__ = [
    "FakeClock",
    "FakeNotifier",
    "bias_stack",
    "fits_bytes",
    "make_bias_fits",
    "seed_combine",
    "seed_combined",
    "truncated_copy",
    "write_cryo_raw",
    "write_in_pieces",
    "write_segment_stack",
    "write_stack",
]

Layout = Literal["primary", "extension", "compressed"]
DType = Literal["uint16", "uint32", "int16", "float32"]


def make_bias_fits(
    path: Path,
    *,
    shape: tuple[int, int] = (40, 48),
    overscan_cols: int = 8,
    imagetyp: str | None = "BIAS",
    date_obs: str | None = "2026-11-25T02:00:00.000",
    layout: Layout = "primary",
    dtype: DType = "uint16",
    level: float = 1000.0,
    noise: float = 5.0,
    seed: int = 0,
    header: Mapping[str, object] | None = None,
    binning: tuple[int, int] | None = None,
) -> Path:
    """Write a small raw bias FITS file to ``path`` and return ``path``.

    ``shape`` is the raw (rows, cols), the last ``overscan_cols`` columns being
    overscan; BIASSEC (absent without overscan) and TRIMSEC describe them.
    ``imagetyp``/``date_obs`` None leave IMAGETYP/DATE-OBS out. ``layout``:
    'primary' image; 'extension' empty primary + ImageHDU 'SCI'; 'compressed'
    empty primary + tile-compressed CompImageHDU (name the file .fits.fz).
    Unsigned dtypes are stored with BZERO, as cameras write them. ``header``
    adds or overrides keywords (None deletes one); ``binning`` (x, y) writes
    XBINNING/YBINNING. Pixels are level + Gaussian noise from ``seed``: the
    same arguments give the same bytes, except for DATE (the time the file was
    made; pass ``header={"DATE": None}`` for fully repeatable bytes).
    """
    path.write_bytes(
        fits_bytes(
            shape=shape,
            overscan_cols=overscan_cols,
            imagetyp=imagetyp,
            date_obs=date_obs,
            layout=layout,
            dtype=dtype,
            level=level,
            noise=noise,
            seed=seed,
            header=header,
            binning=binning,
        )
    )
    return path


def fits_bytes(
    *,
    shape: tuple[int, int] = (40, 48),
    overscan_cols: int = 8,
    imagetyp: str | None = "BIAS",
    date_obs: str | None = "2026-11-25T02:00:00.000",
    layout: Layout = "primary",
    dtype: DType = "uint16",
    level: float = 1000.0,
    noise: float = 5.0,
    seed: int = 0,
    header: Mapping[str, object] | None = None,
    binning: tuple[int, int] | None = None,
) -> bytes:
    """The content :func:`make_bias_fits` writes for the same arguments."""
    rows, cols = shape
    if rows < 1 or cols < 1 or not 0 <= overscan_cols < cols:
        raise ValueError(
            f"need a 2-D shape with 0 <= overscan_cols < cols; got {shape}, {overscan_cols}"
        )
    data = _pixels(shape, dtype, level, noise, seed)
    hdus = _hdus(data, layout)
    image_header = hdus[-1].header
    image_header.extend(_raw_cards(shape, overscan_cols, imagetyp, date_obs, binning))
    for keyword, value in (header or {}).items():
        if value is None:
            image_header.remove(keyword, ignore_missing=True, remove_all=True)
        else:
            image_header[keyword] = value
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def _pixels(
    shape: tuple[int, int], dtype: DType, level: float, noise: float, seed: int
) -> npt.NDArray[Any]:
    values = np.random.default_rng(seed).normal(level, noise, shape)
    if dtype == "float32":
        return values.astype(np.float32)
    limits = np.iinfo(dtype)
    return np.clip(np.rint(values), limits.min, limits.max).astype(dtype)


def _hdus(data: npt.NDArray[Any], layout: Layout) -> list[Any]:
    if layout == "primary":
        return [fits.PrimaryHDU(data)]
    if layout == "extension":
        return [fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]
    if layout == "compressed":
        # Lossless, as fpack does for integers (RICE); floats get GZIP without
        # quantisation so read-back values equal the written ones.
        options: dict[str, Any] = (
            {"compression_type": "GZIP_2", "quantize_level": 0.0}
            if data.dtype.kind == "f"
            else {"compression_type": "RICE_1"}
        )
        return [fits.PrimaryHDU(), fits.CompImageHDU(data, **options)]
    raise ValueError(f"unknown layout {layout!r}")


def _raw_cards(
    shape: tuple[int, int],
    overscan_cols: int,
    imagetyp: str | None,
    date_obs: str | None,
    binning: tuple[int, int] | None,
) -> list[tuple[str, object, str]]:
    rows, cols = shape
    image_cols = cols - overscan_cols
    cards: list[tuple[str, object, str]] = []
    if imagetyp is not None:
        cards.append(("IMAGETYP", imagetyp, "type of image"))
    cards.append(("EXPTIME", 0.0, "[s] exposure time"))
    if date_obs is not None:
        cards.append(("DATE-OBS", date_obs, "UTC start of readout"))
    cards.append(("DATE", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "file written"))
    if binning is not None:
        cards += [("XBINNING", binning[0], "x binning"), ("YBINNING", binning[1], "y binning")]
    if overscan_cols:
        cards.append(("BIASSEC", f"[{image_cols + 1}:{cols},1:{rows}]", "overscan section"))
    cards.append(("TRIMSEC", f"[1:{image_cols},1:{rows}]", "image section"))
    return cards


def write_cryo_raw(
    path: Path,
    seed: int,
    *,
    image_offset: float = 0.0,
    image_noise: float = 5.0,
    kind: str = "BIAS",
    date_obs: str | None = None,
) -> Path:
    """A cryo raw frame (48 image + 8 overscan columns) whose image sits ``image_offset`` above
    its overscan; dated 2030-01-15T03:00:<seed> (a night no clock rule closes) unless given."""
    rng = np.random.default_rng(seed)
    data = 1000.0 + rng.normal(0.0, 5.0, (40, 56))
    data[:, :48] = 1000.0 + image_offset + rng.normal(0.0, image_noise, (40, 48))
    header = fits.Header()
    header["IMAGETYP"] = kind
    header["DATE-OBS"] = date_obs or f"2030-01-15T03:00:{seed:02d}"
    header["BIASSEC"] = "[49:56,1:40]"
    header["TRIMSEC"] = "[1:48,1:40]"
    hdu = fits.PrimaryHDU(np.clip(np.round(data), 0, 65535).astype(np.uint16), header)
    hdu.writeto(path)
    return path


def bias_stack(n: int, shape: tuple[int, int] = (40, 50), seed: int = 0) -> npt.NDArray[np.float32]:
    """Calibrated bias frames for the combine engine: Gaussian, a hot column, a few cosmic rays."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(1000.0, 5.0, (n, *shape))
    stack[:, :, 7] += 150.0  # hot column: high in every frame, so never clipped
    hits = rng.integers(0, (n, *shape), size=(3 * n, 3))
    stack[hits[:, 0], hits[:, 1], hits[:, 2]] += rng.uniform(200.0, 3000.0, 3 * n)
    return stack.astype(np.float32)


def write_stack(
    directory: Path,
    stack: npt.NDArray[np.float32],
    header: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write each frame of ``stack`` as a single-HDU float32 FITS file (bias_NNN.fits).

    ``header`` adds cards to every frame (BWNAMP/BWAN<i>/BWAS<i> for amplifiers, say).
    """
    paths = []
    for i, frame in enumerate(stack):
        path = directory / f"bias_{i:03d}.fits"
        hdu = fits.PrimaryHDU(np.asarray(frame, dtype=np.float32))
        hdu.header.update(dict(header or {}))
        hdu.writeto(path)
        paths.append(path)
    return paths


def write_segment_stack(
    directory: Path,
    stacks: Mapping[str, npt.NDArray[np.float32]],
    primary: Mapping[str, object] | None = None,
) -> list[Path]:
    """Calibrated MEF work files (issue 13's layout), one per frame: bias_NNN.fits.

    Each file has an empty primary (with ``primary``'s cards) and one float32 image
    extension per ``stacks`` entry, in order, EXTNAME = its key; every stack is
    (frames, rows, cols), the same number of frames each.
    """
    counts = {len(stack) for stack in stacks.values()}
    if len(counts) != 1:
        raise ValueError(f"every segment needs the same number of frames, got {counts}")
    paths = []
    for i in range(counts.pop()):
        path = directory / f"bias_{i:03d}.fits"
        head = fits.PrimaryHDU()
        head.header.update(dict(primary or {}))
        images = [
            fits.ImageHDU(np.asarray(stack[i], dtype=np.float32), name=name)
            for name, stack in stacks.items()
        ]
        fits.HDUList([head, *images]).writeto(path)
        paths.append(path)
    return paths


def truncated_copy(src: Path, dst: Path, keep_bytes: int) -> Path:
    """Copy the first ``keep_bytes`` bytes of ``src`` to ``dst`` (a cut-off transfer)."""
    payload = src.read_bytes()
    if not 0 <= keep_bytes <= len(payload):
        raise ValueError(f"keep_bytes must be 0..{len(payload)} for {src}, got {keep_bytes}")
    dst.write_bytes(payload[:keep_bytes])
    return dst


class FakeClock:
    """A settable clock for tests: now() is aware UTC, monotonic() seconds; advance() moves both."""

    def __init__(self, start: datetime = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._start = start.astimezone(UTC)
        self._elapsed = 0.0
        self._lock = threading.Lock()  # the service reads the clock from its threads

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        """Seconds on a clock that only moves forward, like time.monotonic()."""
        with self._lock:
            # Not zero at the start, so code that treats 0 as "never" is caught.
            return 1000.0 + self._elapsed

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got {seconds}")
        with self._lock:
            self._elapsed += seconds


class FakeNotifier:
    """Records sd_notify messages instead of sending them to systemd."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def notify(self, message: str) -> None:
        """Record ``message`` (e.g. 'READY=1', 'WATCHDOG=1', 'STATUS=...')."""
        self.messages.append(message)


def seed_combine(
    images: Sequence[Any], mem_limit: float = 350e6, settings: CombineSettings | None = None
) -> npt.NDArray[np.float64]:
    """The image of seed_combined (which see)."""
    combined = seed_combined(images, mem_limit, settings)
    return np.asarray(combined.data, dtype=np.float64)


def seed_combined(
    images: Sequence[Any],
    mem_limit: float = 350e6,
    settings: CombineSettings | None = None,
    hdu: int | str | None = None,
) -> Any:
    """The reference: the seed recipe's ``ccdproc.combine`` call, with mad_std spelt right.

    ``images`` are file names or CCDData objects; ``settings`` change the statistics
    (default: the seed's, average with 5/5 clipping around the median with mad_std).
    The seed passes ``signma_clip_dev_func=mad_std``, which ccdproc ignores (clipping
    with std); this passes ``sigma_clip_dev_func``, which is what the seed meant.
    ``ccdproc.combine`` cannot iterate the clipping, so ``maxiters`` must be 1.
    Returns ccdproc's CCDData (data, mask, StdDevUncertainty); ``hdu`` reads that HDU
    (a segment's EXTNAME) of each file.
    """
    import ccdproc
    from astropy.stats import mad_std

    from biaswatch.settings import CombineSettings

    settings = settings or CombineSettings()
    if settings.maxiters != 1:
        raise ValueError("ccdproc.combine clips once; compare maxiters > 1 with Combiner")
    combined = ccdproc.combine(
        list(images),
        method=settings.method,
        sigma_clip=settings.sigma_clip,
        sigma_clip_low_thresh=settings.sigma_low,
        sigma_clip_high_thresh=settings.sigma_high,
        sigma_clip_func=np.ma.median if settings.center == "median" else np.ma.mean,
        sigma_clip_dev_func=mad_std if settings.deviation == "mad_std" else np.ma.std,
        mem_limit=mem_limit,
        unit="adu",
        **({} if hdu is None else {"hdu": hdu}),
    )
    return combined


def service_master(directory: Path, inputs: Sequence[Path], camera: str = "cli") -> Path:
    """The master the service's combine child writes for calibrated ``inputs`` (in-process)."""
    from biaswatch.combine.child import CombineJob, make_master
    from biaswatch.combine.master_file import MasterInfo
    from biaswatch.settings import CombineSettings

    names = tuple(p.name for p in inputs)
    info = MasterInfo(camera, "-", 1, "g", names, CombineSettings(), 350_000_000, "0" * 64)
    job = CombineJob(1, tuple(str(p) for p in inputs), str(directory / "svc" / "m.fits"), info)
    result = make_master(job)
    assert result.temporary is not None, result.reason
    return Path(result.temporary)
