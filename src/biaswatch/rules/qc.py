"""Quality of frames and sets: pure statistics and decisions, no files.

Modelled on the QC parameters ESO's bias recipes write (QC.BIAS.MASTER.MEAN,
QC.RON, QC.FPN, QC.STRUCT; the KMOS, MUSE and FORS pipelines' ``*_bias``
recipes): a bias is described by its level, its noise, and whatever departs
from both. Frames far from the rest of their set are the ones DESI's nightly
bias was polluted by: a light leak, a mislabelled flat, a bad amplifier, the
first frames after a readout-mode change whose level is still settling
(desispec issues 1562, 2737, 2777).

Statistics are taken on a regular subsample of about SAMPLE_PIXELS pixels: a
4096 x 4096 frame keeps 262,144 of them at a stride of 8, which pins a median
to ~0.0025 of the noise (standard error 1.25 sigma / sqrt(n)) in a few ms
instead of the 0.5 s a full median takes, and keeps the QC's own memory to a
few MB in a combine child whose budget is the combine's (benchmarks/burst.py
caught 1M-value samples of 50 frames using 90 MiB). Smaller frames are used whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# About this many pixels are sampled: see the module docstring for cost and precision.
SAMPLE_PIXELS = 1 << 18
# 1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian sigma.
MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True, slots=True)
class FrameQC:
    """One calibrated frame's level and noise, and its raw extremes."""

    level: float  # median, ADU
    noise: float  # robust standard deviation (clipped, robust_level_noise), ADU
    saturated: float  # fraction of raw pixels at or above saturation
    zero: float  # fraction of raw pixels equal to zero
    ccd_temp: float | None  # from the header, when the camera writes it


def _sample(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    stride = max(1, math.ceil(math.sqrt(image.size / SAMPLE_PIXELS)))
    return np.asarray(image[::stride, ::stride], dtype=np.float64)


def robust_level_noise(image: npt.NDArray[np.floating], rounded: int = 1) -> tuple[float, float]:
    """Median and robust sigma (a 4-sigma clipped standard deviation) of an image's subsample.

    Not a MAD: on integer-valued frames the MAD moves in whole ADU, so its sigma moved
    in steps of 0.74 ADU (a true 2 ADU was stored as 1.48). A clipped standard deviation
    is continuous, and clipping from a MAD start leaves cosmic rays and hot pixels out.
    ``rounded`` is how many whole-ADU values each pixel is made of (2 for the difference
    of two frames): each brought its own rounding error, taken out on integer data.
    """
    grid = _sample(image)
    sample = grid.ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return math.nan, math.nan
    level = float(np.median(sample))
    sigma = clipped_sigma(sample, level)
    if _on_lattice(grid):
        sigma = math.sqrt(max(sigma * sigma - rounded * _ROUNDING_VARIANCE, 0.0))
    return level, sigma


# The clip, in sigmas: a Gaussian keeps all but 6e-5 of its values within 4 sigma, so the
# clip does not bite into real noise; a hot pixel or cosmic ray of a bias is far beyond.
CLIP_SIGMA = 4.0
# The standard deviation of a Gaussian truncated at +-4 sigma is 0.99946 sigma
# (1 - 2 k phi(k) / (2 Phi(k) - 1) = 0.99893 of the variance, k = 4): divided out.
_CLIP_STD = 0.99946
# Whole-ADU rounding adds a uniform error of variance 1/12 ADU^2 (Sheppard's
# correction); taken out again on data that lie on an integer lattice.
_ROUNDING_VARIANCE = 1.0 / 12.0
_LATTICE_SHARE = 0.9
_CLIP_ITERATIONS = 5  # at most: each is one pass over the sample


def clipped_sigma(sample: npt.NDArray[np.float64], centre: float) -> float:
    """Iterated 4-sigma clipped standard deviation around ``centre``, started from the MAD.

    Measured on 20 draws of 65,536 integer-rounded Gaussian values with 3 % outliers:
    mean bias under 0.2 % for sigma 0.8 to 8 ADU, where the MAD was off by -26 % to +85 %,
    and astropy's mad_std or biweight_scale (after the same rounding correction) by +3 to
    +13 % (the outliers pull them). On a 4096 x 4096 float32 frame (262,144 values
    sampled) median and noise take 13.3 ms, the MAD's 7.0 ms (best of 7, this 2-core
    machine). tests/unit/test_qc_noise.py checks bias and continuity.
    """
    deviation = np.abs(sample - centre)
    sigma = MAD_TO_SIGMA * float(np.median(deviation))
    if sigma == 0:  # most values equal: fall back to the plain standard deviation
        sigma = float(np.std(sample))
    for _ in range(_CLIP_ITERATIONS):
        kept = sample[deviation <= CLIP_SIGMA * sigma]
        if kept.size < 2:
            break
        updated = float(np.std(kept)) / _CLIP_STD
        if updated == sigma:
            break
        sigma = updated
    return sigma


def _on_lattice(grid: npt.NDArray[np.float64]) -> bool:
    """Whether neighbours along rows (or columns) differ by whole ADU: integer data.

    A calibrated frame is raw integers minus an overscan level that is constant along a
    row (or a column), so its neighbours still differ by whole numbers; a master (a mean)
    does not. float32 holds 1e5 ADU to 0.008, hence the tolerance of 0.01; nine in ten
    whole steps suffice (a bad column or a NaN patch must not hide the lattice).
    """
    for axis in (1, 0):
        steps = np.diff(grid, axis=axis)
        steps = steps[np.isfinite(steps)]
        if steps.size and np.mean(np.abs(steps - np.round(steps)) < 0.01) >= _LATTICE_SHARE:
            return True
    return False


def frame_qc(
    raw: npt.NDArray[np.number],
    calibrated: npt.NDArray[np.floating],
    *,
    saturation: float,
    ccd_temp: float | None,
) -> FrameQC:
    """Level and noise of the calibrated image; saturated and zero fractions of the raw one."""
    level, noise = robust_level_noise(calibrated)
    size = max(raw.size, 1)
    return FrameQC(
        level=level,
        noise=noise,
        saturated=float(np.count_nonzero(raw >= saturation)) / size,
        zero=float(np.count_nonzero(raw == 0)) / size,
        ccd_temp=ccd_temp,
    )


@dataclass(frozen=True, slots=True)
class Outlier:
    """A frame to leave out of its set's combine, and why."""

    path: str
    reason: str


def _spread(values: Sequence[float]) -> tuple[float, float]:
    """Median and MAD-based sigma of a few numbers."""
    array = np.asarray(values, dtype=np.float64)
    centre = float(np.median(array))
    return centre, float(MAD_TO_SIGMA * np.median(np.abs(array - centre)))


def set_outliers(
    frames: Sequence[tuple[str, FrameQC]],
    *,
    sigma: float,
    max_bad_fraction: float = 0.01,
) -> list[Outlier]:
    """Frames whose level or noise is ``sigma`` robust sigmas from the rest of their set.

    A set's levels often agree to a small fraction of the read noise, so their
    scatter alone would make an ordinary drift look like an outlier; the
    scatter is therefore floored at a quarter of the median noise (a level
    shift under a quarter of the read noise moves the master by less than its
    own noise for up to 16 frames). Frames with more than ``max_bad_fraction``
    saturated or zero pixels are out whatever their level: a bias has neither.
    """
    if len(frames) < 3:  # a median of two says nothing about which one is odd
        return [o for path, qc in frames if (o := _extremes(path, qc, max_bad_fraction))]
    level, level_spread = _spread([qc.level for _, qc in frames])
    noise, noise_spread = _spread([qc.noise for _, qc in frames])
    level_scale = max(level_spread, noise / 4)
    noise_scale = max(noise_spread, noise / 20)
    out = []
    for path, qc in frames:
        extreme = _extremes(path, qc, max_bad_fraction)
        if extreme is not None:
            out.append(extreme)
        elif abs(qc.level - level) > sigma * level_scale:
            off = (qc.level - level) / level_scale
            out.append(
                Outlier(
                    path,
                    f"level {qc.level:.2f} ADU is {off:+.1f} robust sigma from the set's "
                    f"{level:.2f} (limit {sigma:g}): light leak, wrong frame type or settling",
                )
            )
        elif qc.noise - noise > sigma * noise_scale:
            off = (qc.noise - noise) / noise_scale
            out.append(
                Outlier(
                    path,
                    f"noise {qc.noise:.2f} ADU is {off:+.1f} robust sigma above the set's "
                    f"{noise:.2f} (limit {sigma:g}): bad amplifier, light or interference",
                )
            )
    return out


def segment_outliers(
    frames: Sequence[tuple[str, Sequence[tuple[str, FrameQC]]]],
    *,
    sigma: float,
    max_bad_fraction: float = 0.01,
) -> list[Outlier]:
    """Frames one of whose segments is far from the same segment of the rest of the set.

    Each segment (image HDU or amplifier, by name) is screened as :func:`set_outliers`
    screens whole frames, against that segment's levels and noises in the set: one
    amplifier with a light leak or twice its read noise is hidden in a whole-frame
    median of four. The reason names the segment; a frame is reported once, for the
    first segment (in raw order) that puts it out.
    """
    names: list[str] = []
    for _, segments in frames:
        names += [name for name, _ in segments if name not in names]
    out: dict[str, Outlier] = {}
    for name in names:
        measured = [
            (path, quality)
            for path, segments in frames
            if path not in out
            for segment, quality in segments
            if segment == name
        ]
        for outlier in set_outliers(measured, sigma=sigma, max_bad_fraction=max_bad_fraction):
            out[outlier.path] = Outlier(outlier.path, f"segment {name}: {outlier.reason}")
    return list(out.values())


def _extremes(path: str, qc: FrameQC, limit: float) -> Outlier | None:
    if qc.saturated > limit:
        return Outlier(path, f"{qc.saturated:.1%} of pixels saturated (limit {limit:.1%})")
    if qc.zero > limit:
        return Outlier(path, f"{qc.zero:.1%} of pixels are zero (limit {limit:.1%})")
    return None


def temperature_flag(
    temps: Sequence[float | None], setpoint: float | None, tolerance: float
) -> str | None:
    """Why a set's CCD temperatures are away from the set-point, or None when fine."""
    known = [t for t in temps if t is not None]
    if setpoint is None or not known:
        return None
    worst = max(known, key=lambda t: abs(t - setpoint))
    if abs(worst - setpoint) <= tolerance:
        return None
    return (
        f"CCD temperature {worst:.1f} is {worst - setpoint:+.1f} from the set-point "
        f"{setpoint:g} (tolerance {tolerance:g})"
    )


@dataclass(frozen=True, slots=True)
class MasterQC:
    """A master's QC, as ESO's bias recipes describe one (QC.BIAS.MASTER.*, QC.RON)."""

    level: float  # median of the master, ADU
    noise: float  # the master's own robust noise, ADU
    read_noise: float  # from differences of pairs of inputs, ADU
    expected_noise: float  # read_noise / sqrt(frames): the noise of a flat master
    hot_columns: int  # columns whose median stands out (fixed pattern)
    rejected_fraction: float = 0.0  # of the inputs' pixels the sigma clip left out (sampled)


def pair_read_noise(frames: Sequence[npt.NDArray[np.floating]]) -> float:
    """Read noise from differences of consecutive pairs: sigma(A - B) / sqrt(2), median.

    Differencing removes the fixed pattern every frame shares, leaving only the
    noise of the readout (the usual way; e.g. ESO's QC.RON from bias pairs).
    """
    estimates = [
        robust_level_noise(first.astype(np.float64) - second, rounded=2)[1] / math.sqrt(2)
        for first, second in zip(frames[0::2], frames[1::2], strict=False)
    ]
    return float(np.median(estimates)) if estimates else math.nan


def hot_columns(master: npt.NDArray[np.floating], sigma: float = 5.0) -> int:
    """Columns whose median is more than ``sigma`` robust sigmas above the others'."""
    medians = column_medians(master)
    centre, spread = _spread(list(medians))
    if spread == 0:
        return 0
    return int(np.count_nonzero(medians - centre > sigma * spread))


# Rows per tile of the transposed copy in column_medians: numpy's plain ``.T`` copy of a
# 4096 x 4096 float32 image took 131 ms (every write strided), tiles of 8/16/32/64 rows
# 37/25/46/58 ms (best of 3, this 2-core machine): 16 rows of 4 bytes fill a 64-byte
# cache line of each output row.
_TILE_ROWS = 16


def column_medians(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``np.median(image as float64, axis=0)``: the same values, in a quarter of the time.

    Why not that line: its median along axis 0 selects through strided columns of a
    float64 copy (0.47-1.2 s for a 4096 x 4096 master, the QC's largest cost: issue 14).
    Here the columns become contiguous rows of one transposed copy in the image's own
    float32 (exact: a float32 value is exactly a float64), selected in place, and the
    two middle values of an even count are averaged in float64 as np.median does; a
    column holding a NaN is NaN, as there. 4096 x 4096 float32: 25 ms copy + 110 ms
    selection. tests/unit/test_qc.py compares it with np.median.
    """
    values = np.asarray(image)
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    rows, cols = values.shape
    if rows == 0:
        return np.median(np.asarray(values, dtype=np.float64), axis=0)
    columns = np.empty((cols, rows), dtype=dtype)
    for start in range(0, rows, _TILE_ROWS):
        columns[:, start : start + _TILE_ROWS] = values[start : start + _TILE_ROWS].T
    middle = rows // 2
    columns.partition(middle, axis=1)
    medians = columns[:, middle].astype(np.float64)
    if rows % 2 == 0:  # the largest of the lower half is the other middle value
        lower = columns[:, :middle].max(axis=1).astype(np.float64)
        medians = (lower + medians) / 2
    medians[np.isnan(columns).any(axis=1)] = np.nan
    return medians


def clipped_fraction(
    stack: npt.NDArray[np.floating], low: float, high: float, center: str, deviation: str
) -> float:
    """Fraction of a (frames, pixels) stack one pass of the combine's sigma clip leaves out.

    The same rule as the combine's first iteration (ccdproc's sigma_clip: outside
    centre - low x deviation .. centre + high x deviation, per pixel across frames),
    on a sample of pixels: an estimate, cheap next to the combine itself.
    """
    values = np.asarray(stack, dtype=np.float64)
    if values.shape[0] < 3:  # no clipping is meaningful on one or two values
        return 0.0
    middle = np.median(values, axis=0) if center == "median" else np.mean(values, axis=0)
    if deviation == "mad_std":
        spread = MAD_TO_SIGMA * np.median(np.abs(values - middle), axis=0)
    else:
        spread = np.std(values, axis=0)
    out = (values < middle - low * spread) | (values > middle + high * spread)
    return float(np.count_nonzero(out)) / values.size


def master_qc(
    master: npt.NDArray[np.floating],
    inputs: Sequence[npt.NDArray[np.floating]],
    frames: int,
    rejected_fraction: float = 0.0,
) -> MasterQC:
    """The master's level, noise and hot columns; read noise from (a few of) its inputs."""
    level, noise = robust_level_noise(master)
    read_noise = pair_read_noise(inputs)
    return MasterQC(
        level=level,
        noise=noise,
        read_noise=read_noise,
        expected_noise=read_noise / math.sqrt(max(frames, 1)),
        hot_columns=hot_columns(master),
        rejected_fraction=rejected_fraction,
    )


def master_cards(qc: MasterQC) -> list[tuple[str, float | int, str]]:
    """FITS cards for a master's header (8-character keywords, ESO's QC names in comments).

    A value that could not be measured (the read noise of a single input) is left
    out: FITS headers cannot hold NaN.
    """
    cards: list[tuple[str, float | int, str]] = [
        ("QC_LEVEL", round(qc.level, 4), "[adu] median level (QC.BIAS.MASTER.MEDIAN)"),
        ("QC_NOISE", round(qc.noise, 4), "[adu] master robust noise (QC.BIAS.MASTER.RMS)"),
        ("QC_RON", round(qc.read_noise, 4), "[adu] read noise from input pairs (QC.RON)"),
        ("QC_RONEX", round(qc.expected_noise, 4), "[adu] read noise / sqrt(NCOMBINE)"),
        ("QC_HOTCO", qc.hot_columns, "columns whose median stands out by 5 sigma"),
        ("QC_REJFR", round(qc.rejected_fraction, 6), "fraction of input pixels clipped"),
    ]
    return [card for card in cards if math.isfinite(card[1])]


_FROM_CARDS = {
    "level": "QC_LEVEL",
    "noise": "QC_NOISE",
    "read_noise": "QC_RON",
    "expected_noise": "QC_RONEX",
}


def master_qc_from_header(header: Mapping[str, object]) -> MasterQC | None:
    """The QC a master's header carries (None for masters written before QC)."""
    if "QC_LEVEL" not in header:
        return None
    values = {name: _float(header.get(key)) for name, key in _FROM_CARDS.items()}
    hot = header.get("QC_HOTCO", 0)
    rejected = _float(header.get("QC_REJFR", 0.0))
    return MasterQC(
        **values,
        hot_columns=int(hot) if isinstance(hot, int | float) else 0,
        rejected_fraction=rejected,
    )


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan
