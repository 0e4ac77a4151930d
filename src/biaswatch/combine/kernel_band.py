"""The kernel's per-row driver and its MASK and UNCERT planes (split from kernel.py).

kernel.py holds the statistics of one row (load, sort, clip, combine); this module
runs them over a band of rows on numba's threads and, with ``Params.errors``, adds
ccdproc's mask and uncertainty of each pixel from the values the combine kept, in
the same pass. child.kernel_cache_name hashes both files.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from biaswatch.combine.kernel import (
    CHUNKS,
    MAD_TO_STD,
    Array,
    Params,
    Scratch,
    _bounds,
    _combine,
    _finite,
    _jit,
    _load,
    _merged_deviation,
    _narrow,
    _sort_columns,
    _Work,
    _work,
)


@_jit()
def _mad_error(s: Array, w: _Work, width: int) -> None:
    """ccdproc's median uncertainty: sigma_func (1.4826 x MAD) of the kept values / sqrt(kept).

    Combiner.median_combine: ``sigma_func(data, axis=0, ignore_nan=True) /
    np.sqrt(n - masked)``, the MAD about the nanmedian (the combined value, w.out) of
    the kept range s[first:first+count]. One kept value gives 0, none NaN.
    """
    for c in range(width):
        mad = _merged_deviation(s, c, w.first[c], w.count[c], w.out[c]) * MAD_TO_STD
        w.unc[c] = mad / math.sqrt(w.count[c]) if w.count[c] > 0 else np.nan


@_jit()
def _std_error(d: Array, w: _Work, clip: bool) -> None:
    """ccdproc's average uncertainty: nanstd (ddof 0) of the kept values / sqrt(kept).

    Combiner.average_combine: ``np.nanstd(data, axis=0) / np.sqrt(n - masked)``, on
    the values the clip kept (the rest are NaN there): the same two passes, mean
    first (w.out), then the squared deviations in frame order. One kept value gives
    0; none gives NaN (0/0), as numpy does.
    """
    n, width = d.shape
    total, lo, hi, mean = w.total, w.lo, w.hi, w.out
    for c in range(width):
        total[c] = 0.0
    for k in range(n):
        dk = d[k]
        for c in range(width):
            x = dk[c]
            use = (_finite(x) & (not (x < lo[c])) & (not (x > hi[c]))) if clip else x == x
            y = (x - mean[c]) * (x - mean[c])
            total[c] += y if use else 0.0
    for c in range(width):
        kept = w.count[c]
        w.unc[c] = math.sqrt(total[c] / kept) / math.sqrt(kept) if kept > 0 else np.nan


@_jit()
def _row(d: Array, s: Array, pairs: Array, w: _Work, p: Params) -> None:
    """One image row: d holds its (n, cols) values; the result lands in w.out."""
    _load(d, s, w, p.clip)
    _sort_columns(s, pairs, d.shape[1])
    if p.clip:
        for iteration in range(p.maxiters):
            _bounds(d, s, w, p)
            if iteration == p.maxiters - 1 or not _narrow(s, w):
                break
    _combine(d, s, w, p)
    if p.errors:  # the kept values are known here: MASK and UNCERT in the same pass
        if p.average:
            _std_error(d, w, p.clip)
        else:
            _mad_error(s, w, d.shape[1])


class Planes(NamedTuple):
    """The combine's extra outputs for a band: MASK (uint8) and UNCERT (float32)."""

    mask: Any
    unc: Any

    @classmethod
    def allocate(cls, rows: int, cols: int) -> Planes:
        """Planes for rows x cols pixels; 0 rows for none (uncertainty off)."""
        return cls(np.zeros((rows, cols), np.uint8), np.zeros((rows, cols), np.float32))


@_jit()
def _store_planes(w: _Work, mask: Array, unc: Array, cols: int) -> None:
    """One row's MASK (no value kept) and UNCERT from the thread's work arrays."""
    for c in range(cols):
        mask[c] = 1 if w.count[c] == 0 else 0
        unc[c] = w.unc[c]


@_jit(parallel=True)
def combine_band(
    stack: Array, out: Array, pairs: Array, p: Params, scratch: Scratch, planes: Planes
) -> None:
    """Combine a (n, rows, cols) stack into out (rows, cols), rows spread over threads.

    With ``p.errors`` also planes.mask (1 where no value was kept) and planes.unc
    (ccdproc's StdDevUncertainty), both (rows, cols); without, they are not touched
    (and may be empty).
    """
    n, rows, cols = stack.shape
    chunks = min(rows, CHUNKS)
    for chunk in nb.prange(chunks):
        slot = nb.get_thread_id()  # < get_num_threads(), the slots allocated
        d, s = scratch.rows[slot, 0], scratch.rows[slot, 1]
        w = _work(scratch.ints[slot], scratch.floats[slot])
        for r in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            for k in range(n):
                for c in range(cols):
                    d[k, c] = stack[k, r, c]
            _row(d, s, pairs, w, p)
            for c in range(cols):
                out[r, c] = w.out[c]
            if p.errors:
                _store_planes(w, planes.mask[r], planes.unc[r], cols)
