"""An MEF night: biaswatch's whole-master combine against ccdproc run per extension.

Usage:
    .venv/bin/python benchmarks/segments.py [--frames 30] [--rows 4096] [--cols 2048]
        [--segments 4] [--mem-limit 1GB] [--repeat 1] [--out benchmarks/out]

It writes (or reuses) N calibrated MEF work files (issue 13's layout: an empty
primary, then one float32 image extension per segment, AMP1..AMPn), then runs, each
in its own process, one after the other, on the same (page-cached) files:

* ``biaswatch combine --calibrated --mem-limit LIMIT`` (the installed command, a
  whole process: start-up, the combine of every segment with MASK and UNCERT, the QC
  and the master's write);
* the seed recipe per extension: for each EXTNAME, ``ccdproc.combine(files, hdu=NAME,
  mem_limit=LIMIT, ...)`` with the seed's statistics, then ``CCDData.write`` of its
  result (image, MASK, UNCERT), one file per extension, in one Python process.

It prints a markdown table: wall time, peak RSS of each process (ru_maxrss from
wait4), the ratio ccdproc / biaswatch, and the largest differences between the
master's segments and ccdproc's results (data in ADU, uncertainty relative, mask
pixels that differ). The load average before and after is printed: the machine
may be shared. ``--repeat N`` runs the command N times (the median and the range are
printed; ccdproc, at minutes a run, runs once), and issue 14's target line follows:
ccdproc per extension at least 15x the command's wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FRAMES_VERSION = 1  # bump when make_frames changes what it writes
TARGET_VS_CCDPROC = 15.0  # issue 14: the command at least this many times ccdproc's speed


def make_frames(out: Path, frames: int, shape: tuple[int, int], segments: int) -> list[Path]:
    """Write (or reuse) N MEF work files: noise, cosmic rays, a level per segment."""
    from astropy.io import fits

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(frames):
        path = out / f"mef_{shape[0]}x{shape[1]}x{segments}_{i:03d}.fits"
        paths.append(path)
        if path.exists() and fits.getheader(path).get("BENCHGEN") == FRAMES_VERSION:
            continue
        head = fits.PrimaryHDU()
        head.header["BENCHGEN"] = (FRAMES_VERSION, "benchmarks/segments.py frames")
        hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [head]
        for s in range(segments):
            rng = np.random.default_rng([2026, i, s])
            data = rng.normal(1000.0 + 20.0 * s, 8.0, shape).astype(np.float32)
            hits = rng.integers(0, shape, (shape[0] // 8, 2))
            data[hits[:, 0], hits[:, 1]] += rng.uniform(200, 5000, len(hits)).astype(np.float32)
            hdus.append(fits.ImageHDU(data, name=f"AMP{s + 1}"))
        fits.HDUList(hdus).writeto(path, overwrite=True)
    return paths


CCDPROC_CHILD = """
import sys
import warnings
import ccdproc, numpy as np
from astropy.stats import mad_std
warnings.simplefilter("ignore")
out, limit, names, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
for name in names:
    combined = ccdproc.combine(
        paths, hdu=name, method="average", sigma_clip=True, sigma_clip_low_thresh=5,
        sigma_clip_high_thresh=5, sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std,
        mem_limit=limit, unit="adu",
    )
    combined.write(f"{out}/{name}.fits", overwrite=True)
"""


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run a command; its wall time (s) and peak RSS (MiB, ru_maxrss of wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]}... failed with status {status}")
    return seconds, usage.ru_maxrss / 1024


def compare(master: Path, ccdproc_dir: Path, names: list[str]) -> tuple[float, float, int]:
    """Largest |data| difference, largest relative uncertainty difference, mask pixels apart."""
    from astropy.nddata import CCDData

    data = unc = 0.0
    masks = 0
    for name in names:
        planes = {"hdu_mask": f"{name}_MASK", "hdu_uncertainty": f"{name}_UNCERT"}
        ours = CCDData.read(master, hdu=name, **planes)
        ref = CCDData.read(ccdproc_dir / f"{name}.fits")
        data = max(data, float(np.nanmax(np.abs(ours.data - ref.data))))
        rel = np.abs(ours.uncertainty.array - ref.uncertainty.array) / np.abs(ref.uncertainty.array)
        unc = max(unc, float(np.nanmax(rel)))
        masks += int(np.count_nonzero(ours.mask != ref.mask))
    return data, unc, masks


def main() -> None:
    """Run both, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--mem-limit", default="1GB")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the biaswatch command")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    from biaswatch.settings import parse_size

    limit = parse_size(args.mem_limit)
    paths = make_frames(args.out / "segments", args.frames, (args.rows, args.cols), args.segments)
    names = [f"AMP{s + 1}" for s in range(args.segments)]
    for path in paths:  # into the page cache: neither engine pays for the disk
        path.read_bytes()
    work = args.out / "segments-results"
    shutil.rmtree(work, ignore_errors=True)
    (work / "ccdproc").mkdir(parents=True)
    master = work / "master.fits"
    print(f"load average before: {os.getloadavg()}", flush=True)
    bw_cmd = [str(Path(sys.executable).with_name("biaswatch")), "combine", "--calibrated"]
    runs = []
    for _ in range(max(1, args.repeat)):
        master.unlink(missing_ok=True)  # the command never overwrites a master
        argv = [*bw_cmd, "--mem-limit", str(limit), "-o", str(master), *map(str, paths)]
        runs.append(run_measured(argv))
        print(f"biaswatch: {runs[-1][0]:.1f} s, {runs[-1][1]:.0f} MiB; load {os.getloadavg()}")
    walls = [wall for wall, _ in runs]
    bw = (statistics.median(walls), max(rss for _, rss in runs))
    spread = f" ({min(walls):.1f}-{max(walls):.1f})" if len(walls) > 1 else ""
    cp_cmd = [sys.executable, "-c", CCDPROC_CHILD, str(work / "ccdproc"), str(limit)]
    cp = run_measured([*cp_cmd, ",".join(names), *map(str, paths)])
    print(f"ccdproc: {cp[0]:.1f} s, {cp[1]:.0f} MiB; load {os.getloadavg()}", flush=True)
    data, unc, masks = compare(master, work / "ccdproc", names)
    mib = limit / 2**20
    print(
        f"\n{args.frames} frames x {args.segments} extensions of {args.rows} x {args.cols}"
        f" float32, mem_limit {limit} bytes ({mib:.0f} MiB)\n"
    )
    print("| engine | wall s | peak RSS MiB | time / biaswatch |")
    print("|---|---|---|---|")
    print(f"| biaswatch combine (whole process) | {bw[0]:.1f}{spread} | {bw[1]:.0f} | 1.0 |")
    print(f"| ccdproc.combine per extension | {cp[0]:.1f} | {cp[1]:.0f} | {cp[0] / bw[0]:.1f} |")
    print(
        f"\nmax |data diff| {data:.2e} ADU, max relative uncertainty diff {unc:.2e},"
        f" mask pixels that differ: {masks}"
    )
    ratio = cp[0] / bw[0]
    met = "met" if ratio >= TARGET_VS_CCDPROC else "NOT met"
    print(
        f"\ntarget 5: per segment, the command is {ratio:.1f}x faster than ccdproc.combine "
        f"(at least {TARGET_VS_CCDPROC:g}x: {met}); {bw[0] / args.segments:.2f} s per segment"
    )


if __name__ == "__main__":
    main()
