"""The kernel's per-band entry point and its MASK and UNCERT planes (split from kernel.py).

kernel.py describes the statistics of one row (load, sort, clip, combine); _kernel.c
runs them over a band of rows on the kernel's threads and, with ``Params.errors``, adds
ccdproc's mask and uncertainty of each pixel from the values the combine kept, in the
same pass:

* average: ``np.nanstd(data, axis=0) / np.sqrt(n - masked)`` (Combiner.average_combine),
  the population standard deviation of the kept values about their mean (the combined
  value), squared deviations summed in frame order;
* median: ``sigma_func(data, axis=0, ignore_nan=True) / np.sqrt(n - masked)``
  (Combiner.median_combine), 1.4826 x the MAD of the kept values about their median.

One kept value gives 0, none NaN (and MASK 1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from biaswatch.combine import _kernel
from biaswatch.combine.kernel import Params, Scratch


class Planes(NamedTuple):
    """The combine's extra outputs for a band: MASK (uint8) and UNCERT (float32)."""

    mask: Any
    unc: Any

    @classmethod
    def allocate(cls, rows: int, cols: int) -> Planes:
        """Planes for rows x cols pixels; 0 rows for none (uncertainty off)."""
        return cls(np.zeros((rows, cols), np.uint8), np.zeros((rows, cols), np.float32))


def combine_band(
    stack: np.ndarray,
    out: np.ndarray,
    pairs: np.ndarray,
    p: Params,
    scratch: Scratch,
    planes: Planes,
) -> None:
    """Combine a (n, rows, cols) stack into out (rows, cols), rows spread over threads.

    stack (float32 or float64, scratch.rows of the same dtype) and out (float32 or
    float64) are C-contiguous; the kernel runs one thread per scratch slot, with the
    GIL released. With ``p.errors`` also planes.mask (1 where no value was kept) and
    planes.unc (ccdproc's StdDevUncertainty), both (rows, cols); without, they are not
    touched (and may be empty).
    """
    _kernel.combine_band(
        stack, out, pairs, *p, scratch.rows, scratch.ints, scratch.floats, planes.mask, planes.unc
    )
