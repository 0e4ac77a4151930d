"""Combine the same calibrated frames with ccdproc, biaswatch, IRAF and Siril, side by side.

Usage:
    .venv/bin/python benchmarks/combine_vs_ccdproc.py [--frames 10 [20 ...]] [--size 4096]
        [--mem-limit 350MB] [--repeat 1] [--skip ENGINE[:MIN_FRAMES] ...] [--out benchmarks/out]
        [--iraf-maxmemory mem_limit|default|SIZE] [--siril-rejection s]

It writes (or reuses) calibrated float32 frames (size x size, read noise + cosmic
rays), then for each frame count runs every engine in its own process, one after
the other, on the same files:

* ccdproc.combine with the seed recipe's parameters (average, 5/5 sigma clipping
  around the median with mad_std, mem_limit);
* the command a user runs, ``biaswatch combine --calibrated --mem-limit ... -o ...``
  (the console script next to this interpreter, as a whole process: imports, input
  hashing, combine, QC and the master's write), the headline row; and the same command
  on 3 frames of 64 x 64, its fixed cost;
* biaswatch.combine.engine.combine_files with the same statistics (CombineSettings()),
  in a bare child that has loaded the kernel: the engine alone, a secondary row;
* IRAF 2.17 imcombine (average, sigclip 5/5, median centre, no scaling);
* Siril 1.0.6 stack (average, sigma clipping 5/5, no normalisation, all cores).

It prints one markdown table per count: wall time, peak RSS of the process tree,
for the Python engines the RSS above the process's own RSS before the combine,
the time ratio to biaswatch and the pixel differences to ccdproc's result. With
several counts it adds a summary of time per (frame x megapixel). benchmarks/setup.sh
installs IRAF and Siril; benchmarks/README.md explains every column.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).parent))
import external  # a sibling file, not a package

ENGINES = ("ccdproc", "command", "tiny", "biaswatch", "iraf", "siril")
# Issue 14's targets for the command (whole process): at least this many times faster
# than ccdproc.combine, and at most this fraction of Siril's wall time.
TARGET_VS_CCDPROC = 15.0
TARGET_VS_SIRIL = 0.6
TINY_FRAMES, TINY_SIZE = 3, 64  # the fixed-cost run: interpreter, imports, kernel load
FRAMES_VERSION = 2  # bump when make_frames changes what it writes: cached frames are redone
MIB = 1024 * 1024
CLOSE_ADU = 0.01  # "off" means a difference larger than this

Image = npt.NDArray[np.float32]


def make_frames(out: Path, frames: int, size: int) -> list[Path]:
    """Write (or reuse) N calibrated float32 frames with noise and cosmic rays.

    Frame i depends only on (size, i), so a later run with more frames adds frames and
    keeps the first ones; a file from another version of this function is rewritten.
    """
    # Imported here, not at the top: the engines' children run this file too, and
    # astropy's import time must not count against an engine that does not use it.
    from astropy.io import fits

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(frames):
        path = out / f"cal_{size}_{i:03d}.fits"
        paths.append(path)
        if path.exists() and fits.getheader(path).get("BENCHGEN") == FRAMES_VERSION:
            continue
        rng = np.random.default_rng([2026, size, i])
        data = rng.normal(0.0, 8.0, (size, size)).astype(np.float32)
        hits = rng.integers(0, size, (2, size // 8))
        data[hits[0], hits[1]] += rng.uniform(200, 5000, size // 8).astype(np.float32)
        hdu = fits.PrimaryHDU(data)
        hdu.header["BENCHGEN"] = (FRAMES_VERSION, "benchmarks/combine_vs_ccdproc.py frames")
        hdu.writeto(path, overwrite=True)
    return paths


def warm_cache(paths: Sequence[Path]) -> None:
    """Read every file once so that no engine pays for the disk and all read from cache."""
    for path in paths:
        with path.open("rb") as f:
            while f.read(16 * MIB):
                pass


# --- the Python engines, each in a child process --------------------------------------


def _proc_status_kib(field_name: str) -> int:
    """A field of /proc/self/status in KiB, e.g. VmRSS (resident now) or VmHWM (peak)."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no {field_name} in /proc/self/status")
    return int(match.group(1))


def child(engine: str, paths: list[str], mem_limit: int, result: str, report: str) -> None:
    """The child's work: combine, save the float32 result as .npy, report memory as JSON.

    Everything the combine needs is imported first, so that the RSS read before the
    combine (the baseline) holds the interpreter, numpy, astropy and the engine's code.
    """
    if engine == "recipe":
        import ccdproc  # imported by recipe_master; here so that the baseline holds it

        from biaswatch.testing.reference import recipe_master

        segment = raw_segment(Path(paths[0]))

        def combine() -> Any:
            return recipe_master([Path(p) for p in paths], [segment], mem_limit)[""].data
    elif engine == "ccdproc":
        import ccdproc  # noqa: F401  (imported by seed_combine; here so the baseline has it)

        from biaswatch.testing.fits import seed_combine

        def combine() -> Any:
            return seed_combine(paths, mem_limit)
    else:
        from biaswatch.combine.engine import combine_files, warm_up
        from biaswatch.settings import CombineSettings

        # The service's combine child is forked from a server that has loaded the
        # compiled kernel (biaswatch.combine.preload): its memory before the combine holds it.
        warm_up()

        def combine() -> Any:
            return combine_files([Path(p) for p in paths], CombineSettings(), mem_limit)

    rss_before = _proc_status_kib("VmRSS")
    hwm_before = _proc_status_kib("VmHWM")
    start = time.perf_counter()
    data = combine()
    seconds = time.perf_counter() - start
    hwm_after = _proc_status_kib("VmHWM")
    np.save(result, np.asarray(data, dtype=np.float32))
    facts = {
        "rss_before_kib": rss_before,
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": hwm_after,
        "combine_seconds": seconds,
    }
    Path(report).write_text(json.dumps(facts))


@dataclass
class Row:
    """One engine's measurements for one frame count: one run, or ``--repeat`` runs."""

    label: str
    runs: list[external.TreeRun] = field(default_factory=list)
    reports: list[dict[str, float]] = field(default_factory=list)  # the Python child's
    image: Image | None = None  # of the last run
    command: str = ""
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether every run succeeded (and there was one)."""
        return bool(self.runs) and not self.error

    @property
    def wall(self) -> float:
        """The median wall time of the runs."""
        return statistics.median(run.wall for run in self.runs)

    def wall_text(self) -> str:
        """``3.0 s``, or ``3.0 s (2.8-3.4)`` with the range of several runs."""
        walls = [run.wall for run in self.runs]
        spread = f" ({min(walls):.1f}-{max(walls):.1f})" if len(walls) > 1 else ""
        return f"{self.wall:.1f} s{spread}"

    @property
    def peak_rss_mib(self) -> float:
        """The largest peak RSS over the runs."""
        return max(run.peak_rss_mib for run in self.runs)

    @property
    def worst_report(self) -> dict[str, float] | None:
        """The Python child's report of the run that rose most above its baseline."""
        if not self.reports:
            return None
        return max(self.reports, key=lambda r: r["hwm_after_kib"] - r["rss_before_kib"])

    @property
    def above_baseline_mib(self) -> float | None:
        """Peak RSS of the combining process minus its RSS before the combine, in MiB."""
        worst = self.worst_report
        return None if worst is None else (worst["hwm_after_kib"] - worst["rss_before_kib"]) / 1024

    @property
    def combine_seconds(self) -> float:
        """The median in-process combine time of the Python child."""
        return statistics.median(r["combine_seconds"] for r in self.reports)


def run_python_engine(
    row: Row, engine: str, paths: Sequence[Path], args: argparse.Namespace
) -> None:
    """Run ccdproc or biaswatch in a child process of this script, measured as a tree."""
    work = args.out / "work"
    result, report, log = work / f"{engine}.npy", work / f"{engine}.json", work / f"{engine}.log"
    for stale in (result, report):
        stale.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--child", engine, "--mem-limit", str(args.mem_limit_bytes)]
    argv += ["--result", str(result), "--report", str(report), *map(str, paths)]
    run = external.run_tree(argv, log=log)
    if run.exit_code != 0 or not report.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        row.error = f"exit {run.exit_code}; log {log}:\n{tail}"
        return
    row.runs.append(run)
    row.image = np.load(result)
    row.reports.append(json.loads(report.read_text()))


def biaswatch_script() -> str:
    """The installed console script beside this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("biaswatch")
    if not script.exists():
        raise SystemExit(f"no console script {script}: pip install -e . in this environment")
    return str(script)


def tiny_frames(out: Path) -> list[Path]:
    """TINY_FRAMES calibrated float32 frames of TINY_SIZE x TINY_SIZE (written once)."""
    from astropy.io import fits

    paths = []
    for i in range(TINY_FRAMES):
        paths.append(out / f"tiny_{TINY_SIZE}_{i}.fits")
        if not paths[-1].exists():
            data = np.random.default_rng([TINY_SIZE, i]).normal(0.0, 8.0, (TINY_SIZE,) * 2)
            fits.writeto(paths[-1], data.astype(np.float32))
    return paths


def run_command(
    row: Row, name: str, paths: Sequence[Path], args: argparse.Namespace, calibrated: bool = True
) -> None:
    """``biaswatch combine [--calibrated]`` as a user runs it, measured as a process tree.

    PYTHONPATH and the rest of the environment pass through (a worktree's sources win).
    """
    work = args.out / "work"
    master, log = work / f"{name}.fits", work / f"{name}.log"
    master.unlink(missing_ok=True)  # the command never overwrites a master
    argv = [biaswatch_script(), "combine", *(["--calibrated"] if calibrated else [])]
    argv += ["--mem-limit", args.mem_limit, "-o", str(master), *map(str, paths)]
    run = external.run_tree(argv, log=log)
    if run.exit_code != 0 or not master.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        row.error = f"exit {run.exit_code}; log {log}:\n{tail}"
        return
    row.runs.append(run)
    row.image = external.read_image(master)
    row.command = " ".join(["biaswatch", *argv[1 : 5 + calibrated], f"... ({len(paths)} files)"])
    row.notes = [log.read_text(errors="replace").strip().splitlines()[-1]]


def run_external(row: Row, engine: str, paths: Sequence[Path], args: argparse.Namespace) -> None:
    """Run IRAF or Siril through benchmarks/external.py."""
    try:
        if engine == "iraf":
            done = external.run_imcombine(paths, args.out / "work" / "iraf", args.iraf_bytes)
        else:
            done = external.run_siril(
                paths,
                args.out / "work" / "siril",
                rejection=args.siril_rejection,
                threads=os.cpu_count() or 1,
            )
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        row.error = str(exc)
        return
    row.runs.append(done.run)
    row.image, row.command, row.notes = done.image, done.command, [*done.notes]


def _version(argv: list[str], pattern: str) -> str:
    """A tool's version from its own output, or '?' if it cannot say."""
    try:
        text = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "?"
    match = re.search(pattern, text)
    return match.group(1) if match else "?"


_LABELS: dict[str, str] = {}


def engine_label(engine: str) -> str:
    """The engine's name and version, as printed in the tables (versions looked up once)."""
    if not _LABELS:
        _LABELS["ccdproc"] = f"ccdproc {importlib.metadata.version('ccdproc')} `combine`"
        version = importlib.metadata.version("biaswatch")
        _LABELS["command"] = f"`biaswatch combine --calibrated` {version} (whole process)"
        _LABELS["tiny"] = f"the same on {TINY_FRAMES} frames of {TINY_SIZE}² (fixed cost)"
        _LABELS["biaswatch"] = f"biaswatch {version} engine alone (bare child, kernel loaded)"
        iraf = _version([external.IRAF_CL, "-v"], r"V?(\d[\w.]*)")
        _LABELS["iraf"] = f"IRAF {iraf} `imcombine`"
        siril = _version([external.SIRIL_CLI, "--version"], r"siril (\S+)")
        _LABELS["siril"] = f"Siril {siril} `stack`"
    return _LABELS[engine]


# --- comparing results -----------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    """How one result differs from the reference, over pixels finite in both."""

    max_abs: float
    off: int  # pixels differing by more than CLOSE_ADU
    nan: int  # NaN pixels in the result
    nan_reference: int


def compare(image: Image, reference: Image, mask: npt.NDArray[np.bool_] | None = None) -> Diff:
    """Largest |image - reference| over pixels finite in both (and in ``mask``)."""
    finite = np.isfinite(image) & np.isfinite(reference)
    if mask is not None:
        finite &= mask
    diff = np.abs(image[finite].astype(np.float64) - reference[finite])
    return Diff(
        float(diff.max()) if diff.size else float("nan"),
        int(np.count_nonzero(diff > CLOSE_ADU)),
        int(np.count_nonzero(np.isnan(image))),
        int(np.count_nonzero(np.isnan(reference))),
    )


def siril_clamp_note(image: Image, reference: Image) -> str:
    """Siril caps float results at 1.0 (it takes float data to be in [0, 1]): say how much."""
    clamped = int(np.count_nonzero((image == 1.0) & (reference > 1.0)))
    below = compare(image, reference, reference < 1.0)
    return (
        f"Siril capped {clamped} pixels at 1.0 (Siril 1.0 writes min(result, 1) for 32-bit "
        f"output); over the pixels where ccdproc's result is below 1 ADU the largest "
        f"difference is {below.max_abs:.3g} ADU ({below.off} pixels off by > {CLOSE_ADU})"
    )


# --- one frame count ---------------------------------------------------------------------


def run_count(paths: Sequence[Path], args: argparse.Namespace) -> dict[str, Row]:
    """Run every engine not skipped for this frame count, one after the other.

    With ``--repeat N`` each engine runs N times in a row (the machine may be shared).
    """
    (args.out / "work").mkdir(parents=True, exist_ok=True)
    warm_cache(paths)
    rows = {}
    for engine in ENGINES:
        if skipped(engine, len(paths), args.skip):
            continue
        row = rows[engine] = Row(engine_label(engine))
        for attempt in range(args.repeat):
            print(f"  {engine} run {attempt + 1} ...", file=sys.stderr, flush=True)
            if engine == "command":
                run_command(row, engine, paths, args)
            elif engine == "tiny":
                run_command(row, engine, tiny_frames(args.out), args)
            elif engine in ("ccdproc", "biaswatch"):
                run_python_engine(row, engine, paths, args)
            else:
                run_external(row, engine, paths, args)
            if row.error:
                print(f"  {engine} FAILED: {row.error}", file=sys.stderr)
                break
    return rows


def print_count_table(rows: dict[str, Row], frames: int, args: argparse.Namespace) -> None:
    """The markdown table of one frame count, with the details below it."""
    size = args.size
    reference_name = "ccdproc" if "ccdproc" in rows and rows["ccdproc"].ok else "biaswatch"
    reference = rows[reference_name].image if reference_name in rows else None
    base_name = "command" if "command" in rows and rows["command"].ok else "biaswatch"
    base = rows.get(base_name)
    base_wall = base.wall if base and base.ok else None
    runs = f", median of {args.repeat} runs (min-max)" if args.repeat > 1 else ""
    print(
        f"\n### {frames} frames of {size} x {size} float32 "
        f"({frames * size * size * 4 / 1e6:.0f} MB of files), mem_limit {args.mem_limit}{runs}\n"
    )
    print(
        f"| engine | wall time | peak RSS | RSS above baseline | time / {base_name} "
        f"| max abs diff vs {reference_name} | pixels off > {CLOSE_ADU} ADU "
        f"| NaN (result / {reference_name}) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for engine, row in rows.items():
        if not row.ok or row.image is None:
            print(f"| {row.label} | failed | | | | | | |")
            continue
        above = row.above_baseline_mib
        ratio = f"{row.wall / base_wall:.2f}x" if base_wall else "-"
        if reference is None or engine == "tiny":
            diff_cells = "- | - | -"
        elif engine == reference_name:
            nan = int(np.count_nonzero(np.isnan(row.image)))
            diff_cells = f"reference | - | {nan} / {nan}"
        else:
            d = compare(row.image, reference)
            diff_cells = f"{d.max_abs:.3g} ADU | {d.off} | {d.nan} / {d.nan_reference}"
        print(
            f"| {row.label} | {row.wall_text()} | {row.peak_rss_mib:.0f} MiB "
            f"| {'-' if above is None else f'{above:.0f} MiB'} | {ratio} | {diff_cells} |"
        )
    print()
    for line in target_lines(rows, args):
        print(f"- {line}")
    for engine, row in rows.items():
        for line in details(engine, row, reference, args):
            print(f"- {line}")


def target_lines(rows: dict[str, Row], args: argparse.Namespace) -> list[str]:
    """Issue 14's targets for the command: against ccdproc and Siril, and its memory."""
    command = rows.get("command")
    if command is None or not command.ok:
        return []
    lines = []
    ccdproc, siril, tiny = rows.get("ccdproc"), rows.get("siril"), rows.get("tiny")
    if ccdproc is not None and ccdproc.ok:
        ratio = ccdproc.wall / command.wall
        met = "met" if ratio >= TARGET_VS_CCDPROC else "NOT met"
        lines.append(
            f"target 1: the command is {ratio:.1f}x faster than ccdproc.combine "
            f"(at least {TARGET_VS_CCDPROC:g}x: {met})"
        )
    if siril is not None and siril.ok:
        ratio = command.wall / siril.wall
        met = "met" if ratio <= TARGET_VS_SIRIL else "NOT met"
        lines.append(
            f"target 1: the command takes {ratio:.2f}x Siril's wall time "
            f"(at most {TARGET_VS_SIRIL:g}x: {met})"
        )
    if tiny is not None and tiny.ok:
        above = command.peak_rss_mib - tiny.peak_rss_mib
        holds = "holds" if above * MIB <= args.mem_limit_bytes else "EXCEEDED"
        lines.append(
            f"memory: the command's peak RSS is {above:.0f} MiB above the tiny run's "
            f"(mem_limit {args.mem_limit} = {args.mem_limit_bytes / MIB:.0f} MiB: {holds})"
        )
    return lines


def details(engine: str, row: Row, reference: Image | None, args: argparse.Namespace) -> list[str]:
    """The lines printed under the table for one engine."""
    if row.error:
        return [f"{row.label}: FAILED: {row.error.splitlines()[0]}"]
    lines = [f"{row.label}: processes: {row.runs[-1].describe()}"]
    worst, above = row.worst_report, row.above_baseline_mib
    if worst is not None and above is not None:
        limit_mib = args.mem_limit_bytes / MIB
        holds = "holds" if above * MIB <= args.mem_limit_bytes else "EXCEEDED"
        lines.append(
            f"{row.label}: combine alone {row.combine_seconds:.1f} s; RSS before the "
            f"combine {worst['rss_before_kib'] / 1024:.0f} MiB, peak "
            f"{worst['hwm_after_kib'] / 1024:.0f} MiB: {above:.0f} MiB above baseline vs "
            f"mem_limit {args.mem_limit} = {limit_mib:.0f} MiB: {holds}"
        )
    if row.command:
        lines.append(f"{row.label}: `{row.command}`")
    lines += [f"{row.label}: {note}" for note in row.notes]
    if engine == "siril" and reference is not None and row.image is not None:
        lines.append(siril_clamp_note(row.image, reference))
    return lines


def print_summary(results: dict[int, dict[str, Row]], args: argparse.Namespace) -> None:
    """Frames x pixels vs time for the command, the engine and ccdproc; the memory check."""
    megapixels = args.size * args.size / 1e6
    print(f"\n### Scaling: {args.size} x {args.size} frames ({megapixels:.1f} MP each)\n")
    print(
        "| frames | frames x MP | command wall | command (wall - fixed) ms / (frame x MP) "
        "| biaswatch wall | biaswatch combine | biaswatch ms / (frame x MP) "
        "| biaswatch RSS above baseline | <= mem_limit | ccdproc wall | ccdproc combine "
        "| ccdproc ms / (frame x MP) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |")
    for frames, rows in results.items():
        units = frames * megapixels
        cells = [str(frames), f"{units:.0f}", *_command_cells(rows, units)]
        for engine in ("biaswatch", "ccdproc"):
            row = rows.get(engine)
            if row is None or not row.ok:
                cells += ["-", "-", "-"] + (["-", "-"] if engine == "biaswatch" else [])
                continue
            seconds = row.combine_seconds
            cells += [row.wall_text(), f"{seconds:.1f} s", f"{seconds * 1e3 / units:.1f}"]
            above = row.above_baseline_mib
            if engine == "biaswatch" and above is not None:
                holds = "yes" if above * MIB <= args.mem_limit_bytes else "**no**"
                cells += [f"{above:.0f} MiB", holds]
        print(f"| {' | '.join(cells)} |")
    print(
        f"\nms / (frame x MP): the command's wall time less its fixed cost (the same command "
        f"on {TINY_FRAMES} tiny frames), and the engine's in-process combine time (no "
        f"interpreter start-up), per frame and megapixel: constant when the time is linear. "
        f"mem_limit {args.mem_limit} = {args.mem_limit_bytes / MIB:.0f} MiB."
    )


def _command_cells(rows: dict[str, Row], units: float) -> list[str]:
    """The command's wall time and its cost per frame x MP above the fixed cost."""
    command, tiny = rows.get("command"), rows.get("tiny")
    if command is None or not command.ok:
        return ["-", "-"]
    if tiny is None or not tiny.ok:
        return [command.wall_text(), "-"]
    return [command.wall_text(), f"{(command.wall - tiny.wall) * 1e3 / units:.1f}"]


# --- raw frames: the command with its calibration, against the seed's whole recipe ----

RAW_SHAPE_COLS_EXTRA = 32  # overscan columns right of the image (BIASSEC), as testing writes
RAW_ENGINES = ("recipe", "raw")


def make_raw_frames(out: Path, frames: int, size: int) -> list[Path]:
    """Write (or reuse) N raw uint16 frames of size x (size + 32): image, then overscan.

    biaswatch.testing's writer (BIASSEC and TRIMSEC in the header, level 1000 ADU, read
    noise 8 ADU, rounded to whole ADU), one night, no DATE card: the same bytes each time.
    """
    from biaswatch.testing.fits import fits_bytes

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(frames):
        path = out / f"raw_{size}_{i:03d}.fits"
        paths.append(path)
        if not path.exists():
            shape = (size, size + RAW_SHAPE_COLS_EXTRA)
            data = fits_bytes(
                shape=shape,
                overscan_cols=RAW_SHAPE_COLS_EXTRA,
                noise=8.0,
                seed=2026 + i,
                header={"DATE": None},
            )
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.rename(path)  # a run stopped mid-write leaves no short frame behind
    return paths


def raw_segment(path: Path) -> Any:
    """The seed recipe's one segment of a raw frame: BIASSEC overscan, TRIMSEC data."""
    from astropy.io import fits

    from biaswatch.testing.reference import RecipeSegment

    header = fits.getheader(path)
    return RecipeSegment("", 0, overscan=header["BIASSEC"], data=header["TRIMSEC"])


def run_raw_count(paths: Sequence[Path], args: argparse.Namespace) -> dict[str, Row]:
    """The seed's recipe (one Python process) and ``biaswatch combine`` on the raw frames."""
    (args.out / "work").mkdir(parents=True, exist_ok=True)
    warm_cache(paths)
    labels = {
        "recipe": "seed recipe: ccdproc subtract_overscan + trim_image per frame, then combine",
        "raw": "`biaswatch combine` on raw frames (whole process, calibration included)",
    }
    rows = {}
    for engine in RAW_ENGINES:
        if skipped(engine, len(paths), args.skip):
            continue
        row = rows[engine] = Row(labels[engine])
        for attempt in range(args.repeat):
            print(f"  {engine} run {attempt + 1} ...", file=sys.stderr, flush=True)
            if engine == "raw":
                run_command(row, engine, paths, args, calibrated=False)
            else:
                run_python_engine(row, engine, paths, args)
            if row.error:
                print(f"  {engine} FAILED: {row.error}", file=sys.stderr)
                break
    return rows


def print_raw_table(rows: dict[str, Row], frames: int, args: argparse.Namespace) -> None:
    """The raw frames' table: wall, peak RSS, the ratio to the recipe, the difference."""
    cols = args.size + RAW_SHAPE_COLS_EXTRA
    runs = f", median of {args.repeat} runs (min-max)" if args.repeat > 1 else ""
    print(
        f"\n### {frames} raw frames of {args.size} x {cols} uint16 "
        f"({frames * args.size * cols * 2 / 1e6:.0f} MB of files), "
        f"mem_limit {args.mem_limit}{runs}\n"
    )
    print("| what runs | wall time | peak RSS | recipe / this | max abs diff vs recipe |")
    print("| --- | ---: | ---: | ---: | ---: |")
    recipe = rows.get("recipe")
    for row in rows.values():
        if not row.ok or row.image is None:
            print(f"| {row.label} | failed | | | |")
            continue
        ratio = f"{recipe.wall / row.wall:.1f}x" if recipe and recipe.ok else "-"
        diff = "-"
        if recipe is not None and recipe.image is not None and row is not recipe:
            diff = f"{compare(row.image, recipe.image).max_abs:.3g} ADU"
        print(
            f"| {row.label} | {row.wall_text()} | {row.peak_rss_mib:.0f} MiB | {ratio} | {diff} |"
        )
    raw = rows.get("raw")
    if recipe is not None and recipe.ok and raw is not None and raw.ok:
        ratio = recipe.wall / raw.wall
        met = "met" if ratio >= TARGET_VS_CCDPROC else "NOT met"
        print(
            f"\n- target 1 (raw): the command is {ratio:.1f}x faster than the seed's whole "
            f"recipe (at least {TARGET_VS_CCDPROC:g}x: {met})"
        )
    for row in rows.values():
        if row.error:
            print(f"- {row.label}: FAILED: {row.error.splitlines()[0]}")
        elif row.notes:
            print(f"- {row.label}: {row.notes[-1]}")


def main_raw(args: argparse.Namespace) -> None:
    """``--raw``: one table per frame count, the recipe and the command on raw frames."""
    counts = sorted(set(args.frames))
    print(f"writing or checking {max(counts)} raw frames in {args.out} ...", file=sys.stderr)
    all_paths = make_raw_frames(args.out, max(counts), args.size)
    failed = False
    for frames in counts:
        print(f"{frames} raw frames:", file=sys.stderr, flush=True)
        rows = run_raw_count(all_paths[:frames], args)
        print_raw_table(rows, frames, args)
        sys.stdout.flush()
        failed |= any(row.error for row in rows.values())
    if failed:
        raise SystemExit("some runs failed; see above")


# --- command line ------------------------------------------------------------------------


def skipped(engine: str, frames: int, skips: Sequence[tuple[str, int]]) -> bool:
    """Whether ``--skip`` leaves ``engine`` out at this frame count."""
    return any(name == engine and frames >= minimum for name, minimum in skips)


def parse_skip(value: str) -> tuple[str, int]:
    """``iraf`` (always) or ``ccdproc:50`` (from 50 frames up) -> (engine, minimum frames)."""
    name, _, minimum = value.partition(":")
    if name not in (*ENGINES, *RAW_ENGINES):
        known = ", ".join((*ENGINES, *RAW_ENGINES))
        raise argparse.ArgumentTypeError(f"unknown engine {name!r}; one of {known}")
    try:
        return name, int(minimum) if minimum else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected ENGINE or ENGINE:FRAMES") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10], help="frame counts")
    parser.add_argument("--size", type=int, default=4096, help="frames are size x size")
    parser.add_argument("--mem-limit", default="350MB", help="for ccdproc and biaswatch")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each engine per count")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument(
        "--skip",
        type=parse_skip,
        nargs="*",
        default=[],
        metavar="ENGINE[:FRAMES]",
        help="leave an engine out (from FRAMES frames up), e.g. --skip siril ccdproc:50",
    )
    parser.add_argument(
        "--iraf-maxmemory",
        default="mem_limit",
        help="IRAF's imcombine_maxmemory: mem_limit (default), default (IRAF's), or a size",
    )
    parser.add_argument(
        "--siril-rejection",
        default="s",
        help="Siril rejection type: s (sigma, default), a (k-MAD), w (winsorized)...",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="raw uint16 frames: biaswatch combine (calibration included) vs the seed recipe",
    )
    parser.add_argument(
        "--child", choices=["ccdproc", "biaswatch", "recipe"], help=argparse.SUPPRESS
    )
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.child:  # the parent passes bytes; importing the config (pydantic) would count
        args.mem_limit_bytes = int(args.mem_limit)
        return args
    from biaswatch.settings import parse_size

    args.mem_limit_bytes = parse_size(args.mem_limit)
    if args.iraf_maxmemory == "mem_limit":
        args.iraf_bytes = args.mem_limit_bytes
    elif args.iraf_maxmemory == "default":
        args.iraf_bytes = None
    else:
        args.iraf_bytes = parse_size(args.iraf_maxmemory)
    return args


def main() -> None:
    """Parse arguments; run the comparison or, with --child, one engine."""
    args = parse_args()
    if args.child:
        child(args.child, args.paths, args.mem_limit_bytes, args.result, args.report)
        return
    if args.raw:
        main_raw(args)
        return
    counts = sorted(set(args.frames))
    print(f"writing or checking {max(counts)} frames in {args.out} ...", file=sys.stderr)
    all_paths = make_frames(args.out, max(counts), args.size)
    results = {}
    failed = False
    for frames in counts:
        print(f"{frames} frames:", file=sys.stderr, flush=True)
        rows = run_count(all_paths[:frames], args)
        print_count_table(rows, frames, args)
        sys.stdout.flush()
        failed |= any(row.error for row in rows.values())
        for row in rows.values():
            row.image = None  # the tables are printed: free the images before the next count
        results[frames] = rows
    if len(counts) > 1:
        print_summary(results, args)
    if failed:
        raise SystemExit("some engines failed; see above")


if __name__ == "__main__":
    main()
