"""The combine engine: sigma-clipped average or median of a stack of bias frames.

The statistics are those of the seed recipe, ``ccdproc.combine(..., sigma_clip=True,
sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std)``, which calls astropy's
``sigma_clip(axis=0, masked=True, copy=False)`` on the float64 stack and then takes
``nanmean`` (or ``nanmedian``) of the values it kept. Reproduced here without masked
arrays, per pixel along the frame axis:

* Non-finite inputs (NaN, +-inf) are invalid: never kept, never in the statistics.
* Each iteration computes, over the values still kept, the centre (median or mean) and
  the deviation (``mad_std`` = 1.482602218505602 x the median absolute deviation from
  the median, or the population standard deviation about the mean, whatever the
  centre), then keeps the values with ``centre - sigma_low*dev <= v <= centre +
  sigma_high*dev``. It stops when a pixel's kept set no longer changes, or after
  ``maxiters`` iterations.
* The final mask applies the *last* bounds to *every* valid value (astropy's C path,
  and its Python path with ccdproc's copy=False), so a value clipped early that lies
  within the final bounds is used again. When an iteration clips every value of a
  pixel, iterating stops there with those bounds (astropy 8's C code), so the pixel
  combines to NaN, as does a pixel with no valid value.
* Median of an even count is ``0.5 * (a + b)`` of the two middle values; deviation 0
  (a constant pixel) clips every value that differs from the centre.
* Without sigma clipping only NaN is dropped (``nanmean`` semantics: inf propagates).

On finite data this is the seed's result. The seed's callables (``np.ma.median``,
``mad_std``) propagate NaN, though: a pixel holding a NaN gets NaN bounds and is not
clipped at all (and with maxiters > 1 so is every pixel clipped once). We follow
astropy's built-in ``'median'``/``'mad_std'`` statistics instead, which ignore the NaN.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from biaswatch.config import CombineSettings
from biaswatch.errors import CombineFailed

Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]
Counts = npt.NDArray[np.intp]

MAD_TO_STD: Final = 1.482602218505602  # astropy's mad_std factor, 1 / Phi^-1(3/4)

# Memory model of one band, per image row of `cols` pixels and n frames, in bytes:
#   n * cols * 8 * STACK_FACTOR   the float64 stack (1) plus the kernel temporaries that
#       scale with it: one float64 scratch copy for sorting and deviations (1) and up to
#       four live boolean masks (valid, kept, inside and a comparison temporary, 1/8
#       each) = 2.5.
#   cols * 8 * PIXEL_ARRAYS       the kernel's per-pixel (rows, cols) float64/intp arrays:
#       counts, sort indices, medians, means, deviations, old and new bounds.
#   cols * 4                      one frame's float32 band as read from its file, before
#       it is cast into the stack (one frame at a time).
# plus, once for the whole image, the float32 result: rows * cols * 4.
# Measured with tracemalloc (numpy reports its buffers to it): peak traced memory of
# combine_stack, stack included, on float64 stacks of 3, 10 and 40 frames x 64 x 256 with
# outliers and NaNs, over every method/center/deviation/sigma_clip and maxiters 1 and 3.
# The worst case (sigma clipping, std deviation, maxiters 3) fits 2.49 * n + 9.6 float64
# per pixel for both methods; average and median differ by < 0.01. The test
# test_kernel_peak_memory_within_model re-measures it. Not counted: the interpreter and
# astropy's parsed headers of the open files (a few kB each). Files are opened without
# memory mapping: mapped pages would count in the process's RSS and in its cgroup
# (benchmarks/combine_vs_ccdproc.py, 10 x 4096^2 at 350 MB: peak RSS 946 MB mapped,
# 325 MB with plain reads, interpreter included).
STACK_FACTOR: Final = 2.5
PIXEL_ARRAYS: Final = 12
METHODS: Final = ("average", "median")


def band_rows(n_frames: int, shape: tuple[int, int], mem_limit: int, method: str) -> int:
    """How many image rows to combine at once so the working set stays within mem_limit.

    Raise CombineFailed naming the minimum mem_limit (in bytes and MB) when not even one
    row fits. Both methods share the memory model (sigma clipping dominates it); method
    is checked and named in the reason.
    """
    if method not in METHODS:
        raise ValueError(f"unknown combine method {method!r}")
    rows, cols = shape
    if n_frames < 1 or rows < 1 or cols < 1:
        raise ValueError(f"nothing to combine: {n_frames} frames of {rows}x{cols}")
    result_bytes = rows * cols * 4
    per_row = math.ceil(cols * (8 * (STACK_FACTOR * n_frames + PIXEL_ARRAYS) + 4))
    minimum = result_bytes + per_row
    if mem_limit < minimum:
        raise CombineFailed(
            f"mem_limit {mem_limit} bytes ({mem_limit / 1e6:.3f} MB) is too small to "
            f"{method}-combine {n_frames} frames of {rows}x{cols} pixels: it needs at "
            f"least {minimum} bytes ({minimum / 1e6:.3f} MB) for one row at a time"
        )
    return min(rows, (mem_limit - result_bytes) // per_row)


def combine_stack(stack: np.ndarray, settings: CombineSettings) -> np.ndarray:
    """Pure kernel: combine a (n_frames, rows, cols) stack into a (rows, cols) image.

    Sigma clipping per settings (center median|mean, deviation mad_std|std,
    sigma_low/high, maxiters) when settings.sigma_clip, then average (nanmean of kept
    values) or median (nanmedian). Returns float64; NaN where no value was kept.
    """
    data: Floats = np.asarray(stack, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] < 1:
        raise ValueError(f"expected a (n_frames >= 1, rows, cols) stack, got {data.shape}")
    scratch = np.empty_like(data)
    # Without clipping only NaN is dropped, as np.nanmean/np.nanmedian do.
    keep = _clip(data, settings, scratch) if settings.sigma_clip else ~np.isnan(data)
    count = np.count_nonzero(keep, axis=0)
    if settings.method == "median":
        return _masked_median(data, keep, count, scratch)
    return _masked_mean(data, keep, count)


def _clip(data: Floats, settings: CombineSettings, scratch: Floats) -> Flags:
    """The values sigma clipping keeps: valid and within the final bounds."""
    valid = np.isfinite(data)
    kept = valid
    low, high = _bounds(data, kept, settings, scratch)
    for _ in range(settings.maxiters - 1):
        inside = np.greater_equal(data, low)
        inside &= data <= high
        inside &= kept
        if np.array_equal(inside, kept):
            break
        kept = inside
        # Where nothing is left astropy stops, keeping the bounds that clipped it all.
        emptied = ~kept.any(axis=0)
        new_low, new_high = _bounds(data, kept, settings, scratch)
        low, high = np.where(emptied, low, new_low), np.where(emptied, high, new_high)
    # Outside the last bounds rather than inside them: NaN bounds then clip nothing.
    keep = np.less(data, low)
    keep |= data > high
    np.logical_not(keep, out=keep)
    keep &= valid
    return keep


def _bounds(
    data: Floats, kept: Flags, settings: CombineSettings, scratch: Floats
) -> tuple[Floats, Floats]:
    """Lower and upper clipping bounds per pixel from the kept values."""
    count = np.count_nonzero(kept, axis=0)
    median = mean = None
    if settings.center == "median" or settings.deviation == "mad_std":
        median = _masked_median(data, kept, count, scratch)
    if settings.center == "mean" or settings.deviation == "std":
        mean = _masked_mean(data, kept, count)
    if settings.deviation == "mad_std":
        assert median is not None
        np.subtract(data, median, out=scratch)
        np.abs(scratch, out=scratch)
        deviation = _masked_median(scratch, kept, count, scratch) * MAD_TO_STD
    else:
        assert mean is not None
        np.subtract(data, mean, out=scratch)
        np.square(scratch, out=scratch)
        deviation = np.sqrt(_masked_mean(scratch, kept, count))
    center = median if settings.center == "median" else mean
    assert center is not None
    return center - settings.sigma_low * deviation, center + settings.sigma_high * deviation


def _masked_mean(values: Floats, kept: Flags, count: Counts) -> Floats:
    """Mean over axis 0 of the kept values; NaN where none is kept.

    Summed frame by frame in order, bit-identical to np.nanmean with NaN for unkept.
    """
    total = np.sum(values, axis=0, where=kept)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean: Floats = total / count
    return mean


def _masked_median(values: Floats, kept: Flags, count: Counts, scratch: Floats) -> Floats:
    """Median over axis 0 of the kept values; NaN where none is kept.

    Sorts in ``scratch`` (which may be ``values`` itself): unkept values become NaN,
    which sorts last, so the kept ones are the first ``count`` of each pixel.
    """
    if scratch is not values:
        np.copyto(scratch, values)
    np.copyto(scratch, np.nan, where=~kept)
    scratch.sort(axis=0)
    low_index = np.maximum(count - 1, 0) // 2
    low = np.take_along_axis(scratch, low_index[np.newaxis], axis=0)[0]
    high = np.take_along_axis(scratch, (count // 2)[np.newaxis], axis=0)[0]
    median: Floats = np.where(count % 2 == 1, low, 0.5 * (low + high))
    return median


def combine_files(
    paths: Sequence[Path], settings: CombineSettings, mem_limit: int, hdu: int = 0
) -> np.ndarray:
    """Combine calibrated single-image FITS files band by band; float32 (rows, cols).

    Every file's image (HDU ``hdu``) must have the same 2-D shape. Each band of rows is
    read from every file (section access, so each file's bytes are read once overall),
    stacked as float64, combined with combine_stack and written into the result.
    Raise CombineFailed with the reason when a file is unreadable or shapes differ.
    """
    if not paths:
        raise CombineFailed("no frames to combine")
    with contextlib.ExitStack() as files:
        images = [_open_image(files, Path(path), hdu) for path in paths]
        shape = _common_shape(paths, images)
        step = band_rows(len(paths), shape, mem_limit, settings.method)
        result = np.empty(shape, dtype=np.float32)
        for start in range(0, shape[0], step):
            stop = min(start + step, shape[0])
            band = _read_band(paths, images, start, stop)
            result[start:stop] = combine_stack(band, settings)
            del band  # freed before the next band is allocated
    return result


def _open_image(files: contextlib.ExitStack, path: Path, hdu: int) -> Any:
    """HDU ``hdu`` of ``path``, opened for section reads; CombineFailed if it is no image."""
    try:
        hdul = files.enter_context(fits.open(path, memmap=False))
        image = hdul[hdu]
    except (OSError, ValueError, IndexError, KeyError, TypeError, fits.VerifyError) as exc:
        raise CombineFailed(f"{path}: cannot read HDU {hdu}: {exc}") from exc
    if not isinstance(image, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        raise CombineFailed(f"{path}: HDU {hdu} is a {type(image).__name__}, not an image")
    return image


def _common_shape(paths: Sequence[Path], images: Sequence[Any]) -> tuple[int, int]:
    """The 2-D shape every image shares; CombineFailed naming the odd one out."""
    shapes = [tuple(int(n) for n in image.shape) for image in images]
    for path, shape in zip(paths, shapes, strict=True):
        if len(shape) != 2 or min(shape) < 1:
            raise CombineFailed(f"{path}: expected a 2-D image, found shape {shape}")
    for path, shape in zip(paths, shapes, strict=True):
        if shape != shapes[0]:
            raise CombineFailed(
                f"frames differ in shape: {paths[0]} is {shapes[0][0]}x{shapes[0][1]} "
                f"but {path} is {shape[0]}x{shape[1]} (rows x columns)"
            )
    return shapes[0][0], shapes[0][1]


def _read_band(paths: Sequence[Path], images: Sequence[Any], start: int, stop: int) -> Floats:
    """Rows ``start:stop`` of every image as a float64 (n, rows, cols) stack."""
    cols = int(images[0].shape[1])
    band = np.empty((len(images), stop - start, cols), dtype=np.float64)
    for i, (path, image) in enumerate(zip(paths, images, strict=True)):
        try:
            band[i] = image.section[start:stop, :]
        except (OSError, ValueError, IndexError, TypeError) as exc:
            reason = f"{path}: cannot read rows {start}-{stop - 1} (truncated or corrupt?): {exc}"
            raise CombineFailed(reason) from exc
    return band
