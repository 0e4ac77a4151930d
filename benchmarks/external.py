"""Run a whole process tree under measurement, and run IRAF imcombine and Siril on FITS files.

The benchmark compares engines as separate processes. ``run_tree`` times one command
and takes the peak RSS of every process it starts, however deep: a wrapper script, a
command language that starts the real worker as a subprocess (IRAF), or an engine that
forks helpers. Two Linux facts shape how:

* ``wait4`` on the direct child alone misses a worker that its own parent does not wait
  for. So the measuring process makes itself a child subreaper: orphans are re-parented
  to it, and it reaps, and so measures, each of them.
* A child's ``ru_maxrss`` starts from its *parent's* high-water mark: fork copies the
  parent's mm, and exec records the old mm's peak (vfork/posix_spawn too). Spawned from
  the benchmark, which holds several 64 MB results, even ``/bin/true`` reports the
  benchmark's peak. So the engine is not spawned from the benchmark but from a small
  launcher (this file run as ``python -S external.py --measure``: standard library
  only, about 10 MiB), which measures it and reports back in JSON. Its peak at the
  spawn is returned as ``floor_kib``: no reading can be below it.

``run_imcombine`` and ``run_siril`` build a fresh working directory (their own HOME, so
no user configuration leaks in), write the tool's batch script, run it through
``run_tree`` and read the combined image back as a float32 array.

Only the standard library is imported at module level, for the launcher's sake.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.float32]

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


@dataclass(frozen=True)
class ProcessPeak:
    """One process of a measured tree: its pid, name (comm) and peak RSS in KiB."""

    pid: int
    name: str
    max_rss_kib: int


@dataclass(frozen=True)
class TreeRun:
    """A measured command: wall time until its last process ended, and its processes.

    ``reaped`` are the processes the launcher waited for, with ``ru_maxrss`` from
    ``wait4``: exact, and each includes the peaks of the descendants that *it* waited
    for (IRAF's ``ecl.e`` waits for its ``x_images.e``). ``seen`` are the descendants
    found in /proc while the command ran, with the largest VmHWM sampled: a lower bound,
    but it names the process that really held the memory. ``floor_kib`` is the
    launcher's own peak when it spawned the command, the least any reading can be.
    """

    wall: float
    exit_code: int
    reaped: tuple[ProcessPeak, ...]
    seen: tuple[ProcessPeak, ...]
    floor_kib: int

    @property
    def peak_rss_mib(self) -> float:
        """The largest peak RSS of any one process of the tree, in MiB.

        This is what ``wait4`` and ``RUSAGE_CHILDREN`` report (a maximum, not a sum of
        processes that ran at the same time).
        """
        return max(p.max_rss_kib for p in (*self.reaped, *self.seen)) / 1024

    def describe(self) -> str:
        """The processes and their peaks, e.g. ``ecl.e 429 MiB (... x_images.e >=404 MiB)``."""
        reaped = {p.pid for p in self.reaped}
        text = ", ".join(f"{p.name} {p.max_rss_kib / 1024:.0f} MiB" for p in self.reaped)
        others = [p for p in self.seen if p.pid not in reaped and p.max_rss_kib >= 10 * 1024]
        if others:
            listed = ", ".join(f"{p.name} >={p.max_rss_kib / 1024:.0f} MiB" for p in others)
            text += f" (reaped by its parent, sampled: {listed})"
        return text + f"; launcher floor {self.floor_kib / 1024:.0f} MiB"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeRun:
        """The launcher's report back into a TreeRun."""
        return cls(
            wall=data["wall"],
            exit_code=data["exit_code"],
            reaped=tuple(ProcessPeak(**p) for p in data["reaped"]),
            seen=tuple(ProcessPeak(**p) for p in data["seen"]),
            floor_kib=data["floor_kib"],
        )


@dataclass(frozen=True)
class ExternalResult:
    """What an external engine produced: the measured run, its image and log facts."""

    run: TreeRun
    image: Image
    command: str  # the tool's own command line, as run
    notes: tuple[str, ...]  # facts read from its log worth printing with the table


def run_tree(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Path | None = None,
) -> TreeRun:
    """Run ``argv`` through the launcher, stdout and stderr to ``log``; time and measure it.

    The launcher runs with ``-S -E`` (no site-packages, no PYTHON* variables): it
    imports nothing but this file and the standard library.
    """
    report = log.with_name(log.name + ".measure.json")
    report.unlink(missing_ok=True)
    spec = {
        "argv": list(argv),
        "log": str(log),
        "cwd": str(cwd) if cwd else None,
        "env": dict(env) if env is not None else None,
        "stdin": str(stdin) if stdin else None,
    }
    launcher = [sys.executable, "-S", "-E", __file__, "--measure", json.dumps(spec), str(report)]
    subprocess.run(launcher, check=True)
    return TreeRun.from_json(json.loads(report.read_text()))


# --- the launcher's side ---------------------------------------------------------------


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux >= 3.4)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _comm(pid: int) -> str:
    """The name of a (zombie) process, or its pid if it is already gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)


def _status_kib(pid: int | str, field_name: str) -> int | None:
    """A memory field (VmHWM, VmRSS) of /proc/PID/status in KiB; None if there is none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None  # kernel threads and zombies have none


def _descendants(root: int) -> dict[int, tuple[str, int]]:
    """Every live descendant of ``root``: pid -> (name, VmHWM in KiB)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])  # comm may hold spaces and parens
        children.setdefault(ppid, []).append(int(entry.name))
    found = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        hwm = _status_kib(pid, "VmHWM")
        if hwm is not None:
            found[pid] = (_comm(pid), hwm)
    return found


class _Sampler(threading.Thread):
    """Samples the names and VmHWM of this process's descendants until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        """Sample every ``interval`` seconds, keeping each pid's largest VmHWM."""
        me = os.getpid()
        while not self.done.wait(self.interval):
            for pid, (name, hwm) in _descendants(me).items():
                if hwm >= self.peaks.get(pid, (name, 0))[1]:
                    self.peaks[pid] = (name, hwm)


def measure(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Path | None = None,
) -> TreeRun:
    """Run ``argv`` from this process, time it and reap every descendant (the launcher).

    This process must have no other children: it waits for any child until none is
    left. Each process is peeked at (``WNOWAIT``) before it is reaped, to read its name.
    A thread samples /proc meanwhile (every 0.2 s, a few ms of CPU each time) to name the
    processes that their own parent reaps.
    """
    become_subreaper()
    sampler = _Sampler(0.2)
    floor = _status_kib("self", "VmHWM") or 0
    start = time.perf_counter()
    with log.open("wb") as out, stdin.open("rb") if stdin else open(os.devnull, "rb") as inp:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=inp, stdout=out, stderr=out)
    sampler.start()
    exit_code = -1
    reaped = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            break
        assert info is not None  # a blocking waitid returns a child or raises
        name = _comm(info.si_pid)
        pid, status, usage = os.wait4(info.si_pid, 0)
        reaped.append(ProcessPeak(pid, name, usage.ru_maxrss))  # KiB on Linux
        if pid == child.pid:
            exit_code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    child.returncode = exit_code  # reaped above: keep Popen from waiting for it again
    seen = tuple(ProcessPeak(pid, name, hwm) for pid, (name, hwm) in sampler.peaks.items())
    return TreeRun(wall, exit_code, tuple(reaped), seen, floor)


def _launcher_main(spec_json: str, report: str) -> None:
    """``external.py --measure SPEC REPORT``: measure SPEC's command, write REPORT (JSON)."""
    spec = json.loads(spec_json)
    run = measure(
        spec["argv"],
        log=Path(spec["log"]),
        cwd=Path(spec["cwd"]) if spec["cwd"] else None,
        env=spec["env"],
        stdin=Path(spec["stdin"]) if spec["stdin"] else None,
    )
    Path(report).write_text(json.dumps(asdict(run)))


# --- helpers of both tools ---------------------------------------------------------------


def _fresh_dir(path: Path) -> Path:
    """Empty ``path`` (a working directory this module owns) and return it."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def read_image(path: Path) -> Image:
    """The primary image of a FITS file as native-endian float32."""
    import numpy as np  # here, not at the top: the launcher runs without them
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32)


def _check(run: TreeRun, log: Path, result: Path, tool: str) -> None:
    """Raise with the log's tail if the tool failed or wrote no result."""
    if run.exit_code != 0 or not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{tool} failed (exit {run.exit_code}, see {log}):\n{tail}")


# --- IRAF ---------------------------------------------------------------------------

IRAF_CL = "irafcl"  # Debian's wrapper: sets $iraf, $host... then execs ecl.e (same pid)


def imcombine_command(inputs: str, output: str) -> str:
    """The imcombine call: 5/5 sigma clipping around the median, plain average.

    Every parameter that could change the statistics is spelt out rather than left to
    the uparm defaults: no scaling, zero offsets or weights (scale/zero/weight="none"),
    no thresholds, no growing, median centre (mclip=yes), nkeep=1 (the default), real
    (float32) output. ``blank=0`` is what IRAF writes where no pixel survives (ccdproc
    writes NaN); with nkeep=1 that cannot happen.
    """
    params = [
        f'"{inputs}"',
        f'"{output}"',
        'combine="average"',
        'reject="sigclip"',
        "lsigma=5.",
        "hsigma=5.",
        "mclip=yes",
        "nkeep=1",
        'scale="none"',
        'zero="none"',
        'weight="none"',
        'offsets="none"',
        'masktype="none"',
        "lthreshold=INDEF",
        "hthreshold=INDEF",
        "grow=0.",
        "blank=0.",
        'outtype="real"',
        "project=no",
        'logfile="STDOUT"',
    ]
    return f"imcombine ({', '.join(params)})"


def run_imcombine(paths: Sequence[Path], workdir: Path, maxmemory: int | None) -> ExternalResult:
    """Combine ``paths`` with IRAF 2.17 ``images.immatch.imcombine`` in a fresh ``workdir``.

    ``maxmemory`` sets the ``imcombine_maxmemory`` environment variable (bytes), IRAF's
    only memory knob for this task; None leaves IRAF's default (250000000, which
    imcombine raises as it sees fit).
    """
    workdir = _fresh_dir(workdir)
    (workdir / "inputs.lst").write_text("".join(f"{p.resolve()}\n" for p in paths))
    command = imcombine_command("@inputs.lst", "out.fits")
    lines = [f'set imcombine_maxmemory = "{maxmemory}"'] if maxmemory else []
    # Load the packages, combine, and leave. `logout` ends the CL (and with it the
    # x_images.e subprocess that does the work); stdin is a plain file, so no terminal.
    lines += ["images", "immatch", command, "logout"]
    script = workdir / "combine.cl"
    script.write_text("\n".join(lines) + "\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),  # irafcl creates $HOME/.iraf/{uparm,imdir,cache}
        "USER": "bench",  # login.cl dies without it ("Environment variable 'USER'")
        "TERM": "dumb",  # login.cl then picks vt220 and needs no real terminal
        "TMPDIR": str(workdir),
    }
    log = workdir / "iraf.log"
    run = run_tree([IRAF_CL], log=log, cwd=workdir, env=env, stdin=script)
    _check(run, log, workdir / "out.fits", "IRAF imcombine")
    notes = (f"IRAF imcombine_maxmemory: {maxmemory or 'default (250000000)'}",)
    return ExternalResult(run, read_image(workdir / "out.fits"), command, notes)


# --- Siril --------------------------------------------------------------------------

SIRIL_CLI = "siril-cli"
SIRIL_PREFIX = "bias_"  # sequence files are <prefix>NNNNN<ext>, numbered from 1


def siril_script(rejection: str, sigma_low: float, sigma_high: float, threads: int) -> str:
    """The Siril 1.0 script: stack the linked sequence, average with rejection.

    ``set32bits`` keeps the result float32 (Siril's default output is 16-bit integer);
    ``setext fits`` makes Siril look for ``.fits`` rather than its default ``.fit``;
    ``-nonorm`` disables normalisation (the default for ``rej`` is additive with
    scaling); ``stack`` never registers, and no registration data exists to apply.
    """
    return (
        "requires 1.0.0\n"
        f"setcpu {threads}\n"
        "set32bits\n"
        "setext fits\n"
        f"stack {SIRIL_PREFIX} rej {rejection} {sigma_low:g} {sigma_high:g} -nonorm -out=result\n"
        "close\n"
    )


def _siril_seconds(text: str) -> float | None:
    """Seconds from a Siril duration such as ``142.37 ms``, ``2.31 s`` or ``1 min 02 s``."""
    if match := re.fullmatch(r"\s*([\d.]+) ms\.?\s*", text):
        return float(match.group(1)) / 1000
    if match := re.fullmatch(r"\s*(?:(\d+) min )?([\d.]+) s\.?\s*", text):
        return int(match.group(1) or 0) * 60 + float(match.group(2))
    return None


def siril_log_facts(log: str) -> tuple[str, ...]:
    """Stack-only time, rejected fractions and memory budget from a Siril log."""
    notes = []
    stacked = log.find("Stacked sequence successfully")
    if stacked >= 0 and (match := re.search(r"Execution time: ([^\n]+)", log[stacked:])):
        seconds = _siril_seconds(match.group(1))
        if seconds is not None:
            notes.append(f"Siril stack command alone (its log): {seconds:.2f} s")
    if match := re.search(r"Pixel rejection in channel #0: ([\d.]+)% - ([\d.]+)%", log):
        notes.append(f"Siril rejected {match.group(1)}% low, {match.group(2)}% high")
    if match := re.search(r"Using (\d+) MB memory maximum for stacking", log):
        notes.append(f"Siril memory budget: {match.group(1)} MB (its default ratio of free RAM)")
    return tuple(notes)


def run_siril(
    paths: Sequence[Path],
    workdir: Path,
    *,
    rejection: str = "s",
    sigma: tuple[float, float] = (5.0, 5.0),
    threads: int = 2,
) -> ExternalResult:
    """Stack ``paths`` with Siril 1.0 (``siril-cli``) in a fresh ``workdir``.

    The inputs are symlinked as a Siril sequence (``bias_00001.fits``...): no copy and no
    ``convert``, so the timed script reads the same files as the other engines; ``stack``
    writes the ``.seq`` file itself. The timed run is the whole script, including
    Siril's start-up; its log's own time for the stack command is returned as a note.
    """
    workdir = _fresh_dir(workdir)
    for index, path in enumerate(paths, start=1):
        (workdir / f"{SIRIL_PREFIX}{index:05d}.fits").symlink_to(path.resolve())
    script = workdir / "stack.ssf"
    script.write_text(siril_script(rejection, *sigma, threads))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),  # Siril writes ~/.config/siril and ~/.cache
        "XDG_CONFIG_HOME": str(workdir / ".config"),
        "XDG_CACHE_HOME": str(workdir / ".cache"),
    }
    log = workdir / "siril.log"
    argv = [SIRIL_CLI, "-d", str(workdir), "-s", str(script)]
    run = run_tree(argv, log=log, cwd=workdir, env=env)
    result = workdir / "result.fits"
    _check(run, log, result, "Siril")
    notes = siril_log_facts(log.read_text(errors="replace"))
    command = f"stack {SIRIL_PREFIX} rej {rejection} {sigma[0]:g} {sigma[1]:g} -nonorm -out=result"
    return ExternalResult(run, read_image(result), command, notes)


if __name__ == "__main__" and sys.argv[1:2] == ["--measure"]:
    _launcher_main(sys.argv[2], sys.argv[3])
