"""The compiled kernel (_kernel.c) against the numba kernel it replaced, byte for byte.

Issue 14 replaced the numba kernel (combine/kernel.py and kernel_band.py up to commit
3e7d728) by a C extension that must give the same bytes on every input. This script
takes those two numba files from git (``--before``), imports them next to the C kernel
and runs both on many random stacks: 1..100 frames, float32 and float64 stacks, float32
and float64 results, NaN, +-inf, -0.0, outliers, ties and constant pixels, every Params
combination (average/median, clip or not, median/mean centre, mad_std/std deviation,
several sigmas and maxiters, with and without the MASK and UNCERT planes). It prints
the number of cases and exits 1 at the first difference, naming it.

With ``--speed`` it also times both kernels, engine only (combine_band on a stack in
memory, no file read), on 20 frames of 256 x 4096 float32 pixels (read noise and cosmic
rays) with the default settings and MASK/UNCERT, alternately, --repeat times each, and
prints the median (min-max) and the ratio.

It needs numba, which biaswatch no longer depends on::

    .venv/bin/pip install 'numba>=0.60'
    .venv/bin/python benchmarks/kernel_identity.py --cases 20000 --speed
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from biaswatch.combine.engine import kernel_params
from biaswatch.combine.kernel import Params, Scratch, sorting_network
from biaswatch.combine.kernel_band import Planes, combine_band
from biaswatch.settings import CombineSettings

ROOT = Path(__file__).resolve().parent.parent


def numba_kernel(before: str, where: Path) -> ModuleType:
    """The numba kernel_band module of commit ``before``, importable from ``where``."""
    for name in ("kernel", "kernel_band"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{before}:src/biaswatch/combine/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("from biaswatch.combine.kernel import", "from numba_kernel import")
        (where / f"numba_{name}.py").write_text(source)
    sys.path.insert(0, str(where))
    return importlib.import_module("numba_kernel_band")


def random_stack(rng: np.random.Generator, n: int, rows: int, cols: int, dtype: Any) -> Any:
    """A stack with noise, outliers, ties, signed zeros, constant pixels, NaN and +-inf."""
    kind = rng.integers(0, 4)
    if kind == 0:  # small integers: many ties, zeros of both signs
        stack = rng.integers(-3, 4, (n, rows, cols)).astype(np.float64)
        stack[rng.random(stack.shape) < 0.2] = -0.0
    elif kind == 1:  # read noise plus cosmic rays
        stack = rng.normal(0.0, 8.0, (n, rows, cols))
        stack[rng.random(stack.shape) < 0.05] += rng.uniform(200, 5000)
    elif kind == 2:  # wide dynamic range
        stack = rng.standard_cauchy((n, rows, cols)) * 10.0 ** rng.integers(-3, 6)
    else:  # constant pixels, some with one odd value
        stack = np.broadcast_to(rng.normal(0, 5, (1, rows, cols)), (n, rows, cols)).copy()
        stack[rng.integers(0, n), :, : cols // 2] += 1.0
    for value, share in ((np.nan, 0.05), (np.inf, 0.02), (-np.inf, 0.02)):
        stack[rng.random(stack.shape) < share * rng.integers(0, 2)] = value
    if rng.random() < 0.1:
        stack[:, :, 0] = np.nan  # a column with no valid value
    return np.ascontiguousarray(stack.astype(dtype))


def random_params(rng: np.random.Generator) -> Params:
    """Any combination of the settings, errors included."""
    sigmas = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
    return Params(
        average=bool(rng.integers(0, 2)),
        clip=bool(rng.random() < 0.8),
        center_median=bool(rng.integers(0, 2)),
        dev_mad=bool(rng.integers(0, 2)),
        sigma_low=float(rng.choice(sigmas)),
        sigma_high=float(rng.choice(sigmas)),
        maxiters=int(rng.choice([0, 1, 2, 3, 5, 10, 100])),
        errors=bool(rng.integers(0, 2)),
    )


def run(band: Any, scratch: Any, stack: Any, out_dtype: Any, p: Params) -> list[bytes]:
    """One kernel's result, MASK and UNCERT bytes for the stack."""
    rows, cols = stack.shape[1:]
    out = np.full((rows, cols), 7.0, out_dtype)
    planes = Planes.allocate(rows, cols) if p.errors else Planes.allocate(0, 0)
    pairs = sorting_network(stack.shape[0])
    band(stack, out, pairs, p, scratch(stack.shape[0], cols, stack.dtype), planes)
    return [out.tobytes(), planes.mask.tobytes(), planes.unc.tobytes()]


def speed(reference: ModuleType, repeat: int) -> None:
    """Time both kernels on one realistic stack, alternately; print median (min-max) and ratio."""
    rng = np.random.default_rng(0)
    stack = rng.normal(0.0, 8.0, (20, 256, 4096)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.001] += 3000.0  # cosmic rays
    p = kernel_params(CombineSettings(), errors=True)
    kernels = {
        "numba": (reference.combine_band, sys.modules["numba_kernel"].Scratch.allocate),
        "C": (combine_band, Scratch.allocate),
    }
    seconds: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(repeat + 1):  # the first round warms both up (numba compiles) and is dropped
        for name, (band, scratch) in kernels.items():
            start = time.perf_counter()
            run(band, scratch, stack, np.float32, p)
            seconds[name].append(time.perf_counter() - start)
    for name, times in seconds.items():
        kept = times[1:]
        print(f"{name}: {statistics.median(kept):.3f} s ({min(kept):.3f}-{max(kept):.3f})")
    ratio = statistics.median(seconds["numba"][1:]) / statistics.median(seconds["C"][1:])
    print(f"numba / C: {ratio:.2f} (20 x 256 x 4096 float32, {p})")


def main() -> int:
    """Compare the kernels on --cases random stacks; 0 when every byte matched."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="3e7d728", help="the commit of the numba kernel")
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--speed", action="store_true", help="also time both kernels")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (--speed)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as where:
        reference = numba_kernel(args.before, Path(where))
        old_scratch = sys.modules["numba_kernel"].Scratch.allocate
        dtypes = itertools.cycle(itertools.product((np.float32, np.float64), repeat=2))
        for case in range(args.cases):
            stack_dtype, out_dtype = next(dtypes)
            n = int(rng.integers(1, 101)) if case % 4 else int(rng.integers(1, 9))
            wide = case % 10 == 0  # past every SIMD width, and rows over several threads
            rows = int(rng.integers(1, 70 if wide else 6))
            cols = int(rng.integers(1, 1200 if wide else 80))
            stack, p = random_stack(rng, n, rows, cols, stack_dtype), random_params(rng)
            theirs = run(reference.combine_band, old_scratch, stack, out_dtype, p)
            ours = run(combine_band, Scratch.allocate, stack, out_dtype, p)
            for name, a, b in zip(("image", "mask", "uncert"), theirs, ours, strict=True):
                if a != b:
                    print(f"case {case}: {name} differs: n={n} {stack.dtype} -> {out_dtype} {p}")
                    np.save(Path(tempfile.gettempdir()) / "kernel_identity_stack.npy", stack)
                    return 1
        print(
            f"{args.cases} cases, every byte identical (seed {args.seed}, numba at {args.before})"
        )
        if args.speed:
            speed(reference, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
