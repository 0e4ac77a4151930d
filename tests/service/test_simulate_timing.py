"""The simulated camera's timing: pieces seen growing from a thread, frames paced by interval."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.sections import Section
from biaswatch.testing.camera import (
    Geometry,
    simulate,
    write_in_pieces,
)
from biaswatch.testing.helpers import cryo_camera

# 256 x 256 image + a 32-column overscan: big enough for tight noise statistics,
# small enough to generate in milliseconds.
SMALL = Geometry(
    rows=256, cols=288, biassec=Section(257, 288, 1, 256), trimsec=Section(1, 256, 1, 256)
)


def _read(path: Path, hdu: int | str = 0) -> tuple[fits.Header, np.ndarray]:
    with fits.open(path) as hdul:
        return hdul[hdu].header.copy(), hdul[hdu].data.copy()


def test_write_in_pieces_grows_the_file_and_ends_identical(tmp_path: Path) -> None:
    """Another thread sees the file grow under its final name until it equals the payload."""
    path = tmp_path / "frame.fits"
    payload = bytes(range(256)) * 400
    sizes: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if path.exists():
                sizes.append(path.stat().st_size)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        write_in_pieces(path, payload, pieces=4, delay=0.1)
    finally:
        done.set()
        watcher.join()
    assert path.read_bytes() == payload
    assert sizes == sorted(sizes)  # it only grows
    assert len(set(sizes)) >= 3 and sizes[0] < len(payload)
    assert [p.name for p in tmp_path.iterdir()] == ["frame.fits"]


def test_simulate_paces_frames_by_interval(tmp_path: Path) -> None:
    """Frames start one interval apart, each complete and readable when on_frame sees it."""
    starts: list[float] = []

    def on_frame(path: Path) -> None:
        starts.append(time.monotonic())
        _read(path)

    begin = time.monotonic()
    simulate(
        cryo_camera(tmp_path),
        frames=3,
        interval=0.2,
        seed=0,
        geometry=SMALL,
        piece_delay=0.0,
        on_frame=on_frame,
    )
    assert starts[-1] - begin >= 0.4
    assert len(starts) == 3
