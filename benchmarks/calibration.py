"""Time calibrating one raw frame (overscan + trim) and the whole ingest of it.

Usage:
    .venv/bin/python benchmarks/calibration.py [--size 4096] [--repeat 7]

Writes one realistic raw bias of size x (size + 32) uint16 (BZERO 32768, a
32-column overscan strip, BIASSEC/TRIMSEC in the header), then times, in this
process, the median of --repeat runs of:
- calibrate_image: the median overscan subtracted per row and the trim, in numpy with
  ccdproc's values (subtract_overscan and trim_image), float32;
- ingest: read and hash the file, classify, date, calibrate and write the
  calibrated copy, which is what the service does as each frame lands.
The issue's target is calibration well under 0.3 s for 4096 x 4128. The first row,
generating the frame (biaswatch simulate's make_raw_bias), shows that the simulator
keeps up with any interval a newcomer might pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog

from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.frames.calibrate import calibrate_image
from biaswatch.frames.read import ingest
from biaswatch.frames.readiness import read_frame
from biaswatch.sections import Section
from biaswatch.testing.camera import Geometry, camera_header, frame_bytes, make_raw_bias


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Median, min and max seconds of ``repeat`` runs (after one untimed run)."""
    action()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    """Write the frame, time both steps, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    # ingest logs each frame at info; only the table belongs on standard output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = Path(tempfile.mkdtemp(prefix="biaswatch-calibration-"))
    camera = CameraConfig(name="cam", watch=(work,))
    size = args.size
    geometry = Geometry(
        size, size + 32, Section(size + 1, size + 32, 1, size), Section(1, size, 1, size)
    )
    header = camera_header(camera, geometry, dt.datetime.now(dt.UTC), 1)
    raw = work / "raw.fits"
    raw.write_bytes(frame_bytes(make_raw_bias(geometry, np.random.default_rng(1)), header))
    frame = read_frame(raw, camera)
    rng = np.random.default_rng(2)
    rows = {
        "simulate: make_raw_bias (one raw frame)": timed(
            lambda: make_raw_bias(geometry, rng), args.repeat
        ),
        "calibrate_image (overscan + trim)": timed(
            lambda: calibrate_image(frame.image, frame.header, camera.calibrate), args.repeat
        ),
        "ingest (read, hash, classify, calibrate, write)": timed(
            lambda: ingest(raw, camera, SiteConfig(), work / "out"), args.repeat
        ),
    }
    print(f"one raw frame of {size + 32} x {size} uint16, median of {args.repeat} runs (min-max)")
    print("| step | time |")
    print("| --- | --- |")
    for name, (median, low, high) in rows.items():
        print(f"| {name} | {median:.3f} s ({low:.3f}-{high:.3f}) |")


if __name__ == "__main__":
    main()
