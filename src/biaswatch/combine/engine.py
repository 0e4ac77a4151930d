"""The combine engine: sigma-clipped average or median of a stack of bias frames.

The statistics are those of the seed recipe, ``ccdproc.combine(..., sigma_clip=True,
sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std)``, which calls astropy's
``sigma_clip(axis=0, masked=True, copy=False)`` on the float64 stack and then takes
``nanmean`` (or ``nanmedian``) of the values it kept. The compiled kernel (kernel.py)
reproduces them without masked arrays, per pixel along the frame axis:

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
* MASK and UNCERT (combine_planes, ``errors``), as ccdproc's Combiner gives them: the
  mask is 1 where no value was kept; the uncertainty is, over the kept values, the
  population standard deviation (``np.nanstd``, ddof 0) for average, or
  ``ccdproc.sigma_func`` (1.482602218505602 x the MAD about their median) for median,
  divided by sqrt(kept): 0 where one value was kept, NaN where none was.

On finite data this is the seed's result. The seed's callables (``np.ma.median``,
``mad_std``) propagate NaN, though: a pixel holding a NaN gets NaN bounds and is not
clipped at all (and with maxiters > 1 so is every pixel clipped once). We follow
astropy's built-in ``'median'``/``'mad_std'`` statistics instead, which ignore the NaN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from biaswatch.combine.kernel import (
    ROW_ARRAYS,
    WORK_ARRAYS,
    Params,
    Scratch,
    kernel_threads,
    sorting_network,
    swap_bytes,
)
from biaswatch.combine.kernel_band import Planes, combine_band
from biaswatch.combine.planes import Combined
from biaswatch.combine.sources import READ_THREADS, common_shape, open_image, read_band
from biaswatch.errors import CombineFailed

if TYPE_CHECKING:  # the combine needs its values, not pydantic's import time
    from biaswatch.settings import CombineSettings

METHODS: Final = ("average", "median")
RUNTIME_RESERVE: Final = 4_000_000
# Bytes per result pixel: the float32 image, plus its uint8 MASK and float32 UNCERT.
IMAGE_BYTES: Final = 4
OUTPUT_BYTES: Final = 4 + 1 + 4

# Memory model of one combine, in bytes, for n frames of rows x cols pixels of which
# out_rows are combined (all rows, or the band combine_files(..., rows=) was given):
#   out_rows * cols * out_bytes     the results, allocated once: 4 (the float32 image),
#                                   9 with the MASK (uint8) and UNCERT (float32) planes
#                                   (OUTPUT_BYTES);
#   held                            results already combined and held for the master
#                                   file (the earlier segments of an MEF set: segments.py);
#   band_rows * n * cols * 4        one band of every frame, float32, read in place;
#   threads * (ROW_ARRAYS * n * 4 + WORK_ARRAYS * 8) * cols
#                                   each kernel thread's scratch: the row's values and
#                                   their sorted copy (float32), plus the float64
#                                   per-column work arrays (kernel.py).
#   RUNTIME_RESERVE                 headroom for what the process's RSS grows by around
#                                   that (the kernel's thread stacks, the interpreter).
#                                   Measured with /proc/self/status VmHWM, 50 frames of
#                                   384 x 2048 at 24 MB: 0.5 MB below the terms above
#                                   (numba's kernel, before issue 14). 4 MB is reserved.
# The kernel (_kernel.c) allocates nothing else: its threads start and end with each
# band and use only their scratch slot. Files are not memory-mapped: mapped pages would
# count in the process's RSS and its cgroup. tests/service/test_combine_memory.py checks the peak
# RSS above the process's RSS before the combine against mem_limit in a child process.


def band_rows(
    n_frames: int,
    shape: tuple[int, int],
    mem_limit: int,
    method: str,
    out_rows: int | None = None,
    *,
    out_bytes: int = IMAGE_BYTES,
    held: int = 0,
) -> int:
    """How many image rows to combine at once so the working set stays within mem_limit.

    ``out_rows`` is how many result rows the combine holds: None for the whole image,
    else the height of the band it combines (at most the image's rows); ``out_bytes``
    the bytes of results per pixel (IMAGE_BYTES or OUTPUT_BYTES); ``held`` the bytes
    of earlier results still held. Raise CombineFailed naming the minimum mem_limit
    (in bytes and MB) when not even one row fits.
    """
    if method not in METHODS:
        raise ValueError(f"unknown combine method {method!r}")
    rows, cols = shape
    if n_frames < 1 or rows < 1 or cols < 1:
        raise ValueError(f"nothing to combine: {n_frames} frames of {rows}x{cols}")
    kept = rows if out_rows is None else out_rows
    if not 1 <= kept <= rows:
        raise ValueError(f"out_rows must be 1..{rows} for {rows}x{cols} frames, got {out_rows}")
    fixed = kept * cols * out_bytes + held + _scratch_bytes(n_frames, cols) + RUNTIME_RESERVE
    per_row = n_frames * cols * 4
    minimum = fixed + per_row
    if mem_limit < minimum:
        band = "" if out_rows is None else f" in a band of {kept} rows"
        raise CombineFailed(
            f"mem_limit {mem_limit} bytes ({mem_limit / 1e6:.3f} MB) is too small to "
            f"{method}-combine {n_frames} frames of {rows}x{cols} pixels{band}: it needs at "
            f"least {minimum} bytes ({minimum / 1e6:.3f} MB) for one row at a time"
        )
    return min(kept, (mem_limit - fixed) // per_row)


def split_rows(
    n_frames: int,
    shape: tuple[int, int],
    mem_limit: int,
    method: str,
    out_bytes: int = IMAGE_BYTES,
) -> list[tuple[int, int]]:
    """Row bands ``(start, stop)`` for separate tasks to combine_files(..., rows=band).

    Why: a stack bigger than a worker's memory budget (50 frames of 10k x 10k pixels are
    20 GB of float32) is spread over several workers, each combining its own band of
    rows; concatenating their results in order gives the whole-image combine's bytes,
    since every pixel is combined on its own.

    Returns ``[(0, rows)]`` when the whole stack (n_frames * rows * cols * 4 bytes) fits
    in mem_limit: one task, which combine_files may still read in several passes.
    Otherwise the fewest nearly-equal contiguous bands (the first ones a row taller when
    the rows do not divide evenly) such that each band's whole stack plus the band
    combine's memory model (its result band, the kernel's scratch and RUNTIME_RESERVE)
    fits in mem_limit, so each task reads its band in one pass. The bands cover the rows
    exactly once, in order. Raise CombineFailed naming the minimum mem_limit when not
    even a one-row band fits (even if the whole stack would: its combine could not run).
    """
    rows, cols = shape
    band_rows(n_frames, shape, mem_limit, method, out_rows=1, out_bytes=out_bytes)
    if n_frames * rows * cols * 4 <= mem_limit:
        return [(0, rows)]
    # A band of b rows fits in one pass when b * (n_frames * 4 + out_bytes) * cols +
    # scratch + RUNTIME_RESERVE <= mem_limit: band_rows(..., out_rows=b) == b.
    spare = mem_limit - _scratch_bytes(n_frames, cols) - RUNTIME_RESERVE
    tallest = spare // ((n_frames * 4 + out_bytes) * cols)  # >= 1 (checked), < rows
    count = -(-rows // tallest)
    short, extra = divmod(rows, count)
    bands, start = [], 0
    for i in range(count):
        stop = start + short + (1 if i < extra else 0)
        bands.append((start, stop))
        start = stop
    return bands


def _scratch_bytes(n_frames: int, cols: int) -> int:
    threads = kernel_threads()
    return threads * (ROW_ARRAYS * n_frames * 4 + WORK_ARRAYS * 8) * cols


def kernel_params(settings: CombineSettings, errors: bool = False) -> Params:
    """The settings as the compiled kernel takes them (``errors``: MASK and UNCERT too)."""
    return Params(
        average=settings.method == "average",
        clip=settings.sigma_clip,
        center_median=settings.center == "median",
        dev_mad=settings.deviation == "mad_std",
        sigma_low=float(settings.sigma_low),
        sigma_high=float(settings.sigma_high),
        maxiters=int(settings.maxiters),
        errors=errors,
    )


def combine_stack(stack: np.ndarray, settings: CombineSettings) -> np.ndarray:
    """Pure kernel: combine a (n_frames, rows, cols) stack into a (rows, cols) image.

    Sigma clipping per settings (center median|mean, deviation mad_std|std,
    sigma_low/high, maxiters) when settings.sigma_clip, then average (nanmean of kept
    values) or median (nanmedian). Returns float64; NaN where no value was kept.
    """
    # float32 stays float32 (what combine_files passes); anything else becomes float64.
    dtype = np.float32 if stack.dtype == np.float32 else np.float64
    data = np.ascontiguousarray(stack, dtype=dtype)
    if data.ndim != 3 or data.shape[0] < 1:
        raise ValueError(f"expected a (n_frames >= 1, rows, cols) stack, got {data.shape}")
    out = np.empty(data.shape[1:], dtype=np.float64)
    scratch = Scratch.allocate(data.shape[0], data.shape[2], dtype)
    pairs, params = sorting_network(data.shape[0]), kernel_params(settings)
    combine_band(data, out, pairs, params, scratch, Planes.allocate(0, 0))
    return out


def combine_files(
    paths: Sequence[Path],
    settings: CombineSettings,
    mem_limit: int,
    hdu: int = 0,
    *,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """The image alone of combine_planes (no MASK or UNCERT computed): float32 (rows, cols)."""
    return combine_planes(paths, settings, mem_limit, hdu, rows=rows, errors=False).data


def combine_planes(
    paths: Sequence[Path],
    settings: CombineSettings,
    mem_limit: int,
    hdu: int = 0,
    *,
    rows: tuple[int, int] | None = None,
    errors: bool = True,
    held: int = 0,
) -> Combined:
    """Combine calibrated FITS images band by band, with MASK and UNCERT when ``errors``.

    Every file's image (HDU ``hdu``) must have the same 2-D shape. Each band of rows is
    read from every file (each file's bytes are read once overall), combined by the
    compiled kernel, which computes the image and (with ``errors``) the mask and
    uncertainty in the same pass, and written into the result. With
    ``rows=(start, stop)`` only image rows start..stop-1 are read and combined, and the
    result is (stop - start, cols): the same bytes as those rows of the whole-image
    result (see split_rows), with mem_limit counting only that band's result; ``held``
    bytes of earlier results are counted too. Raise ValueError unless
    0 <= start < stop <= image rows, and CombineFailed with the reason when a file is
    unreadable, truncated, or shapes differ.
    """
    if not paths:
        raise CombineFailed("no frames to combine")
    with contextlib.ExitStack() as files:
        sources = [open_image(files, Path(path), hdu) for path in paths]
        shape = common_shape(sources)
        first, end = (0, shape[0]) if rows is None else _check_rows(rows, shape)
        out_rows = None if rows is None else end - first
        out_bytes = OUTPUT_BYTES if errors else IMAGE_BYTES
        step = band_rows(
            len(paths), shape, mem_limit, settings.method, out_rows, out_bytes=out_bytes, held=held
        )
        result = np.empty((end - first, shape[1]), dtype=np.float32)
        planes = Planes.allocate(end - first if errors else 0, shape[1] if errors else 0)
        band = np.empty((len(paths), step, shape[1]), dtype=np.float32)
        pairs, params = sorting_network(len(paths)), kernel_params(settings, errors)
        scratch = Scratch.allocate(len(paths), shape[1])
        pool = files.enter_context(ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read"))
        for start in range(first, end, step):
            stop = min(start + step, end)
            # A contiguous (n, stop - start, cols) view at the buffer's start, so every
            # band, the last one too, has the layout the kernel was compiled for.
            size = len(paths) * (stop - start) * shape[1]
            stack = band.reshape(-1)[:size].reshape(len(paths), stop - start, shape[1])
            read_band(sources, start, stop, stack, pool)
            lo, hi = start - first, stop - first
            part = Planes(planes.mask[lo:hi], planes.unc[lo:hi]) if errors else planes
            combine_band(stack, result[lo:hi], pairs, params, scratch, part)
    if not errors:
        return Combined(result)
    return Combined(result, planes.mask, planes.unc)


def _check_rows(rows: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """``rows`` as (start, stop) if 0 <= start < stop <= image rows, else ValueError."""
    start, stop = (int(r) for r in rows)
    if not 0 <= start < stop <= shape[0]:
        raise ValueError(
            f"rows must be (start, stop) with 0 <= start < stop <= {shape[0]} for "
            f"{shape[0]}x{shape[1]} frames, got {rows!r}"
        )
    return start, stop


def warm_up() -> None:
    """Run the kernel once on a tiny float32 band, as combine_files would, with MASK and UNCERT.

    The kernel is compiled at install time, so this only maps its code and numpy's
    into the calling process (the fork server's preload): its children then touch no
    new page of them before their first row. It starts and ends its threads before it
    returns, so a process may fork after it.
    """
    stack = np.zeros((2, 1, 1), np.float32)
    params = Params(True, True, True, True, 5.0, 5.0, 1, True)
    planes = Planes.allocate(1, 1)
    scratch = Scratch.allocate(2, 1)
    combine_band(stack, np.empty((1, 1), np.float32), sorting_network(2), params, scratch, planes)
    swap_bytes(stack[0].view(np.uint32))
