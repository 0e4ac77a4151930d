"""The compiled combine kernel: sigma clipping and averaging across frames, a row at a time.

The statistics run in C (_kernel.c), compiled when the package is installed (setup.py),
for the interpreter that installs it: nothing is compiled, cached or written at run
time, so the first combine after an install is as fast as any, a read-only install
works, and an upgrade can never load a kernel built from other code. This module and
kernel_band.py are its typed Python face.

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

import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from biaswatch.combine import _kernel


def _check_build() -> None:
    """ImportError if the compiled kernel was built from another _kernel.c than the one here.

    Where the source sits beside the module (a checkout with an editable install, whose
    extension is built once, in place), a pull that changes _kernel.c leaves the old
    build behind until the next install: it must not run. A wheel install holds the
    build of its own source.
    """
    source = Path(__file__).with_name("_kernel.c")
    if not source.is_file():
        return
    if hashlib.sha256(source.read_bytes()).hexdigest() != _kernel.SOURCE_SHA256:
        raise ImportError(
            f"{_kernel.__file__} was built from another version of {source}: "
            "rebuild it (`make setup`, or pip install -e . again)"
        )


_check_build()

MAD_TO_STD = 1.482602218505602  # astropy's mad_std factor, 1 / Phi^-1(3/4)
# Rows are handed out to threads in this many chunks: enough for an even load on a
# few cores. _kernel.c uses the same number.
CHUNKS = 64
# The environment variable that sets the kernel's thread count (default: every CPU
# this process may run on).
THREADS_VARIABLE = "BIASWATCH_THREADS"


def kernel_threads() -> int:
    """How many threads a combine spreads its rows over: one scratch slot each.

    ``BIASWATCH_THREADS`` when set (a positive integer), else the CPUs in this
    process's affinity mask (what taskset, cgroup cpusets and systemd's CPUAffinity=
    leave it), which os.cpu_count() would overstate.
    """
    override = os.environ.get(THREADS_VARIABLE, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"{THREADS_VARIABLE} must be a positive integer, got {override!r}")
        return int(override)
    return len(os.sched_getaffinity(0))


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
    """One thread's per-column scratch arrays (the C kernel's Work, in this order)."""

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
    """The combine settings as the plain scalars the compiled code takes (in this order)."""

    average: bool
    clip: bool
    center_median: bool
    dev_mad: bool
    sigma_low: float
    sigma_high: float
    maxiters: int
    errors: bool = False  # also the MASK and UNCERT planes (ccdproc's combine result)


class Scratch(NamedTuple):
    """Every thread's working memory, allocated once per combine, outside the kernel.

    Allocated here, not in C, so that the memory model in combine/engine.py counts all
    of it; allocating inside the threads also made glibc keep freed blocks in each
    thread's arena (its mmap threshold adapts upwards), which showed as RSS above the
    model. The kernel runs one thread per slot.
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
        threads = kernel_threads()
        return cls(
            np.empty((threads, ROW_ARRAYS, n_frames, cols), dtype),
            np.zeros((threads, INT_ARRAYS, cols), np.int64),
            np.empty((threads, WORK_ARRAYS - INT_ARRAYS, cols), np.float64),
        )


def _work(ints: np.ndarray, floats: np.ndarray) -> _Work:
    """One thread's per-column work arrays, as views of its scratch slot."""
    return _Work(ints[0], ints[1], *(floats[i] for i in range(WORK_ARRAYS - INT_ARRAYS)))


def _sort_columns(s: np.ndarray, pairs: np.ndarray, width: int) -> None:
    """Sort every column of s (n, width) in place with the comparator network."""
    _kernel.sort_columns(s, pairs, width)


def _mid(s: np.ndarray, first: np.ndarray, count: np.ndarray, width: int, out: np.ndarray) -> None:
    """Median of each column's sorted range s[first:first+count] into out; NaN when empty."""
    if width != s.shape[1]:
        raise ValueError(f"width {width} is not s's {s.shape[1]} columns")
    _kernel.mid(s, first, count, out)


def _mad(s: np.ndarray, w: _Work, width: int) -> None:
    """mad_std of each column's sorted range s[first:first+count] about w.med, into w.dev.

    The absolute deviations of a sorted range are two sorted runs: those left of the
    middle grow leftwards, those right of it grow rightwards (rounding is monotonic, so
    this holds for the float64 differences too). Their median is a selection from two
    sorted runs, O(count) per pixel, instead of a sort of the deviations. w.total is
    overwritten.
    """
    if width != s.shape[1]:
        raise ValueError(f"width {width} is not s's {s.shape[1]} columns")
    _kernel.mad(s, w.first, w.count, w.med, w.dev, w.total)


def swap_bytes(words: np.ndarray) -> None:
    """Reverse the bytes of every 32-bit word of a C-contiguous array in place.

    FITS data are big-endian; the kernel runs on little-endian machines.
    """
    _kernel.swap_bytes(words)
