"""What a science frame says about the master it needs: its configuration and its time.

``masters --like FRAME`` and the Python API's ``like=`` (biaswatch.calibrations) label a
frame exactly as the service labels a bias of that camera (frames/read.py
configuration_label), so a frame finds the masters of its own configuration without
its owner knowing how biaswatch names one. A header alone (a frame still in memory)
is labelled from its NAXISn: no pixel is needed, only the image's shape.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.config import CameraConfig
from biaswatch.errors import FrameRejected
from biaswatch.frames.read import configuration_label
from biaswatch.frames.readiness import RawFrame, observation_time, read_frame


@dataclass(frozen=True)
class FrameFacts:
    """A science frame's configuration label and, when its header dates it, its time."""

    configuration: str
    when: dt.datetime | None  # aware UTC; None when no date keyword was usable
    why_undated: str | None = None


def frame_facts(like: str | os.PathLike[str] | fits.Header, camera: CameraConfig) -> FrameFacts:
    """The facts of a frame given as a path or as its (single image's) header.

    Raises:
        FrameRejected: the frame cannot be labelled (an amplifier section that does not
            fit, a header without NAXIS1/NAXIS2).
        OSError: the file cannot be read.
    """
    frame = _header_frame(like) if isinstance(like, fits.Header) else read_frame(Path(like), camera)
    label = configuration_label(frame, camera)
    when, note = observation_time(frame, camera.date_range, keywords=camera.date_keywords)
    # observation_time falls back to the file's mtime, right for a bias arriving now but
    # not for a science frame reduced a month later: that time is not used.
    return FrameFacts(label, None, note) if note is not None else FrameFacts(label, when)


def _header_frame(header: fits.Header) -> RawFrame:
    """A frame made of a header alone: a zero-stride image of its NAXIS2 x NAXIS1 shape."""
    try:
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    except (KeyError, ValueError, TypeError):
        raise FrameRejected("the header has no NAXIS1 and NAXIS2: give the frame's path") from None
    # broadcast_to makes a read-only view of one byte: the shape without the memory.
    image = np.broadcast_to(np.zeros((), np.uint8), shape)
    return RawFrame(Path("<header>"), image, header, "", 0, 0)
