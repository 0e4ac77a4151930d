"""The first use after ``pip install``, beside another commit's, in one run (issue 14, target 2).

Usage:
    .venv/bin/python benchmarks/first_use.py [--before 3e7d728] [--now HEAD]
        [--python /usr/bin/python3] [--rounds 3] [--read-only] [--dir DIR] [--keep]

For each of two commits (``--now``, default HEAD, and ``--before``, default 3e7d728, the
last with the numba kernel) it takes the committed tree (``git archive``), makes a NEW
venv with ``--python`` and installs the tree into it as a user would (``pip install
DIR``: not editable, pip's cache allowed). Then, as whole processes, with no PYTHONPATH
and no NUMBA_CACHE_DIR:

(a) the first ``biaswatch combine`` of 3 raw 64 x 64 frames (biaswatch.testing writes
    them: 56 image and 8 overscan columns) after the install;
(b) the second, warm;
(c) ``biaswatch run`` on a fresh temporary config and state directory, from start until
    ``combine.server_ready`` is in its JSON log (the line is printed), then SIGTERM.

``--rounds`` N repeats (a)-(c) N times, alternating the two installs so both see the same
machine load; the table gives the median (min-max). Round 1's (a) is the real first
use; before later rounds numba's on-disk cache in the installed package (``*.nbi``,
``*.nbc``: where ``cache=True`` keeps it) is deleted, which makes (a) a first use
again; (c) always starts on a new state directory, where the service kept its numba
cache. With ``--read-only`` the installs' site-packages are then made read-only
(chmod -R a-w), as under systemd, and (a) and (c) run once more each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from biaswatch.testing.fits import make_bias_fits
from biaswatch.testing.helpers import write_config

ROOT = Path(__file__).resolve().parent.parent
READY_EVENT = "combine.server_ready"
READY_TIMEOUT = 300.0  # the numba kernel compiled in 10-13 s on an idle machine
STEPS = ("a: first combine", "b: second combine", "c: run until server_ready")


@dataclass
class Install:
    """One commit installed in its own venv, and what was measured on it."""

    name: str
    commit: str
    venv: Path
    seconds: dict[str, list[float]] = field(default_factory=dict)
    ready_lines: list[str] = field(default_factory=list)

    def script(self) -> str:
        """The installed console script."""
        return str(self.venv / "bin" / "biaswatch")

    def site_packages(self) -> Path:
        """The venv's site-packages directory."""
        (path,) = (self.venv / "lib").glob("python3.*/site-packages")
        return path

    def add(self, step: str, seconds: float) -> None:
        """Record one measurement of ``step``."""
        self.seconds.setdefault(step, []).append(seconds)


def clean_env() -> dict[str, str]:
    """This environment without anything that would pick another biaswatch or kernel cache."""
    drop = {"PYTHONPATH", "NUMBA_CACHE_DIR", "VIRTUAL_ENV", "BIASWATCH_THREADS"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def install(name: str, commit: str, python: str, work: Path) -> Install:
    """git archive ``commit`` into work/src-NAME and pip install it into a new venv."""
    source, venv = work / f"src-{name}", work / f"venv-{name}"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    start = time.perf_counter()
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        env=clean_env(),
    )
    print(f"{name} ({commit}): installed in {time.perf_counter() - start:.0f} s", flush=True)
    return Install(name, commit, venv)


def write_raw_frames(directory: Path) -> list[Path]:
    """Three raw 64 x 64 biases (56 image + 8 overscan columns)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        make_bias_fits(directory / f"bias{i}.fits", shape=(64, 64), overscan_cols=8, seed=i)
        for i in range(3)
    ]


def time_combine(target: Install, frames: list[Path], output: Path) -> float:
    """Seconds one ``biaswatch combine`` takes as a whole process; it must succeed."""
    output.unlink(missing_ok=True)
    argv = [target.script(), "combine", "-o", str(output), *map(str, frames)]
    start = time.perf_counter()
    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{target.name}: combine failed: {done.stderr[-2000:]}")
    return seconds


def time_server_ready(target: Install, work: Path) -> tuple[float, str]:
    """Seconds from starting ``biaswatch run`` on a fresh config to combine.server_ready."""
    work.mkdir(parents=True)
    config = write_config(work)
    log = work / "log" / "biaswatch.jsonl"
    argv = [target.script(), "run", "--config", str(config)]
    with open(work / "output.txt", "wb") as output:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=clean_env(), stdout=output, stderr=subprocess.STDOUT)
        try:
            line = wait_for_event(log, proc, start)
            seconds = time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return seconds, line


def wait_for_event(log: Path, proc: subprocess.Popen[bytes], start: float) -> str:
    """The JSON log's combine.server_ready line, polled every 10 ms."""
    while time.perf_counter() - start < READY_TIMEOUT:
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                if json.loads(line).get("event") == READY_EVENT:
                    return line
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}) before {READY_EVENT}")
        time.sleep(0.01)
    raise RuntimeError(f"no {READY_EVENT} within {READY_TIMEOUT} s")


def forget_numba_cache(target: Install) -> None:
    """Delete numba's cache files in the installed package, so the next combine is a first."""
    for pattern in ("*.nbi", "*.nbc"):
        for path in (target.site_packages() / "biaswatch").rglob(pattern):
            path.unlink()


def measure_round(targets: list[Install], frames: list[Path], work: Path, round_: int) -> None:
    """(a), (b) and (c) once on each install, alternating."""
    for target in targets:
        if round_ > 0:
            forget_numba_cache(target)
    for step in STEPS:
        for target in targets:
            out = work / f"master-{target.name}.fits"
            if step.startswith("c"):
                seconds, line = time_server_ready(target, work / f"run-{target.name}-{round_}")
                target.ready_lines.append(line)
            else:
                seconds = time_combine(target, frames, out)
            target.add(step, seconds)
            print(f"round {round_ + 1} {target.name} {step}: {seconds:.2f} s", flush=True)


def measure_read_only(targets: list[Install], frames: list[Path], work: Path) -> None:
    """(a) and (c) once more on each install, its site-packages read-only."""
    for target in targets:
        forget_numba_cache(target)
        subprocess.run(["chmod", "-R", "a-w", str(target.site_packages())], check=True)
    for target in targets:
        for step in ("a (read-only install)", "c (read-only install)"):
            try:
                if step.startswith("c"):
                    ro_work = work / f"run-{target.name}-read-only"
                    seconds, line = time_server_ready(target, ro_work)
                    target.ready_lines.append(f"read-only: {line}")
                else:
                    seconds = time_combine(target, frames, work / f"ro-{target.name}.fits")
                target.add(step, seconds)
            except RuntimeError as exc:
                print(f"{target.name} {step}: FAILED: {str(exc)[-300:]}", flush=True)
                target.add(step, float("nan"))
    for target in targets:
        subprocess.run(["chmod", "-R", "u+w", str(target.site_packages())], check=True)


def summary(times: list[float]) -> str:
    """Median (min-max) in seconds, or 'failed'."""
    good = [t for t in times if t == t]
    if not good:
        return "failed"
    if len(good) == 1:
        return f"{good[0]:.2f} s"
    return f"{statistics.median(good):.2f} s ({min(good):.2f}-{max(good):.2f})"


def table(now: Install, before: Install, python: str, load: float) -> str:
    """The markdown table: each step, both installs, and before / now."""
    version = subprocess.run(
        [str(now.venv / "bin" / "python"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    lines = [
        f"{version} ({python}); 1-min load average at the start {load:.2f}, "
        f"at the end {os.getloadavg()[0]:.2f}",
        "",
        f"| step | now ({now.commit}) | before ({before.commit}) | before / now |",
        "| --- | --- | --- | --- |",
    ]
    for step in now.seconds:
        ours, theirs = now.seconds[step], before.seconds.get(step, [])
        good_ours, good_theirs = [t for t in ours if t == t], [t for t in theirs if t == t]
        ratio = (
            f"{statistics.median(good_theirs) / statistics.median(good_ours):.1f}"
            if good_ours and good_theirs
            else "-"
        )
        lines.append(f"| {step} | {summary(ours)} | {summary(theirs)} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    """Install both commits afresh, measure, print the table and the ready lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--now", default="HEAD", help="the commit measured (default HEAD)")
    parser.add_argument("--before", default="3e7d728", help="the reference commit")
    parser.add_argument("--python", default=sys.executable, help="the venvs' interpreter")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read-only", action="store_true", help="also on read-only installs")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the venvs and files")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    work = args.dir or Path(tempfile.mkdtemp(prefix="bw-first-use-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        now = install("now", args.now, args.python, work)
        before = install("before", args.before, args.python, work)
        frames = write_raw_frames(work / "frames")
        for round_ in range(args.rounds):
            measure_round([now, before], frames, work, round_)
        if args.read_only:
            measure_read_only([now, before], frames, work)
        print()
        print(table(now, before, args.python, load))
        print()
        for target in (now, before):
            for line in target.ready_lines:
                print(f"{target.name}: {line}")
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
