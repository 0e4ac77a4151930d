"""A FIFO named like a frame: read_frame must not block on it (a reader thread, waited on)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from biaswatch.config import CameraConfig
from biaswatch.errors import FrameRejected
from biaswatch.frames.readiness import read_frame
from biaswatch.testing.helpers import cryo_camera


@pytest.fixture(name="camera")
def _camera_in(tmp_path: Path) -> CameraConfig:
    (tmp_path / "in").mkdir()
    return cryo_camera(tmp_path / "in")


def test_a_fifo_named_like_a_frame_is_refused_without_blocking(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """Reading a FIFO named x.fits returns a rejection at once instead of waiting for a writer."""
    fifo = tmp_path / "in" / "x.fits"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def attempt() -> None:
        try:
            read_frame(fifo, camera)
        except FrameRejected as exc:
            outcome.append(exc.reason)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # blocked in open(): release it with a writer, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("read_frame blocked on a FIFO")
    assert outcome and "FIFO" in outcome[0]
