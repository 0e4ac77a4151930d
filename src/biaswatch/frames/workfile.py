"""Writing the calibrated work file: astropy's header bytes, the pixels written straight.

``HDUList.writeto`` spent 0.23 s of a 4096 x 4128 frame's 0.43 s ingest: it swaps the
whole float32 image to big-endian in place (and back), then ``ndarray.tofile`` writes
67 MB in one call. Here astropy still makes each header (so the cards, their order and
the structure keywords are exactly those ``writeto`` writes; tests/unit/test_workfile.py
compares the bytes), and the pixels go out in bands of a few MB, each swapped into a
small buffer and handed to ``os.write``, which releases the GIL: the other calibration
worker computes while this one writes.

No fsync: a work file is derived data, re-made from the raw frame (never touched) when
it is lost. It appears under its final name only by ``os.replace`` after its last byte
is written, and the combine's reader checks every band's length (combine/sources.py:
"file ends after ..."), so one cut short by a crash fails its combine loudly, never
combines zeros unseen.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.fitsbytes import BLOCK

# Rows written per os.write: 4 MB of float32 (256 rows of 4096), small enough to stay
# in the L2/L3 cache while it is swapped, large enough that a call's overhead (~10 us)
# is nothing against its copy into the page cache (~2 ms at 2 GB/s).
BAND_BYTES = 4 << 20


def write_images(path: Path, hdus: Sequence[fits.PrimaryHDU | fits.ImageHDU]) -> Path:
    """Write ``hdus`` (float32 images, or a dataless primary) to ``path`` via a temporary name."""
    hdul = fits.HDUList(list(hdus))
    hdul.update_extend()  # EXTEND = T on a primary with extensions, as writeto sets it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{socket.gethostname()}-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            for hdu in hdul:
                _write_hdu(out.fileno(), hdu)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not fill up with halves
        raise
    os.replace(tmp, path)
    return path


def _write_hdu(fd: int, hdu: fits.PrimaryHDU | fits.ImageHDU) -> None:
    hdu.verify("exception")  # as writeto's output_verify: a card it could not write raises
    _write_all(fd, hdu.header.tostring().encode("ascii"))
    data = hdu.data
    if data is None:
        return
    image = np.ascontiguousarray(data, dtype=np.float32)
    _write_pixels(fd, image)
    _write_all(fd, bytes(-image.nbytes % BLOCK))


def _write_pixels(fd: int, image: np.ndarray) -> None:
    """The image as big-endian float32 (FITS 4.0 sect. 5.3), one band at a time."""
    flat = image.reshape(-1)
    step = max(1, BAND_BYTES // 4)
    buffer = np.empty(min(step, flat.size), dtype=">f4")
    for start in range(0, flat.size, step):
        part = flat[start : start + step]
        out = buffer[: part.size]
        out[...] = part  # the byte swap, into a buffer reused for every band
        _write_all(fd, out.data.cast("B"))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
