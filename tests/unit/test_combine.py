"""The combine engine: ccdproc's numbers, band-size invariance and clear failures."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import sigma_clip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from biaswatch.combine.engine import (
    band_rows,
    combine_files,
    combine_stack,
)
from biaswatch.errors import CombineFailed
from biaswatch.settings import CombineSettings
from biaswatch.testing.fits import bias_stack, seed_combine, write_stack

SEED = CombineSettings()  # the seed recipe: average, median / mad_std, 5 / 5 sigma
VARIANTS = {
    "seed": SEED,
    "median": CombineSettings(method="median"),
    "center-mean": CombineSettings(center="mean"),
    "deviation-std": CombineSettings(deviation="std"),
    "sigma-3": CombineSettings(sigma_low=3.0, sigma_high=3.0),
}

# ccdproc's reference path warns where astropy/numpy see empty or all-NaN slices (a
# pixel with every value NaN or clipped): nanmean's "Mean of empty slice", nanmedian's
# "All-NaN slice encountered", nanstd's "Degrees of freedom <= 0" and the uncertainty's
# division by zero kept values. They are properties of ccdproc's uncertainty and
# reductions, not of the engine, which test_engine_is_silent_on_empty_pixels checks.
REFERENCE_WARNINGS = [
    "ignore:Mean of empty slice:RuntimeWarning",
    "ignore:All-NaN slice encountered:RuntimeWarning",
    "ignore:Degrees of freedom <= 0:RuntimeWarning",
    "ignore:invalid value encountered:RuntimeWarning",
    "ignore:divide by zero encountered:RuntimeWarning",
]


def ignore_reference_warnings(test: Callable[..., None]) -> Callable[..., None]:
    """Mark ``test`` to ignore the REFERENCE_WARNINGS of ccdproc's reference path."""
    for warning in REFERENCE_WARNINGS:
        test = pytest.mark.filterwarnings(warning)(test)
    return test


def combiner_reference(stack: np.ndarray, combine: CombineSettings) -> np.ndarray:
    """ccdproc's Combiner with astropy's built-in statistics and any maxiters.

    Combiner.sigma_clipping(..., maxiters=k) raises TypeError in ccdproc 2.5.1 (it passes
    maxiters to sigma_clip twice), so the clipping is its body with maxiters passed once.
    """
    combiner = ccdproc.Combiner([CCDData(frame, unit="adu") for frame in stack])
    if combine.sigma_clip:
        combiner.data_arr.mask |= sigma_clip(
            combiner.data_arr.data,
            sigma_lower=combine.sigma_low,
            sigma_upper=combine.sigma_high,
            axis=0,
            copy=False,
            maxiters=combine.maxiters,
            cenfunc=combine.center,
            stdfunc=combine.deviation,
            masked=True,
        ).mask
    if combine.method == "median":
        return np.asarray(combiner.median_combine().data)
    return np.asarray(combiner.average_combine().data)


def assert_same_image(ours: np.ndarray, reference: np.ndarray, atol: float) -> None:
    """NaN in the same places, finite values within ``atol``."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    finite = ~np.isnan(reference)
    np.testing.assert_allclose(ours[finite], reference[finite], rtol=0, atol=atol)


def minimum_mem_limit(n_frames: int, shape: tuple[int, int], method: str) -> int:
    """The minimum mem_limit that band_rows names when given no memory at all."""
    with pytest.raises(CombineFailed) as failure:
        band_rows(n_frames, shape, 1, method)
    match = re.search(r"at least (\d+) bytes \(([0-9.]+) MB\)", failure.value.reason)
    assert match, failure.value.reason
    return int(match.group(1))


@ignore_reference_warnings
@pytest.mark.parametrize("n_frames", [3, 5, 10])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_ccdproc_combine(tmp_path: Path, n_frames: int, variant: str) -> None:
    """combine_files gives ccdproc.combine's image within 1e-3 ADU for the seed's variants."""
    combine = VARIANTS[variant]
    stack = bias_stack(n_frames, seed=n_frames)
    paths = write_stack(tmp_path, stack)
    reference = seed_combine([str(p) for p in paths], settings=combine)
    ours = combine_files(paths, combine, mem_limit=350_000_000)
    assert ours.dtype == np.float32
    assert ours.shape == (40, 50)
    assert_same_image(ours, reference, atol=1e-3)
    # The float64 kernel itself agrees to rounding.
    assert_same_image(combine_stack(stack.astype(np.float64), combine), reference, atol=1e-9)
    # The cosmic rays (200 to 3000 ADU) are gone, except with std as deviation: a lone
    # outlier inflates the std so much that it stays within ~n / sqrt(n - 1) std of the
    # median (sqrt(n - 1) of the mean, Samuelson), so 5 sigma cannot clip it below ~24
    # frames. (center="mean" turns the hit pixels into NaN instead: the mean moves so far
    # that every value is clipped, in ccdproc likewise.)
    survivors = np.nanmax(np.abs(ours - np.median(stack, axis=0)))
    assert survivors > 100 if variant == "deviation-std" else survivors < 30


@ignore_reference_warnings
@pytest.mark.parametrize("center", ["median", "mean"])
@pytest.mark.parametrize("deviation", ["mad_std", "std"])
def test_maxiters_matches_combiner(center: str, deviation: str) -> None:
    """maxiters=3 gives the Combiner's result when it sigma-clips with maxiters=3."""
    rng = np.random.default_rng(3)
    stack = rng.normal(0.0, 1.0, (12, 30, 40))
    # Graded outliers: clipping one tightens the bounds enough to clip the next.
    stack[:4] += np.array([60.0, 12.0, 6.0, 4.0])[:, None, None] * (rng.random((4, 30, 40)) < 0.5)
    once = CombineSettings(center=center, deviation=deviation, sigma_low=3, sigma_high=3)
    thrice = once.model_copy(update={"maxiters": 3})
    ours = combine_stack(stack, thrice)
    assert_same_image(ours, combiner_reference(stack, thrice), atol=1e-9)
    assert not np.allclose(ours, combine_stack(stack, once)), "maxiters made no difference"


def _stack_values(integers: bool, finite_only: bool) -> st.SearchStrategy[float]:
    # Integer values give ties and constant pixels (deviation 0); the rest are floats.
    finite = st.integers(-3, 3).map(float) if integers else st.floats(-1e4, 1e4, width=32)
    if finite_only:  # every value kept at first: the kernel's whole-row MAD path
        return finite
    return st.one_of(finite, st.just(np.nan), st.sampled_from([np.inf, -np.inf, 500.0]))


stacks = st.tuples(
    st.integers(2, 50),
    st.integers(1, 5),
    st.integers(1, 5),
    st.booleans(),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),  # files give float32; anything else float64
).flatmap(lambda dims: hnp.arrays(dims[5], dims[:3], elements=_stack_values(dims[3], dims[4])))
combine_settings = st.builds(
    CombineSettings,
    method=st.sampled_from(["average", "median"]),
    sigma_clip=st.booleans(),
    sigma_low=st.sampled_from([0.5, 1.0, 3.0, 5.0]),
    sigma_high=st.sampled_from([0.5, 1.0, 3.0, 5.0]),
    center=st.sampled_from(["median", "mean"]),
    deviation=st.sampled_from(["mad_std", "std"]),
    maxiters=st.integers(1, 4),
)


@ignore_reference_warnings
@given(stack=stacks, combine=combine_settings)
@settings(max_examples=60, deadline=None)
def test_kernel_matches_combiner_property(stack: np.ndarray, combine: CombineSettings) -> None:
    """Any small stack with NaN, inf, ties or constant pixels combines as the Combiner does."""
    reference = combiner_reference(stack.astype(np.float64), combine)
    assert_same_image(combine_stack(stack, combine), reference, 1e-3)


def test_engine_is_silent_on_empty_pixels() -> None:
    """Pixels with every value NaN or clipped combine to NaN without any warning."""
    stack = np.zeros((4, 1, 3))
    stack[:, 0, 0] = np.nan  # no valid value
    stack[:, 0, 1] = [0.0, 0.0, 0.0, 10.0]  # mean 2.5, mad_std 0: everything clipped
    stack[:, 0, 2] = [1.0, 2.0, 3.0, 4.0]
    for method in ("average", "median"):
        for maxiters in (1, 3):
            combine = CombineSettings(method=method, center="mean", maxiters=maxiters)
            out = combine_stack(stack, combine)
            np.testing.assert_array_equal(out, [[np.nan, np.nan, 2.5]])


def test_band_size_does_not_change_the_result(tmp_path: Path) -> None:
    """Any mem_limit from the one-row minimum to unlimited gives the identical image."""
    stack = bias_stack(5, shape=(37, 23), seed=7)
    paths = write_stack(tmp_path, stack)
    minimum = minimum_mem_limit(5, (37, 23), SEED.method)
    per_row = 5 * 23 * 4  # one more row of five float32 frames, 23 columns wide
    limits = [minimum, minimum + per_row, minimum + 3 * per_row, minimum + 6 * per_row, 10**12]
    rows = [band_rows(5, (37, 23), limit, SEED.method) for limit in limits]
    assert rows[0] == 1
    assert rows[-1] == 37
    assert len(set(rows)) == len(rows), rows  # 1, 2, 4, 7 and 37 rows: partial last bands
    results = [combine_files(paths, SEED, limit) for limit in limits]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_too_small_mem_limit_names_the_minimum(tmp_path: Path) -> None:
    """A mem_limit below one row's working set fails with the minimum in bytes and MB."""
    paths = write_stack(tmp_path, bias_stack(3, shape=(20, 30)))
    minimum = minimum_mem_limit(3, (20, 30), "median")
    assert band_rows(3, (20, 30), minimum, "median") == 1
    with pytest.raises(CombineFailed) as failure:
        combine_files(paths, CombineSettings(method="median"), minimum - 1)
    assert f"at least {minimum} bytes ({minimum / 1e6:.3f} MB)" in failure.value.reason
    assert f"mem_limit {minimum - 1} bytes" in failure.value.reason


def test_mismatched_shapes_fail(tmp_path: Path) -> None:
    """Frames of different shapes fail with a reason naming both shapes and the odd file."""
    paths = write_stack(tmp_path, bias_stack(3, shape=(20, 30)))
    odd = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.zeros((20, 31), dtype=np.float32)).writeto(odd)
    with pytest.raises(CombineFailed) as failure:
        combine_files([*paths, odd], SEED, 10**9)
    assert "20x30" in failure.value.reason
    assert f"{odd} is 20x31" in failure.value.reason


@pytest.mark.parametrize("problem", ["missing", "not FITS", "truncated", "no such HDU", "table"])
def test_unreadable_file_fails(tmp_path: Path, problem: str) -> None:
    """A missing, corrupt, truncated or non-image file fails with a reason naming it."""
    paths = write_stack(tmp_path, bias_stack(3, shape=(20, 30)))
    bad, hdu = tmp_path / "bad.fits", 0
    if problem == "not FITS":
        bad.write_bytes(b"not a FITS file at all\n" * 200)
    elif problem == "truncated":
        bad.write_bytes(paths[0].read_bytes()[:-1000])
    elif problem == "no such HDU":
        bad, hdu = paths[0], 1
    elif problem == "table":
        table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.zeros(3))])
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(bad)
        hdu = 1
    with pytest.raises(CombineFailed) as failure:
        combine_files([bad, *paths], SEED, 10**9, hdu=hdu)
    assert str(bad) in failure.value.reason
