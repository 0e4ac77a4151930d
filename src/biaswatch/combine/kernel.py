"""The compiled combine kernel: sigma clipping and averaging across frames, a row at a time.

numba compiles it (``cache=True``: once per machine and version, kept under
``NUMBA_CACHE_DIR``); ``prange`` spreads rows over every core with the GIL released.

Why it is fast: it works on whole image rows ("vertically") instead of pixel by
pixel. The values of each column are sorted with a Batcher odd-even merge network
(a fixed list of compare-exchange pairs), and each compare-exchange is a min/max
over the whole row, which the compiler turns into SIMD instructions with no
data-dependent branches. Excluded values (NaN, inf, clipped) are replaced by +inf,
so they sort last and the kept values of each pixel are a contiguous range of the
sorted column: medians are a gather, and sigma clipping only narrows the range.
Sums run over the frames in their original order, so the results are bit-identical
to numpy's ``nanmean`` of the values ccdproc keeps (tests/unit/test_combine.py).

The statistics are described in combine/engine.py's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import numba as nb
import numpy as np

# numba's built-in "workqueue" threads, not TBB: with TBB the combine's peak RSS
# wandered 0-4.5 MB above the memory model from run to run (its scalable allocator
# caches), with workqueue it stays below it (50 x 384 x 2048 at 24 MB: 19.3-19.4 MB
# against a 19.9 MB model), at the same speed. workqueue must not run parallel code
# from two threads at once: each combine runs in its own process, from one thread.
nb.config.THREADING_LAYER = "workqueue"

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(*, parallel: bool = False) -> Callable[[_F], _F]:
    """numba.njit, cached on disk and without the GIL, typed for mypy."""
    return cast(Callable[[_F], _F], nb.njit(cache=True, nogil=True, parallel=parallel))


MAD_TO_STD = 1.482602218505602  # astropy's mad_std factor, 1 / Phi^-1(3/4)
INF = np.inf
# Rows are handed out to threads in this many chunks: enough for an even load on a
# few cores.
CHUNKS = 64


def sorting_network(n: int) -> np.ndarray:
    """Batcher odd-even merge sort comparators (i < j) for n inputs, as an (m, 2) array.

    Built for the next power of two and pruned of comparators that touch an index
    >= n: those padding inputs act as +inf, which no comparator moves.
    """
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


class _Work(NamedTuple):
    """One thread's per-column scratch arrays."""

    first: Any
    count: Any
    med: Any
    mean: Any
    dev: Any
    lo: Any
    hi: Any
    kmin: Any
    kmax: Any
    total: Any
    out: Any
    unc: Any


# Per-column scratch arrays of _Work, for the memory model in combine/engine.py; the first
# INT_ARRAYS (first, count) are int64, the rest float64.
WORK_ARRAYS = len(_Work._fields)
INT_ARRAYS = 2
# Per-thread (n, cols) arrays, in the stack's dtype: the row's values, their sorted copy.
ROW_ARRAYS = 2


class Params(NamedTuple):
    """The combine settings as the plain scalars the compiled code takes."""

    average: bool
    clip: bool
    center_median: bool
    dev_mad: bool
    sigma_low: float
    sigma_high: float
    maxiters: int
    errors: bool = False  # also the MASK and UNCERT planes (ccdproc's combine result)


Array = Any  # numba takes numpy arrays; mypy cannot see through the JIT


@_jit()
def _finite(x: float) -> bool:
    """math.isfinite, written so that loops calling it vectorise.

    Conditions inside the kernel's column loops are combined with & rather than
    ``and``: short-circuiting becomes branches, which keep the compiler from emitting
    SIMD code (the final average pass measured 1.1 against 0.5 ns per value).
    """
    return abs(x) < INF


@_jit()
def _sort_columns(s: Array, pairs: Array, width: int) -> None:
    """Sort every column of s (the frame axis) with the comparator network."""
    for p in range(pairs.shape[0]):
        si = s[pairs[p, 0]]
        sj = s[pairs[p, 1]]
        for c in range(width):
            a = si[c]
            b = sj[c]
            # np.minimum/np.maximum, not selects (a if a < b else b) or min()/max():
            # only these become SIMD min/max when both rows are updated in place
            # (measured on 4096 float32 columns: 0.15 against 0.5 ns per column and
            # comparator). s holds no NaN (invalid values are +inf), where they differ.
            si[c] = np.minimum(a, b)
            sj[c] = np.maximum(a, b)


@_jit()
def _mid(s: Array, first: Array, count: Array, width: int, out: Array) -> None:
    """Median of each column's sorted range s[first:first+count]; NaN when empty."""
    for c in range(width):
        k = count[c]
        if k == 0:
            out[c] = np.nan
        else:
            # float64 before adding: s may be float32, and numpy's median of the
            # float64 stack averages the two middle values in float64.
            lo = np.float64(s[first[c] + (k - 1) // 2, c])
            hi = np.float64(s[first[c] + k // 2, c])
            out[c] = lo if k % 2 == 1 else 0.5 * (lo + hi)


@_jit()
def _range_sum(d: Array, w: _Work, centre: Array, square: bool) -> None:
    """Frame-order sum of the values in [kmin, kmax] (or of their squared deviations)."""
    n, width = d.shape
    total = w.total
    for c in range(width):
        total[c] = 0.0
    for k in range(n):
        dk = d[k]
        for c in range(width):
            x = dk[c]
            inside = (x >= w.kmin[c]) & (x <= w.kmax[c])
            y = (x - centre[c]) * (x - centre[c]) if square else x
            total[c] += y if inside else 0.0


@_jit()
def _load(d: Array, s: Array, w: _Work, clip: bool) -> None:
    """Valid values into s (+inf for the rest), counted; bounds start as NaN."""
    n, width = d.shape
    for c in range(width):
        w.count[c] = 0
        w.first[c] = 0
        w.lo[c] = np.nan
        w.hi[c] = np.nan
    for k in range(n):
        dk = d[k]
        sk = s[k]
        for c in range(width):
            x = dk[c]
            # Clipping ignores NaN and inf (astropy masks invalid values); without it
            # only NaN is dropped, as np.nanmean and np.nanmedian do.
            ok = _finite(x) if clip else x == x
            sk[c] = x if ok else INF
            w.count[c] += 1 if ok else 0


@_jit()
def _mad(s: Array, w: _Work, width: int) -> None:
    """mad_std of each column's sorted range s[first:first+count] about w.med.

    The absolute deviations of a sorted range are two sorted runs: those left of the
    middle grow leftwards, those right of it grow rightwards (rounding is monotonic, so
    this holds for the float64 differences too). Their median is a selection from two
    sorted runs, O(count) per pixel, instead of a sort of the deviations.
    """
    n = s.shape[0]
    uniform = True
    for c in range(width):
        uniform = uniform and w.first[c] == 0 and w.count[c] == n
    if uniform:  # every value kept: the first iteration on finite data
        _kth_deviation(s, w.med, (n - 1) // 2, w.dev, width)
        _kth_deviation(s, w.med, n // 2, w.total, width)
        for c in range(width):
            mad = w.dev[c] if n % 2 == 1 else 0.5 * (w.dev[c] + w.total[c])
            w.dev[c] = mad * MAD_TO_STD
        return
    for c in range(width):
        w.dev[c] = _merged_deviation(s, c, w.first[c], w.count[c], w.med[c]) * MAD_TO_STD


@_jit()
def _kth_deviation(s: Array, med: Array, k: int, out: Array, width: int) -> None:
    """The k-th smallest |s - med| (0-based) of each column of s, all rows sorted and kept.

    Left run A_i = |s[a - i] - med| (i = 1..a), right run B_j = |s[a + j - 1] - med|
    (j = 1..b), both ascending. The (k+1)-th smallest of their union is the smallest
    max(A_i, B_(k+1-i)) over the splits i (with A_0 = B_0 = -inf): whole-row min/max,
    which the compiler vectorises, where a merge would step each column on its own.
    """
    n = s.shape[0]
    a = n // 2
    b = n - a
    rank = k + 1
    for c in range(width):
        out[c] = INF
    for i in range(max(0, rank - b), min(a, rank) + 1):
        j = rank - i
        left = s[a - i] if i > 0 else s[0]
        right = s[a + j - 1] if j > 0 else s[0]
        for c in range(width):
            dl = abs(np.float64(left[c]) - med[c]) if i > 0 else -INF
            dr = abs(np.float64(right[c]) - med[c]) if j > 0 else -INF
            out[c] = np.minimum(out[c], np.maximum(dl, dr))


@_jit()
def _merged_deviation(s: Array, c: int, first: int, m: int, med: float) -> float:
    """Median |s - med| of column c's sorted range s[first:first+m]: a merge to the middle."""
    if m == 0:
        return np.nan
    left, right, stop = first + m // 2 - 1, first + m // 2, first + m
    lower = upper = 0.0
    for rank in range(m // 2 + 1):
        dl = abs(np.float64(s[left, c]) - med) if left >= first else INF
        dr = abs(np.float64(s[right, c]) - med) if right < stop else INF
        take_left = dl < dr
        upper = dl if take_left else dr
        left -= 1 if take_left else 0
        right += 0 if take_left else 1
        lower = upper if rank == (m - 1) // 2 else lower
    return lower if m % 2 == 1 else 0.5 * (lower + upper)


@_jit()
def _deviation(d: Array, s: Array, w: _Work, dev_mad: bool) -> None:
    """mad_std (about the median) or std (about the mean) of each pixel's kept values."""
    width = d.shape[1]
    if dev_mad:
        _mad(s, w, width)
    else:
        _range_sum(d, w, w.mean, True)
        for c in range(width):
            w.dev[c] = math.sqrt(w.total[c] / w.count[c]) if w.count[c] > 0 else np.nan


@_jit()
def _bounds(d: Array, s: Array, w: _Work, p: Params) -> None:
    """Clipping bounds from the kept values, the range s[first:first+count]."""
    width = d.shape[1]
    for c in range(width):
        kept = w.count[c] > 0
        w.kmin[c] = s[w.first[c], c] if kept else INF
        w.kmax[c] = s[w.first[c] + w.count[c] - 1, c] if kept else -INF
    if p.center_median or p.dev_mad:
        _mid(s, w.first, w.count, width, w.med)
    if not (p.center_median and p.dev_mad):
        _range_sum(d, w, w.mean, False)
        for c in range(width):
            w.mean[c] = w.total[c] / w.count[c] if w.count[c] > 0 else np.nan
    _deviation(d, s, w, p.dev_mad)
    for c in range(width):
        if w.count[c] > 0:  # an emptied pixel keeps the bounds that emptied it
            centre = w.med[c] if p.center_median else w.mean[c]
            w.lo[c] = centre - p.sigma_low * w.dev[c]
            w.hi[c] = centre + p.sigma_high * w.dev[c]


@_jit()
def _narrow(s: Array, w: _Work) -> bool:
    """Drop kept values outside the bounds (a range shrinks from both ends); changed?"""
    changed = False
    for c in range(s.shape[1]):
        a = w.first[c]
        b = a + w.count[c]
        start, stop = a, b
        while start < stop and s[start, c] < w.lo[c]:
            start += 1
        while stop > start and s[stop - 1, c] > w.hi[c]:
            stop -= 1
        changed = changed or start != a or stop != b
        w.first[c] = start
        w.count[c] = stop - start
    return changed


@_jit()
def _combine(d: Array, s: Array, w: _Work, p: Params) -> None:
    """Average or median of every valid value within the last bounds, into w.out."""
    n, width = d.shape
    total, count, lo, hi = w.total, w.count, w.lo, w.hi
    for c in range(width):
        total[c] = 0.0
        count[c] = 0
    for k in range(n):
        dk = d[k]
        if p.clip:
            for c in range(width):
                x = dk[c]
                use = _finite(x) & (not (x < lo[c])) & (not (x > hi[c]))
                total[c] += x if use else 0.0
                count[c] += 1 if use else 0
        else:
            for c in range(width):
                x = dk[c]
                use = x == x  # not NaN
                total[c] += x if use else 0.0
                count[c] += 1 if use else 0
    if p.average:
        for c in range(width):
            w.out[c] = w.total[c] / w.count[c] if w.count[c] > 0 else np.nan
        return
    for c in range(width):
        start = 0
        while p.clip and start < n and s[start, c] < w.lo[c]:
            start += 1
        w.first[c] = start
    _mid(s, w.first, w.count, width, w.out)


class Scratch(NamedTuple):
    """Every thread's working memory, allocated once per combine, outside the kernel.

    Allocating inside the parallel loop made glibc keep freed blocks in each thread's
    arena (its mmap threshold adapts upwards), which showed as RSS above the model.
    """

    rows: Any  # (threads, ROW_ARRAYS, n, cols), the stack's dtype
    ints: Any  # (threads, INT_ARRAYS, cols) int64
    floats: Any  # (threads, WORK_ARRAYS - INT_ARRAYS, cols) float64

    @classmethod
    def allocate(cls, n_frames: int, cols: int, dtype: Any = np.float32) -> Scratch:
        """Scratch for n_frames frames of cols columns, one slot per kernel thread.

        dtype is the stack's: float32 values are sorted as float32 (twice the SIMD
        width of float64, and exact); every statistic is still computed in float64.
        """
        threads = nb.get_num_threads()
        return cls(
            np.empty((threads, ROW_ARRAYS, n_frames, cols), dtype),
            np.zeros((threads, INT_ARRAYS, cols), np.int64),
            np.empty((threads, WORK_ARRAYS - INT_ARRAYS, cols), np.float64),
        )


@_jit()
def _work(ints: Array, floats: Array) -> _Work:
    """One thread's per-column work arrays, as views of its scratch slot."""
    return _Work(
        ints[0],
        ints[1],
        floats[0],
        floats[1],
        floats[2],
        floats[3],
        floats[4],
        floats[5],
        floats[6],
        floats[7],
        floats[8],
        floats[9],
    )


@_jit(parallel=True)
def swap_bytes(words: Array) -> None:
    """Reverse the bytes of every 32-bit word in place (FITS data are big-endian)."""
    flat = words.reshape(-1)
    for i in nb.prange(flat.size):
        x = flat[i]
        flat[i] = ((x >> 24) & 0xFF) | ((x >> 8) & 0xFF00) | ((x << 8) & 0xFF0000) | (x << 24)
