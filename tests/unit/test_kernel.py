"""The compiled kernel's building blocks against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from biaswatch.combine import kernel


def sorted_columns(n: int, cols: int, dtype: type, seed: int) -> np.ndarray:
    """(n, cols) values sorted down each column, with ties in half of the columns."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 8.0, (n, cols))
    values[:, : cols // 2] = rng.integers(-2, 3, (n, cols // 2))
    return np.sort(values.astype(dtype), axis=0)


def work_for(s: np.ndarray, first: np.ndarray, count: np.ndarray) -> kernel._Work:
    """One thread's work arrays for s, with each column's kept range and its median."""
    scratch = kernel.Scratch.allocate(s.shape[0], s.shape[1], s.dtype)
    w = kernel._work(scratch.ints[0], scratch.floats[0])
    w.first[:] = first
    w.count[:] = count
    kernel._mid(s, w.first, w.count, s.shape[1], w.med)
    return w


def numpy_mad_std(s: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """astropy's mad_std of each column's kept range, by sorting the deviations."""
    out = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        kept = s[first[c] : first[c] + count[c], c].astype(np.float64)
        if kept.size:
            out[c] = np.median(np.abs(kept - np.median(kept))) * kernel.MAD_TO_STD
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 11, 12, 31, 50])
def test_mad_of_whole_columns_matches_sorting_the_deviations(dtype: type, n: int) -> None:
    """With every value kept, the whole-row selection gives numpy's mad_std bit for bit."""
    s = sorted_columns(n, 64, dtype, seed=n)
    first, count = np.zeros(64, np.int64), np.full(64, n, np.int64)
    w = work_for(s, first, count)
    kernel._mad(s, w, 64)
    np.testing.assert_array_equal(w.dev, numpy_mad_std(s, first, count))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 5, 12, 50])
def test_mad_of_narrowed_columns_matches_sorting_the_deviations(dtype: type, n: int) -> None:
    """With a different kept range per column, the merge gives numpy's mad_std bit for bit."""
    s = sorted_columns(n, 64, dtype, seed=100 + n)
    rng = np.random.default_rng(n)
    first = rng.integers(0, n, 64)
    count = rng.integers(0, n - first + 1)
    w = work_for(s, first, count)
    kernel._mad(s, w, 64)
    np.testing.assert_array_equal(w.dev, numpy_mad_std(s, first, count))


@pytest.mark.parametrize("n", [2, 9, 16, 50])
def test_sorting_network_sorts_every_column(n: int) -> None:
    """The comparator network sorts each column of a row block, +inf padding last."""
    rng = np.random.default_rng(n)
    values = rng.integers(-3, 4, (n, 257)).astype(np.float32)
    values[rng.random((n, 257)) < 0.1] = np.inf
    s = values.copy()
    kernel._sort_columns(s, kernel.sorting_network(n), 257)
    np.testing.assert_array_equal(s, np.sort(values, axis=0))
