"""From the last frame closed to master.published, against the combine's own time.

Usage:
    .venv/bin/python benchmarks/latency.py [--frames 10] [--size 4096] [--runs 3]
        [--interval 1.0]

Starts the real service (``biaswatch run``, the console script, as systemd does;
``--via module`` for ``python -m biaswatch``) on a temporary config, writes the
frames of a set as a camera does (raw uint16 with overscan, under the final
name, in pieces, one every --interval seconds: a 4096 x 4096 CCD takes seconds to read
out, 0 writes back to back), and notes when the last one is closed. The service's
``master.published`` event carries ``combine_seconds``, the combine child's own
time (reading, combining, writing the master), and the two other parts of the
difference: ``startup_seconds`` (starting the child) and ``publish_seconds``. The
rest is the last frame's ingest. The issue's target: the time
from the last frame closed to ``master.published`` is at most that plus 1 s.
Each run after the first adds a set to the same service, so the first shows a
fresh service (the fork server may still be loading the kernel) and the others
the steady state.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
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


def main() -> None:
    """Run the measurement and print one line per set."""
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
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="biaswatch-latency-"))
    config = base / "config.toml"
    config.write_text(CONFIG.replace("{frames}", str(args.frames)))
    (base / "incoming").mkdir()
    command, env = _command(args.via), dict(os.environ)
    if args.checkout is not None:
        command = _script_of(args.checkout.resolve(), base / "bin")
        env["PYTHONPATH"] = str(args.checkout.resolve() / "src")
    service = subprocess.Popen(
        [*command, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        time.sleep(3)
        print(
            f"{args.frames} raw frames of {args.size + 32} x {args.size} per set, "
            f"one every {args.interval:g} s"
        )
        print(
            "| set | last frame closed -> master.published | combine's own time | difference "
            "| of which: child start-up | publication |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for run in range(1, args.runs + 1):
            closed = write_set(config, args.frames, args.size, run, args.interval)
            event = published(base / "log" / "biaswatch.jsonl", run)
            stamp = dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
            latency = closed_to_event(closed, stamp)
            own = float(str(event["combine_seconds"]))
            startup = float(str(event["startup_seconds"]))
            publication = float(str(event["publish_seconds"]))
            print(
                f"| {run} | {latency:.2f} s | {own:.2f} s | {latency - own:+.2f} s "
                f"| {startup:.3f} s | {publication:.3f} s |"
            )
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)


def closed_to_event(closed_monotonic: float, event_time: dt.datetime) -> float:
    """Seconds from a monotonic instant to a logged UTC timestamp."""
    offset = dt.datetime.now(dt.UTC).timestamp() - time.monotonic()
    return event_time.timestamp() - (closed_monotonic + offset)


if __name__ == "__main__":
    main()
