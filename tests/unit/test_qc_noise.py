"""The robust noise of integer-valued frames: unbiased and continuous (issue 13, part 9)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from biaswatch.rules.qc import pair_read_noise, robust_level_noise

TRUE_SIGMAS = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
DRAWS = 40
SHAPE = (128, 128)


def integer_bias(
    rng: np.random.Generator, sigma: float, outliers: float = 0.03
) -> npt.NDArray[np.float32]:
    """A calibrated bias as the camera gives it: whole ADU, less an overscan of 0.37 ADU, hits."""
    raw = np.round(1000.0 + sigma * rng.standard_normal(SHAPE))
    hit = rng.random(SHAPE) < outliers  # cosmic rays and hot pixels: far above
    raw[hit] += np.round(rng.uniform(30.0 * sigma, 5000.0, int(hit.sum())))
    return (raw - 0.37).astype(np.float32)


@pytest.mark.parametrize("sigma", TRUE_SIGMAS)
def test_noise_of_integer_frames_is_unbiased(sigma: float) -> None:
    """Over many draws of rounded Gaussian noise with 3 % outliers the mean is within 3 %."""
    rng = np.random.default_rng(int(sigma * 10))
    estimates = [robust_level_noise(integer_bias(rng, sigma))[1] for _ in range(DRAWS)]
    assert np.mean(estimates) == pytest.approx(sigma, rel=0.03)


def test_noise_of_integer_frames_has_no_quantization_steps() -> None:
    """The same noise field scaled from 1 to 3 ADU gives estimates that follow it smoothly.

    The MAD moved in steps of 0.74 ADU (a true 2.0 read 1.48): its ratio to the truth
    jumped by tens of per cent between neighbouring sigmas.
    """
    field = np.random.default_rng(7).standard_normal(SHAPE)
    sigmas = np.arange(1.0, 3.0001, 0.05)
    ratios = np.array([robust_level_noise(np.round(500.0 + s * field))[1] / s for s in sigmas])
    assert np.max(np.abs(ratios - 1.0)) < 0.03
    assert np.max(np.abs(np.diff(ratios))) < 0.01


def test_noise_of_float_data_is_not_corrected_for_rounding() -> None:
    """A master's small float noise (0.3 ADU) is measured as it is, without the rounding term."""
    image = 1000.0 + 0.3 * np.random.default_rng(3).standard_normal((256, 256))
    assert robust_level_noise(image)[1] == pytest.approx(0.3, rel=0.02)


def test_read_noise_from_pairs_of_integer_frames_is_unbiased() -> None:
    """Differences of rounded frames (two rounding errors each) give a true 1.0 ADU within 1 %."""
    rng = np.random.default_rng(11)
    frames = [integer_bias(rng, 1.0, outliers=0.01) for _ in range(40)]
    assert pair_read_noise(frames) == pytest.approx(1.0, rel=0.01)
