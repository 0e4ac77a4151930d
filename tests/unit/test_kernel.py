"""The compiled kernel's building blocks against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from biaswatch.combine import kernel, kernel_band


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


def test_kernel_threads_are_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without BIASWATCH_THREADS the kernel runs one thread per CPU in the affinity mask."""
    monkeypatch.delenv(kernel.THREADS_VARIABLE, raising=False)
    monkeypatch.setattr(kernel.os, "sched_getaffinity", lambda _pid: {0, 3, 5})
    assert kernel.kernel_threads() == 3
    assert kernel.Scratch.allocate(4, 8).rows.shape[0] == 3  # a scratch slot per thread


@pytest.mark.parametrize(("value", "threads"), [("1", 1), ("7", 7), (" 2 ", 2)])
def test_biaswatch_threads_overrides_the_kernel_threads(
    monkeypatch: pytest.MonkeyPatch, value: str, threads: int
) -> None:
    """BIASWATCH_THREADS, when set, is the kernel's thread count, whatever the affinity."""
    monkeypatch.setenv(kernel.THREADS_VARIABLE, value)
    monkeypatch.setattr(kernel.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert kernel.kernel_threads() == threads


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_biaswatch_threads_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A BIASWATCH_THREADS that is not a positive integer raises ValueError naming it."""
    monkeypatch.setenv(kernel.THREADS_VARIABLE, value)
    with pytest.raises(ValueError, match="BIASWATCH_THREADS"):
        kernel.kernel_threads()


@pytest.mark.parametrize("threads", ["2", "3"])
def test_the_result_does_not_depend_on_the_thread_count(
    monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    """Rows spread over any number of threads combine to the one-thread bytes."""
    rng = np.random.default_rng(14)
    stack = rng.normal(0.0, 8.0, (7, 130, 33)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.05] = np.nan
    p = kernel.Params(True, True, True, True, 3.0, 3.0, 5, True)
    results = []
    for count in ("1", threads):
        monkeypatch.setenv(kernel.THREADS_VARIABLE, count)
        out, planes = np.empty((130, 33), np.float32), kernel_band.Planes.allocate(130, 33)
        scratch = kernel.Scratch.allocate(7, 33)
        kernel_band.combine_band(stack, out, kernel.sorting_network(7), p, scratch, planes)
        results.append((out.tobytes(), planes.mask.tobytes(), planes.unc.tobytes()))
    assert results[0] == results[1]


def test_swap_bytes_reverses_each_word_like_numpy() -> None:
    """swap_bytes turns big-endian float32 words into the native values, in place."""
    values = np.arange(-5, 1000, 0.75, dtype=np.float32)
    words = values.astype(">f4").view(np.uint32).copy()
    kernel.swap_bytes(words)
    np.testing.assert_array_equal(words.view(np.float32), values)


def test_a_stale_kernel_build_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled kernel whose recorded source hash is not _kernel.c's raises ImportError."""
    monkeypatch.setattr(kernel._kernel, "SOURCE_SHA256", "0" * 64)
    with pytest.raises(ImportError, match="rebuild"):
        kernel._check_build()
