"""Row bands: one combine split over tasks by split_rows, reassembled byte-identically."""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from test_combine import SEED

from biaswatch.combine.engine import band_rows, combine_files, split_rows
from biaswatch.combine.sources import open_image, read_band, sample_rows
from biaswatch.errors import CombineFailed
from biaswatch.settings import CombineSettings
from biaswatch.testing.fits import (
    bias_stack,
    make_bias_fits,
    truncated_copy,
    write_segment_stack,
    write_stack,
)

BAND_VARIANTS = {
    "average-clip": SEED,  # average, 5/5 sigma clip around the median with mad_std
    "median": CombineSettings(method="median"),
    "mean-std": CombineSettings(center="mean", deviation="std", sigma_low=3, sigma_high=3),
}
COLS = 16  # narrow frames: a stack above RUNTIME_RESERVE in few pixels per row


def band_minimum(n_frames: int, shape: tuple[int, int], method: str) -> int:
    """The minimum mem_limit split_rows names when given no memory at all."""
    with pytest.raises(CombineFailed) as failure:
        split_rows(n_frames, shape, 1, method)
    match = re.search(r"at least (\d+) bytes \(([0-9.]+) MB\)", failure.value.reason)
    assert match, failure.value.reason
    return int(match.group(1))


def reassembled(
    paths: list[Path], combine: CombineSettings, mem_limit: int, bands: list[tuple[int, int]]
) -> np.ndarray:
    """combine_files over each band separately, as separate tasks would, concatenated."""
    return np.concatenate([combine_files(paths, combine, mem_limit, rows=b) for b in bands])


@pytest.mark.parametrize("n_frames", [3, 10, 25])
@pytest.mark.parametrize("variant", BAND_VARIANTS)
def test_split_rows_bands_reassemble_byte_identically(
    tmp_path: Path, n_frames: int, variant: str
) -> None:
    """Bands from split_rows under a too-small mem_limit reassemble the whole image's bytes."""
    combine = BAND_VARIANTS[variant]
    # A stack of ~8 MB (above RUNTIME_RESERVE, so a mem_limit below it can hold one
    # row), with rows that 7 bands cannot divide evenly.
    rows = 8_000_000 // (n_frames * COLS * 4)
    rows += 1 if rows % 7 == 0 else 0
    shape = (rows, COLS)
    paths = write_stack(tmp_path, bias_stack(n_frames, shape, seed=n_frames))
    whole = combine_files(paths, combine, 10**9)
    # The mem_limit whose tallest one-pass band is ceil(rows / 7) rows: 7 bands.
    tallest = -(-rows // 7)
    per_band_row = (n_frames + 1) * COLS * 4  # a row of every frame and of the result
    mem_limit = band_minimum(n_frames, shape, combine.method) + (tallest - 1) * per_band_row
    assert n_frames * rows * COLS * 4 > mem_limit, "the stack must not fit in one task"
    bands = split_rows(n_frames, shape, mem_limit, combine.method)
    heights = [stop - start for start, stop in bands]
    assert len(bands) == 7
    assert sorted(set(heights)) == [tallest - 1, tallest], heights  # uneven
    ours = reassembled(paths, combine, mem_limit, bands)
    assert ours.dtype == np.float32
    assert ours.shape == whole.shape
    assert ours.tobytes() == whole.tobytes()
    assert np.isfinite(whole).any()  # not trivially equal NaN images


@pytest.mark.parametrize("n_frames", [2, 5, 12])
@pytest.mark.parametrize("variant", BAND_VARIANTS)
def test_bands_read_in_several_passes_reassemble(
    tmp_path: Path, n_frames: int, variant: str
) -> None:
    """Seven uneven bands over 50 rows, each read a few rows at a time, give the image's bytes."""
    combine = BAND_VARIANTS[variant]
    shape = (50, 40)
    paths = write_stack(tmp_path, bias_stack(n_frames, shape, seed=n_frames + 100))
    whole = combine_files(paths, combine, 10**9)
    bands = [(0, 8), (8, 15), (15, 22), (22, 29), (29, 36), (36, 43), (43, 50)]
    per_row = n_frames * shape[1] * 4
    # Enough for 3 rows of every frame at a time with an 8-row band's result held (the
    # minimum holds one): passes that start inside a band and end short at its last row.
    mem_limit = band_minimum(n_frames, shape, combine.method) + 7 * shape[1] * 4 + 2 * per_row
    assert band_rows(n_frames, shape, mem_limit, combine.method, out_rows=8) == 3
    assert band_rows(n_frames, shape, mem_limit, combine.method, out_rows=7) == 3
    for start, stop in bands:
        band = combine_files(paths, combine, mem_limit, rows=(start, stop))
        assert band.shape == (stop - start, shape[1])
        assert band.tobytes() == whole[start:stop].tobytes()
    assert reassembled(paths, combine, mem_limit, bands).tobytes() == whole.tobytes()


def test_split_rows_one_band_when_the_stack_fits() -> None:
    """A stack that fits in mem_limit is one band of every row, whatever its size."""
    assert split_rows(50, (4000, 4000), 50 * 4000 * 4000 * 4, "average") == [(0, 4000)]
    assert split_rows(3, (20, 30), 10**9, "median") == [(0, 20)]
    # Ten thousand frames of one pixel: the stack (40 kB) fits a 4.1 MB mem_limit.
    assert split_rows(10_000, (1, 1), band_minimum(10_000, (1, 1), "average"), "average") == [
        (0, 1)
    ]


@given(
    n_frames=st.integers(1, 60),
    rows=st.integers(1, 20_000),
    cols=st.integers(1, 3_000),
    method=st.sampled_from(["average", "median"]),
    fraction=st.floats(0.0, 1.2),
)
@settings(max_examples=200, deadline=None)
def test_split_rows_covers_rows_and_each_band_fits(
    n_frames: int, rows: int, cols: int, method: str, fraction: float
) -> None:
    """Bands cover every row once, in order, nearly equal, fewest, each in one pass."""
    shape = (rows, cols)
    stack = n_frames * rows * cols * 4
    minimum = band_minimum(n_frames, shape, method)
    mem_limit = max(minimum, int(fraction * stack))
    bands = split_rows(n_frames, shape, mem_limit, method)
    assert bands[0][0] == 0
    assert bands[-1][1] == rows
    assert all(a[1] == b[0] for a, b in pairwise(bands))
    heights = [stop - start for start, stop in bands]
    assert min(heights) >= 1
    assert max(heights) - min(heights) <= 1
    if stack <= mem_limit:
        assert bands == [(0, rows)]
        return
    per_band_row = (n_frames + 1) * cols * 4
    for height in set(heights):
        # The band's whole stack plus its combine's model fits: read in one pass.
        assert band_rows(n_frames, shape, mem_limit, method, out_rows=height) == height
        assert minimum + (height - 1) * per_band_row <= mem_limit
    # Fewest: one band fewer would need a band taller than fits in one pass.
    if len(bands) > 1:
        taller = -(-rows // (len(bands) - 1))
        assert minimum + (taller - 1) * per_band_row > mem_limit


@pytest.mark.parametrize("rows", [(-1, 5), (5, 5), (6, 5), (0, 21), (20, 21), (0, 0)])
def test_invalid_rows_raise_value_error(tmp_path: Path, rows: tuple[int, int]) -> None:
    """rows outside 0 <= start < stop <= image rows raise ValueError naming them."""
    paths = write_stack(tmp_path, bias_stack(3, shape=(20, 30)))
    with pytest.raises(ValueError, match=re.escape(f"got {rows!r}")):
        combine_files(paths, SEED, 10**9, rows=rows)


def test_too_small_mem_limit_names_the_minimum(tmp_path: Path) -> None:
    """Below one row of every frame plus one result row, split_rows and a band fail naming it."""
    n_frames, shape = 3, (20, 30)
    paths = write_stack(tmp_path, bias_stack(n_frames, shape))
    minimum = band_minimum(n_frames, shape, "median")
    named = f"at least {minimum} bytes ({minimum / 1e6:.3f} MB)"
    with pytest.raises(CombineFailed) as failure:
        split_rows(n_frames, shape, minimum - 1, "median")
    assert named in failure.value.reason
    assert f"mem_limit {minimum - 1} bytes" in failure.value.reason
    with pytest.raises(CombineFailed) as failure:
        combine_files(paths, CombineSettings(method="median"), minimum - 1, rows=(4, 5))
    assert named in failure.value.reason
    # At the minimum a one-row band combines; the whole image needs more (its result).
    assert split_rows(n_frames, shape, minimum, "median") == [(0, 20)]  # the stack fits
    band = combine_files(paths, CombineSettings(method="median"), minimum, rows=(4, 5))
    whole = combine_files(paths, CombineSettings(method="median"), 10**9)
    assert band.tobytes() == whole[4:5].tobytes()
    with pytest.raises(CombineFailed):
        combine_files(paths, CombineSettings(method="median"), minimum)


def test_a_band_read_on_threads_equals_one_read_file_by_file(tmp_path: Path) -> None:
    """read_band on a thread pool (one swap per band) gives the rows a plain read does."""

    stack = bias_stack(5, (23, 17), seed=4)
    paths = write_stack(tmp_path, stack)
    with contextlib.ExitStack() as files, ThreadPoolExecutor(2) as pool:
        sources = [open_image(files, path, 0) for path in paths]
        threaded = np.empty((5, 9, 17), np.float32)
        plain = np.empty_like(threaded)
        read_band(sources, 7, 16, threaded, pool)
        read_band(sources, 7, 16, plain, None)
    assert np.array_equal(threaded, stack[:, 7:16]) and np.array_equal(plain, threaded)


def test_a_truncated_frame_fails_a_threaded_band_read_by_name(tmp_path: Path) -> None:
    """A frame cut short fails read_band on threads with CombineFailed naming that file."""

    paths = write_stack(tmp_path, bias_stack(3, (40, 50), seed=2))
    short = truncated_copy(paths[1], tmp_path / "short.fits", 2880 + 20 * 50 * 4)
    with contextlib.ExitStack() as files, ThreadPoolExecutor(2) as pool:
        sources = [open_image(files, path, 0) for path in (paths[0], short, paths[2])]
        with pytest.raises(CombineFailed, match=r"short\.fits: cannot read rows 30-39"):
            read_band(sources, 30, 40, np.empty((3, 10, 50), np.float32), pool)


@pytest.mark.parametrize(
    ("where", "stride"),
    [
        ((slice(None), slice(None)), 1),
        ((slice(None), slice(None)), 3),
        ((slice(5, 31), slice(2, 15)), 4),
    ],
)
def test_a_qc_sample_read_by_rows_equals_astropys(
    tmp_path: Path, where: tuple[slice, slice], stride: int
) -> None:
    """sample_rows gives image[where][::stride, ::stride] of an MEF segment as astropy does."""
    stacks = {"AMP1": bias_stack(1, (37, 19), seed=6), "AMP2": bias_stack(1, (37, 19), seed=7)}
    stacks["AMP2"][0, 4, 5] = np.nan
    (path,) = write_segment_stack(tmp_path, stacks)
    expected = np.array(fits.getdata(path, 2)[where][::stride, ::stride], dtype=np.float32)
    sampled = sample_rows(path, 2, where, stride)
    assert sampled is not None and sampled.dtype == np.float32
    assert np.array_equal(sampled, expected, equal_nan=True)


def test_a_qc_sample_of_a_scaled_image_is_left_to_astropy(tmp_path: Path) -> None:
    """sample_rows answers None for an image that is not plain float32 (uint16 with BZERO)."""
    path = make_bias_fits(tmp_path / "raw.fits")
    assert sample_rows(path, 0, (slice(None), slice(None)), 2) is None
