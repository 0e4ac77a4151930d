"""Types of the compiled combine kernel (_kernel.c); kernel.py and kernel_band.py wrap it."""

from typing import Any

SOURCE_SHA256: str  # of the _kernel.c it was built from (setup.py)

def combine_band(
    stack: Any,
    out: Any,
    pairs: Any,
    average: bool,
    clip: bool,
    center_median: bool,
    dev_mad: bool,
    sigma_low: float,
    sigma_high: float,
    maxiters: int,
    errors: bool,
    rows: Any,
    ints: Any,
    floats: Any,
    mask: Any,
    unc: Any,
    /,
) -> None: ...
def swap_bytes(words: Any, /) -> None: ...
def sort_columns(s: Any, pairs: Any, width: int, /) -> None: ...
def mid(s: Any, first: Any, count: Any, med: Any, /) -> None: ...
def mad(s: Any, first: Any, count: Any, med: Any, dev: Any, total: Any, /) -> None: ...
