"""From the last frame closed to master.published, against the combine's own time.

Usage:
    .venv/bin/python benchmarks/latency.py [--frames 10] [--size 4096] [--runs 3]
        [--interval 1.0] [--before 3e7d728]

Issue 14 runs it twice: ``--size 2048 --interval 1`` (a frame a second) and
``--size 4096 --interval 0`` (10 frames of 4096 x 4128 back to back).

Starts the real service (``biaswatch run``, the console script, as systemd does;
``--via module`` for ``python -m biaswatch``) on a temporary config, writes the
frames of a set as a camera does (raw uint16 with overscan, under the final
name, in pieces, one every --interval seconds: a 4096 x 4096 CCD takes seconds to read
out, 0 writes back to back), and notes when the last one is closed. The service's
``master.published`` event carries ``combine_seconds``, the combine child's own
time (reading, combining, writing the master), and the two other parts of the
difference: ``startup_seconds`` (starting the child) and ``publish_seconds``. The
rest is the last frame's ingest. Issue 14's target: the time from the last frame
closed to ``master.published`` is at most the combine's own time plus 0.3 s.
Each run after the first adds a set to the same service, so the first shows a
fresh service (the fork server may still be loading the kernel) and the others
the steady state. ``--before`` (a git revision, extracted with ``git archive`` into a
temporary directory, or a checkout's path) starts a second service on that code, and
each set is written to one service, then the other, so that both see the same load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

from biaswatch.config import load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import (
    Geometry,
    camera_header,
    frame_bytes,
    make_raw_bias,
    write_in_pieces,
)

CONFIG = """
[service]
state_dir = "state"
masters_dir = "masters"
log_file = "log/biaswatch.jsonl"
mem_limit = "350MB"
[site]
timezone = "UTC"
[defaults]
expected_frames = {frames}
[cameras.cam]
watch = ["incoming"]
"""


def published(log: Path, count: int, timeout: float = 600) -> dict[str, object]:
    """Wait for the count-th master.published event; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            events = [json.loads(line) for line in log.read_text().splitlines() if line]
            done = [e for e in events if e["event"] == "master.published"]
            if len(done) >= count:
                return done[count - 1]
        time.sleep(0.02)
    raise SystemExit(f"no master.published after {timeout} s")


def write_set(config: Path, frames: int, size: int, run: int, interval: float) -> float:
    """Write one set of raw frames; returns the monotonic time the last one closed."""
    camera = load_config(config).camera("cam")
    geometry = Geometry(
        size, size + 32, Section(size + 1, size + 32, 1, size), Section(1, size, 1, size)
    )
    rng = np.random.default_rng(run)
    payloads = []
    for i in range(frames):
        when = dt.datetime.now(dt.UTC)
        header = camera_header(camera, geometry, when, i + 1)
        payloads.append(frame_bytes(make_raw_bias(geometry, rng), header))
    closed = 0.0
    for i, payload in enumerate(payloads):
        if i:
            time.sleep(max(0.0, closed + interval - time.monotonic()))
        write_in_pieces(config.parent / "incoming" / f"run{run}_{i:03d}.fits", payload, 4, 0.05)
        closed = time.monotonic()
    return closed


def _command(via: str) -> list[str]:
    """How the service is started: the console script, as the systemd unit's ExecStart does.

    The way matters: multiprocessing prepares each forked combine child by re-running the
    parent's main module, and the console script is a file it re-runs, where
    ``python -m biaswatch`` is a package ``__main__`` it skips (issue 12 measured 1.1 s
    of child start-up through the script, 8 ms through -m).
    """
    if via == "module":
        return [sys.executable, "-m", "biaswatch"]
    return [str(Path(sys.executable).with_name("biaswatch"))]


def _script_of(checkout: Path, bin_dir: Path) -> list[str]:
    """A console script for another checkout's code, written as pip writes one.

    The entry point is read from that checkout's pyproject.toml (it moved in issue 12,
    from biaswatch.cli:main to biaswatch.cli.main:main); run with PYTHONPATH at its src.
    """
    scripts = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["biaswatch"].split(":")
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "biaswatch"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
        f"if __name__ == '__main__':\n    sys.exit({function}())\n"
    )
    script.chmod(0o755)
    return [str(script)]


def checkout_of(before: str, root: Path) -> Path:
    """A directory holding the code of ``before``: a path as it is, a git revision extracted."""
    if Path(before).is_dir():
        return Path(before).resolve()
    target = root / f"checkout-{before}"
    target.mkdir(parents=True)
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", before], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    _add_kernel(target / "src" / "biaswatch" / "combine")
    return target


def _add_kernel(package: Path) -> None:
    """Give a checkout with the C kernel (issue 14 on) this checkout's build of it.

    `pip install` builds it; a `git archive` has only the source. The build is copied
    when the source is the same byte for byte (the kernel refuses another's build);
    otherwise the revision cannot run here, and that is said.
    """
    source = package / "_kernel.c"
    if not source.exists():
        return  # older than the C kernel: its numba kernel needs nothing built
    ours = Path(__file__).resolve().parent.parent / "src" / "biaswatch" / "combine"
    if source.read_bytes() != (ours / "_kernel.c").read_bytes():
        raise SystemExit(f"{package}: its _kernel.c differs from ours; pip install it instead")
    for built in ours.glob("_kernel.*.so"):
        shutil.copy2(built, package / built.name)


def start(base: Path, frames: int, via: str, checkout: Path | None) -> subprocess.Popen[bytes]:
    """The service on a fresh config in ``base``: this checkout's, or ``checkout``'s code."""
    config = base / "config.toml"
    (base / "incoming").mkdir(parents=True)
    config.write_text(CONFIG.replace("{frames}", str(frames)))
    command, env = _command(via), dict(os.environ)
    if checkout is not None:
        command = _script_of(checkout, base / "bin")
        env["PYTHONPATH"] = str(checkout / "src")
    return subprocess.Popen(
        [*command, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # A --before checkout older than the C kernel (issue 14) compiles its numba
        # kernel (~10 s): a cache that outlives the run, as its state directory did.
        env={**env, "NUMBA_CACHE_DIR": str(Path(__file__).parent / "out" / "numba")},
    )


def one_set(base: Path, args: argparse.Namespace, run: int) -> dict[str, float]:
    """Write set ``run`` to the service in ``base``; its latency and the event's parts."""
    closed = write_set(base / "config.toml", args.frames, args.size, run, args.interval)
    event = published(base / "log" / "biaswatch.jsonl", run)
    stamp = dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
    return {
        "latency": closed_to_event(closed, stamp),
        "combine": float(str(event["combine_seconds"])),
        "startup": float(str(event["startup_seconds"])),
        "publish": float(str(event["publish_seconds"])),
    }


def main() -> None:
    """Run the measurement and print one line per set, then each way's median (range)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    parser.add_argument(
        "--via",
        choices=("script", "module"),
        default="script",
        help="start the service as systemd does (the biaswatch script) or as python -m biaswatch",
    )
    parser.add_argument(
        "--checkout", type=Path, help="measure another checkout's code (its script, its src)"
    )
    parser.add_argument("--before", help="also measure this git revision (or checkout), beside")
    parser.add_argument("--keep", action="store_true", help="keep the services' directories")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="biaswatch-latency-"))
    ways: dict[str, Path | None] = {"now": args.checkout.resolve() if args.checkout else None}
    if args.before:
        ways["before"] = checkout_of(args.before, root)
    services = {way: start(root / way, args.frames, args.via, code) for way, code in ways.items()}
    rows: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    try:
        time.sleep(3)
        print(
            f"{args.frames} raw frames of {args.size + 32} x {args.size} per set, "
            f"one every {args.interval:g} s"
        )
        print(
            "| way | set | last frame closed -> master.published | combine's own time "
            "| difference | of which: child start-up | publication |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for run in range(1, args.runs + 1):
            for way in ways:
                got = one_set(root / way, args, run)
                rows[way].append(got)
                print(
                    f"| {way} | {run} | {got['latency']:.2f} s | {got['combine']:.2f} s "
                    f"| {got['latency'] - got['combine']:+.2f} s | {got['startup']:.3f} s "
                    f"| {got['publish']:.3f} s |",
                    flush=True,
                )
    finally:
        for service in services.values():
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)  # GBs of raw frames and work files
    summarize(rows)


def summarize(rows: dict[str, list[dict[str, float]]]) -> None:
    """Each way's difference (latency - combine): median (min-max), against the 0.3 s target."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load}")
    for way, sets in rows.items():
        over = [s["latency"] - s["combine"] for s in sets]
        print(
            f"{way}: last frame closed -> published minus the combine: "
            f"{statistics.median(over):+.2f} s ({min(over):+.2f} to {max(over):+.2f}); "
            f"target +0.30 s: {'met' if max(over) <= 0.3 else 'not met'}"
        )


def closed_to_event(closed_monotonic: float, event_time: dt.datetime) -> float:
    """Seconds from a monotonic instant to a logged UTC timestamp."""
    offset = dt.datetime.now(dt.UTC).timestamp() - time.monotonic()
    return event_time.timestamp() - (closed_monotonic + offset)


if __name__ == "__main__":
    main()
