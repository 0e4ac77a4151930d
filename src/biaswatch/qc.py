"""Quality of frames and sets: pure statistics and decisions, no files.

Modelled on the QC parameters ESO's bias recipes write (QC.BIAS.MASTER.MEAN,
QC.RON, QC.FPN, QC.STRUCT; the KMOS, MUSE and FORS pipelines' ``*_bias``
recipes): a bias is described by its level, its noise, and whatever departs
from both. Frames far from the rest of their set are the ones DESI's nightly
bias was polluted by: a light leak, a mislabelled flat, a bad amplifier, the
first frames after a readout-mode change whose level is still settling
(desispec issues 1562, 2737, 2777).

Statistics are taken on a regular subsample of about SAMPLE_PIXELS pixels: a
4096 x 4096 frame keeps 1,048,576 of them at a stride of 4, which pins a median
to ~0.001 of the noise (standard error 1.25 sigma / sqrt(n)) in about 20 ms
instead of the 0.5 s a full median takes. Smaller frames are used whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# About this many pixels are sampled: see the module docstring for cost and precision.
SAMPLE_PIXELS = 1 << 20
# 1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian sigma.
MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True, slots=True)
class FrameQC:
    """One calibrated frame's level and noise, and its raw extremes."""

    level: float  # median, ADU
    noise: float  # robust standard deviation (MAD x 1.4826), ADU
    saturated: float  # fraction of raw pixels at or above saturation
    zero: float  # fraction of raw pixels equal to zero
    ccd_temp: float | None  # from the header, when the camera writes it


def _sample(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    stride = max(1, math.isqrt(image.size // SAMPLE_PIXELS))
    sample = np.asarray(image[::stride, ::stride], dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def robust_level_noise(image: npt.NDArray[np.floating]) -> tuple[float, float]:
    """Median and MAD-based sigma of an image's subsample."""
    sample = _sample(image)
    if sample.size == 0:
        return math.nan, math.nan
    level = float(np.median(sample))
    return level, float(MAD_TO_SIGMA * np.median(np.abs(sample - level)))


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
