"""Frame and set quality: level, noise, and the frames that do not belong in their set."""

from __future__ import annotations

import numpy as np
import pytest

from biaswatch.rules.qc import (
    FrameQC,
    clipped_fraction,
    column_medians,
    frame_qc,
    hot_columns,
    master_cards,
    master_qc,
    robust_level_noise,
    set_outliers,
    temperature_flag,
)

RNG = np.random.default_rng(5)


def qc(level: float, noise: float = 3.0, **extra: float) -> FrameQC:
    """A frame's QC with the given level and noise and no bad pixels."""
    values = {"saturated": 0.0, "zero": 0.0, **extra}
    return FrameQC(level, noise, values["saturated"], values["zero"], None)


def a_set(levels: list[float], noise: float = 3.0) -> list[tuple[str, FrameQC]]:
    """Frames f00, f01, ... with these levels."""
    return [(f"f{i:02d}", qc(level, noise)) for i, level in enumerate(levels)]


def test_level_and_noise_of_gaussian_noise_are_recovered() -> None:
    """The subsampled median and robust sigma match the true level and noise of a bias."""
    image = (1000.0 + RNG.normal(0, 4.0, (512, 512))).astype(np.float32)
    level, noise = robust_level_noise(image)
    assert level == pytest.approx(1000.0, abs=0.1)
    assert noise == pytest.approx(4.0, rel=0.03)


def test_frame_qc_counts_saturated_and_zero_raw_pixels() -> None:
    """Saturated and zero fractions come from the raw image, level and noise from the calibrated."""
    raw = np.full((100, 100), 1000, dtype=np.uint16)
    raw[:10, :] = 65535
    raw[10:15, :] = 0
    result = frame_qc(raw, raw.astype(np.float32) - 1000.0, saturation=65535, ccd_temp=-100.0)
    assert (result.saturated, result.zero, result.ccd_temp) == (0.10, 0.05, -100.0)
    assert result.level == 0.0


def test_a_quiet_set_with_ordinary_drift_keeps_every_frame() -> None:
    """Levels that wander by a tenth of the noise are not outliers, however tight the set."""
    levels = [1000.0 + 0.03 * i for i in range(10)]
    assert set_outliers(a_set(levels), sigma=5) == []


def test_light_leak_is_rejected_with_its_reason() -> None:
    """A frame 40 ADU above the others (stray light) is left out, with the offset in the reason."""
    frames = a_set([1000.0, 1000.2, 999.9, 1040.0, 1000.1])
    (out,) = set_outliers(frames, sigma=5)
    assert out.path == "f03"
    assert "level 1040.00 ADU" in out.reason and "light leak" in out.reason


def test_mislabelled_flat_is_rejected() -> None:
    """A flat field called a bias (level thousands of ADU higher) is left out."""
    frames = [*a_set([1000.0, 1000.1, 999.8, 1000.3]), ("flat", qc(21000.0, 140.0))]
    assert [o.path for o in set_outliers(frames, sigma=5)] == ["flat"]


def test_settling_level_after_a_mode_change_is_rejected() -> None:
    """The first frames after a readout-mode change, 8 ADU high and falling, are left out."""
    levels = [1008.0, 1004.0, *(1000.0 + 0.1 * RNG.standard_normal() for _ in range(8))]
    assert [o.path for o in set_outliers(a_set(levels), sigma=5)] == ["f00", "f01"]


def test_bad_amplifier_noise_is_rejected() -> None:
    """A frame with twice the read noise of its set is left out for its noise."""
    frames = [*a_set([1000.0] * 6), ("noisy", qc(1000.0, 6.0))]
    (out,) = set_outliers(frames, sigma=5)
    assert out.path == "noisy" and out.reason.startswith("noise 6.00 ADU")


def test_saturated_frame_is_rejected_even_in_a_set_of_two() -> None:
    """A bias with saturated pixels is wrong whatever its neighbours say."""
    frames = [("good", qc(1000.0)), ("lit", qc(1000.0, saturated=0.2))]
    assert [(o.path, o.reason) for o in set_outliers(frames, sigma=5)] == [
        ("lit", "20.0% of pixels saturated (limit 1.0%)")
    ]


def test_temperature_away_from_the_setpoint_is_flagged() -> None:
    """A set taken 3 K warm of its set-point is flagged; within tolerance, or unknown, is not."""
    flag = temperature_flag([-100.1, -97.0, None], setpoint=-100.0, tolerance=2.0)
    assert flag == "CCD temperature -97.0 is +3.0 from the set-point -100 (tolerance 2)"
    assert temperature_flag([-100.5, -99.0], setpoint=-100.0, tolerance=2.0) is None
    assert temperature_flag([None], setpoint=-100.0, tolerance=2.0) is None
    assert temperature_flag([-90.0], setpoint=None, tolerance=2.0) is None


def test_master_qc_recovers_read_noise_and_master_noise() -> None:
    """Pairs of inputs give the read noise; the mean of N frames has read noise / sqrt(N)."""
    pattern = RNG.normal(0.0, 2.0, (200, 200))  # fixed pattern shared by every frame
    frames = [pattern + RNG.normal(0.0, 5.0, (200, 200)) for _ in range(16)]
    master = np.mean(frames, axis=0) - pattern
    result = master_qc(master.astype(np.float32), frames[:4], frames=16)
    assert result.read_noise == pytest.approx(5.0, rel=0.05)
    assert result.expected_noise == pytest.approx(5.0 / 4, rel=0.05)
    assert result.noise == pytest.approx(5.0 / 4, rel=0.1)
    assert result.hot_columns == 0


def test_hot_columns_are_counted() -> None:
    """Three columns 30 ADU above the rest are counted as hot; a flat master has none."""
    master = RNG.normal(0.0, 1.0, (300, 100))
    assert hot_columns(master) == 0
    master[:, [5, 50, 77]] += 30.0
    assert hot_columns(master) == 3
    cards = dict((k, v) for k, v, _ in master_cards(master_qc(master, [], frames=1)))
    assert cards["QC_HOTCO"] == 3


@pytest.mark.parametrize("rows", [1, 2, 37, 64, 301])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_column_medians_equal_numpys_median_of_float64(rows: int, dtype: type) -> None:
    """column_medians gives np.median(float64 image, axis=0) bit for bit, NaN columns too."""
    image = (RNG.normal(0.0, 8.0, (rows, 53)) * 1000).astype(dtype)
    image[:, 3] = image[0, 3]  # a constant column: equal middle values
    if np.issubdtype(dtype, np.floating):
        image[rows // 2, 7] = np.nan
        image[:, 9] = np.inf
    expected = np.median(np.asarray(image, dtype=np.float64), axis=0)
    assert np.array_equal(column_medians(image), expected, equal_nan=True)


def test_hot_columns_of_a_float32_master_match_the_float64_definition() -> None:
    """hot_columns on a float32 master counts what the plain float64 median would."""
    master = RNG.normal(0.0, 1.0, (256, 300)).astype(np.float32)
    master[:, [4, 44, 144]] += np.float32(10.0)
    medians = np.median(master.astype(np.float64), axis=0)
    centre = np.median(medians)
    spread = 1.482602218505602 * np.median(np.abs(medians - centre))
    assert hot_columns(master) == int(np.count_nonzero(medians - centre > 5.0 * spread)) == 3


def test_clipped_fraction_matches_astropy_sigma_clip() -> None:
    """The fraction equals astropy's sigma_clip mask (one pass, median, mad_std) on the stack."""
    from astropy.stats import sigma_clip

    stack = RNG.normal(1000.0, 5.0, (10, 4000))
    hits = RNG.random(stack.shape) < 0.01  # cosmic rays in 1% of the values
    stack[hits] += RNG.uniform(100.0, 5000.0, int(hits.sum()))
    mask = sigma_clip(
        stack, sigma_lower=5, sigma_upper=5, maxiters=1, cenfunc="median", stdfunc="mad_std", axis=0
    ).mask
    fraction = clipped_fraction(stack, 5.0, 5.0, "median", "mad_std")
    assert fraction == pytest.approx(float(mask.mean()), abs=1e-12)
    # Every cosmic ray, plus the Gaussian values a 10-frame MAD (itself noisy) puts
    # beyond 5 sigma: about 0.5% more here.
    assert float(hits.mean()) < fraction < 0.02
