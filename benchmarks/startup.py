"""How long a command takes to answer, as a whole process, beside another checkout's.

Usage:
    .venv/bin/python benchmarks/startup.py [--runs 10] [--before /path/to/old/checkout]

Each command runs ``--runs`` times as a fresh process, the way a user or a script runs it,
and the table gives the median and the range. ``python -c pass`` is the floor: the
interpreter's own start-up, which no change of ours can remove. With ``--before``, the same
commands also run on another checkout's code (``python -m biaswatch`` with PYTHONPATH set to
its ``src``) in the same run, interleaved with this checkout's, so that both see the same
machine load; the ratio column is before / now.

Issue 12 asked for ``biaswatch --help`` well under half a second; before it, every command
imported every other (matplotlib, ccdproc, scipy, Dask) and ``--help`` took 1.4 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.toml"
# What is timed: the cheapest answers a user waits for, and one that reads a config.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("check-config", "--help"),
    ("status", "--help"),
    ("check-config", "--config", str(CONFIG)),
    # What monitoring runs every minute (a Nagios plugin since issue 16), and what a
    # reduction script runs per frame: both ask the watch paths in forked children now.
    ("status", "--config", str(CONFIG)),
    ("masters", "--config", str(CONFIG)),
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds one run of ``argv`` takes, start to exit; output discarded."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def script() -> str:
    """The installed console script next to this interpreter, as systemd and users run it."""
    return str(Path(sys.executable).with_name("biaswatch"))


def variants(before: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name -> (argv prefix, environment) of each way of running biaswatch compared."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ways: dict[str, tuple[list[str], dict[str, str]]] = {"now": ([script()], env)}
    if before is not None:
        old_env = {**env, "PYTHONPATH": str(before / "src")}
        ways["before"] = ([sys.executable, "-m", "biaswatch"], old_env)
    return ways


def measure(runs: int, before: Path | None) -> None:
    """Print one markdown row per command: median and range, now and before."""
    ways = variants(before)
    floor = [timed([sys.executable, "-c", "pass"], ways["now"][1]) for _ in range(runs)]
    print(f"python -c pass: median {statistics.median(floor) * 1000:.0f} ms")
    header = "| command | now: median (range) |"
    if before is not None:
        header += " before: median (range) | before / now |"
    print(header)
    print("| --- " * (header.count("|") - 1) + "|")
    for command in COMMANDS:
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(runs):  # interleaved: both see the same load
            for name, (prefix, env) in ways.items():
                times[name].append(timed([*prefix, *command], env))
        print(_row(command, times))


def _row(command: tuple[str, ...], times: dict[str, list[float]]) -> str:
    """One table row: ``biaswatch ARGS``, then each way's median and range in ms."""
    shown = " ".join(Path(a).name if a.endswith(".toml") else a for a in command)
    cells = [f"`biaswatch {shown}`"]
    for values in times.values():
        cells.append(
            f"{statistics.median(values) * 1000:.0f} ms "
            f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
        )
    if "before" in times:
        cells.append(f"{statistics.median(times['before']) / statistics.median(times['now']):.1f}x")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    """Parse the options and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    measure(args.runs, args.before)


if __name__ == "__main__":
    main()
