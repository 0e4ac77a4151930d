"""Combine the same calibrated frames with ccdproc.combine and biaswatch's engine, side by side.

Usage:
    .venv/bin/python benchmarks/combine_vs_ccdproc.py [--frames 10] [--size 4096]
        [--mem-limit 350MB] [--out benchmarks/out]

It writes N calibrated float32 frames (size x size, bias level + read noise
+ cosmic rays), then runs each engine in its own child process, one after
the other on the same files: ccdproc.combine with the seed recipe's
parameters (average, 5/5 sigma clipping around the median with mad_std,
mem_limit) and biaswatch.combine.combine_files with the same statistics.
It prints wall time, peak RSS of each child (from wait4), the ratio, and
the largest pixel difference between the two results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.config import parse_size


def make_frames(out: Path, frames: int, size: int) -> list[Path]:
    """Write (or reuse) N calibrated float32 frames with noise and cosmic rays."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    paths = []
    for i in range(frames):
        path = out / f"cal_{size}_{i:03d}.fits"
        paths.append(path)
        if path.exists():
            continue
        data = rng.normal(0.0, 8.0, (size, size)).astype(np.float32)
        hits = rng.integers(0, size, (2, size // 8))
        data[hits[0], hits[1]] += rng.uniform(200, 5000, size // 8).astype(np.float32)
        fits.PrimaryHDU(data).writeto(path, overwrite=True)
    return paths


def run_child(engine: str, paths: list[Path], mem_limit: int, result: Path) -> tuple[float, float]:
    """Run one engine in a child process; returns (wall seconds, peak RSS in MB)."""
    args = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--mem-limit",
        str(mem_limit),
        "--result",
        str(result),
        *map(str, paths),
    ]
    start = time.perf_counter()
    child = subprocess.Popen(args)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{engine} failed with status {status}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def child(engine: str, paths: list[str], mem_limit: int, result: str) -> None:
    """The child's work: combine and save the float32 result as .npy."""
    if engine == "ccdproc":
        from biaswatch.testing import seed_combine

        data = seed_combine(paths, mem_limit).astype(np.float32)
    else:
        from biaswatch.combine import combine_files
        from biaswatch.config import CombineSettings

        data = combine_files([Path(p) for p in paths], CombineSettings(), mem_limit)
    np.save(result, data)


def main() -> None:
    """Parse arguments; run the comparison or, with --child, one engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--mem-limit", default="350MB")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--child", choices=["ccdproc", "biaswatch"])
    parser.add_argument("--result")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args()
    mem_limit = parse_size(args.mem_limit)
    if args.child:
        child(args.child, args.paths, mem_limit, args.result)
        return
    paths = make_frames(args.out, args.frames, args.size)
    rows = {}
    for engine in ("ccdproc", "biaswatch"):
        rows[engine] = run_child(engine, paths, mem_limit, args.out / f"{engine}.npy")
    diff = np.max(np.abs(np.load(args.out / "ccdproc.npy") - np.load(args.out / "biaswatch.npy")))
    print(f"{args.frames} frames of {args.size} x {args.size} float32, mem_limit {args.mem_limit}")
    print("| engine | wall time | peak RSS |")
    print("| --- | --- | --- |")
    for engine, (wall, rss) in rows.items():
        print(f"| {engine} | {wall:.1f} s | {rss:.0f} MB |")
    speedup = rows["ccdproc"][0] / rows["biaswatch"][0]
    print(f"speed-up: {speedup:.1f}x; largest pixel difference: {diff:.2e} ADU")


if __name__ == "__main__":
    main()
