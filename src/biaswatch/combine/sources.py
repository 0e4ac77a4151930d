"""Reading calibrated images band by band for the combine: raw float32 reads where possible.

A plain float32 image (the service's calibrated work files: the primary, or each
segment's extension) is located from its header bytes and read straight into the
band; anything else goes through astropy's sections. Split from engine.py.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from biaswatch.errors import CombineFailed, FrameRejected
from biaswatch.fitsbytes import BLOCK, FitsStatus, data_bytes, read_header


@dataclass(slots=True)
class Source:
    """One frame's image: raw float32 reads where possible, astropy sections otherwise."""

    path: Path
    shape: tuple[int, int]
    raw: io.FileIO | None  # unbuffered file, for plain BITPIX=-32 data
    offset: int
    image: Any  # astropy HDU, for anything else

    def read_rows(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows start:stop into ``out`` (float32, native byte order); safe on any thread."""
        try:
            if self.raw is None:
                out[...] = self.image.section[start:stop, :]
            else:
                self._read_raw(start, out)
        except (OSError, ValueError, IndexError, TypeError) as exc:
            reason = (
                f"{self.path}: cannot read rows {start}-{stop - 1} (truncated or corrupt?): {exc}"
            )
            raise CombineFailed(reason) from exc

    def _read_raw(self, start: int, out: np.ndarray) -> None:
        assert self.raw is not None
        wanted = out.nbytes
        # pread: no shared file position, so threads may read different files at once.
        got = os.preadv(
            self.raw.fileno(), [out.data.cast("B")], self.offset + start * self.shape[1] * 4
        )
        if got != wanted:
            raise ValueError(f"file ends after {got} of {wanted} bytes")
        from biaswatch.combine.kernel import swap_bytes  # see open_image

        swap_bytes(out.view(np.uint32))


# Threads reading a band's files at once. Why: a read from the page cache is a copy
# that releases the GIL, and by the time the bands are read the inputs' hashing thread
# (cli/combine.py) has mostly finished, so the second core is idle; why not more: the
# machine this was measured on has 2 cores. combine_planes on 10 x 4096^2 float32 in
# 4 bands, in process: 0.99-1.10 s with one reading thread, 0.70-0.80 s with two
# (2 runs each, warm page cache, load average ~2.6 from other work).
READ_THREADS = 2


def read_band(
    sources: Sequence[Source], start: int, stop: int, stack: np.ndarray, pool: Executor | None
) -> None:
    """Rows start:stop of every source into ``stack[i]``, native float32.

    With a pool and only raw sources, the files are read and byte-swapped on its
    threads (the C kernel's swap_bytes releases the GIL). Otherwise one by one.
    """
    if pool is None or any(source.raw is None for source in sources):
        for i, source in enumerate(sources):
            source.read_rows(start, stop, stack[i])
        return
    reads = [
        pool.submit(source.read_rows, start, stop, stack[i]) for i, source in enumerate(sources)
    ]
    for read in reads:
        read.result()  # CombineFailed of the first file that failed, in file order


def open_image(files: contextlib.ExitStack, path: Path, hdu: int) -> Source:
    """Open HDU ``hdu`` of ``path`` for band reads; CombineFailed if it is no image.

    A plain float32 image (the service's calibrated frames: the primary, or each
    segment's extension) is located from its header bytes and read raw; anything
    else goes through astropy, imported only then: the combining process is spared
    its import time and its header objects (tens of kB per file, which add up against
    mem_limit for 50 frames).
    """
    plain = _plain_float32(path, hdu)
    if plain is not None:
        shape, offset = plain
        # Unbuffered: readinto goes straight into the band, with no copy in between.
        raw = files.enter_context(path.open("rb", buffering=0))
        return Source(path, shape, raw, offset, None)
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError, TypeError, fits.VerifyError) as exc:
        raise CombineFailed(f"{path}: cannot read HDU {hdu}: {exc}") from exc
    try:
        image = hdul[hdu]
        shape = _image_shape(path, hdu, image)
    except CombineFailed:
        hdul.close()
        raise
    except (OSError, ValueError, IndexError, KeyError, TypeError, fits.VerifyError) as exc:
        hdul.close()
        raise CombineFailed(f"{path}: cannot read HDU {hdu}: {exc}") from exc
    files.callback(hdul.close)
    return Source(path, shape, None, 0, image)


def sample_rows(path: Path, hdu: int, where: tuple[slice, slice], stride: int) -> np.ndarray | None:
    """``image[where][::stride, ::stride]`` of a plain float32 HDU as float32; else None.

    For the QC's samples of the inputs (segment_qc.region_qc): only the sampled rows are
    read, with pread, from the offset the header bytes give. Why not astropy's memmap:
    opening each input's HDU through astropy parsed every header before it and the
    strided copy faulted in mapped pages, 0.78 s + 0.47 s for 30 MEF frames of 4
    segments (cProfile, loaded machine); the values are the same (tests/unit/test_bands.py).
    None when the HDU is not plain float32: the caller reads it through astropy.
    This module imports the kernel only inside the band reads: segment_qc, and through
    it the service's import of child.py, use this function without it.
    """
    plain = _plain_float32(path, hdu)
    if plain is None:
        return None
    (rows, cols), offset = plain
    wanted = range(rows)[where[0]][::stride]
    columns = where[1]
    out = np.empty((len(wanted), len(range(cols)[columns][::stride])), dtype=np.float32)
    line = np.empty(cols, dtype=">f4")
    try:
        with path.open("rb", buffering=0) as f:
            for i, row in enumerate(wanted):
                got = os.preadv(f.fileno(), [line.data.cast("B")], offset + row * cols * 4)
                if got != line.nbytes:
                    raise ValueError(f"file ends after {got} of {line.nbytes} bytes of row {row}")
                out[i] = line[columns][::stride]
    except (OSError, ValueError) as exc:
        raise CombineFailed(f"{path}: cannot read its QC sample: {exc}") from exc
    return out


def _plain_float32(path: Path, hdu: int = 0) -> tuple[tuple[int, int], int] | None:
    """(rows, cols) and data offset of an unscaled 2-D float32 image HDU ``hdu``, else None."""
    try:
        with path.open("rb") as f:
            located = _hdu_cards(f, hdu)
    except OSError as exc:
        raise CombineFailed(f"{path}: cannot read: {exc}") from exc
    if located is None:
        return None  # not FITS, no END, no such HDU: astropy says why
    cards, offset = located
    try:
        plain = (
            int(cards.get("BITPIX", "0")) == -32
            and int(cards.get("NAXIS", "0")) == 2
            and float(cards.get("BSCALE", "1")) == 1.0
            and float(cards.get("BZERO", "0")) == 0.0
            and cards.get("ZIMAGE", "F") != "T"
        )
        shape = (int(cards["NAXIS2"]), int(cards["NAXIS1"]))
    except (KeyError, ValueError):
        return None
    return (shape, offset) if plain and min(shape) >= 1 else None


def _hdu_cards(f: BinaryIO, hdu: int) -> tuple[dict[str, str], int] | None:
    """HDU ``hdu``'s cards and the offset of its data, walking the headers before it."""
    offset = 0
    for index in range(hdu + 1):
        f.seek(offset)
        header = read_header(f, first=index == 0)
        if isinstance(header, FitsStatus):
            return None
        cards, header_bytes = header
        offset += header_bytes
        if index == hdu:
            return cards, offset
        try:
            size = data_bytes(cards)
        except FrameRejected:
            return None
        offset += -(-size // BLOCK) * BLOCK  # data are padded to whole 2880-byte blocks
    return None


def _image_shape(path: Path, hdu: int, image: Any) -> tuple[int, int]:
    from astropy.io import fits

    if not isinstance(image, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        raise CombineFailed(f"{path}: HDU {hdu} is a {type(image).__name__}, not an image")
    shape = tuple(int(n) for n in image.shape)
    if len(shape) != 2 or min(shape) < 1:
        raise CombineFailed(f"{path}: expected a 2-D image, found shape {shape}")
    return shape[0], shape[1]


def common_shape(sources: Sequence[Source]) -> tuple[int, int]:
    """The 2-D shape every image shares; CombineFailed naming the odd one out."""
    first = sources[0]
    for source in sources:
        if source.shape != first.shape:
            raise CombineFailed(
                f"frames differ in shape: {first.path} is {first.shape[0]}x{first.shape[1]} "
                f"but {source.path} is {source.shape[0]}x{source.shape[1]} (rows x columns)"
            )
    return first.shape
