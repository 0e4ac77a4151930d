"""A camera's plain 16-bit image taken straight from the file's bytes.

Most cameras write one primary HDU of BITPIX = 16 with BZERO = 32768 (unsigned
16-bit, FITS 4.0 sect. 5.2.5). astropy reads it by copying the data out of the
file object and then adding BZERO in a second pass (0.05 s of a 4096 x 4128
frame's 0.2 s ingest). Here the stored big-endian values are read in place and
the sign bit flipped in one pass: ``s + 32768`` is ``s ^ 0x8000`` on 16 bits.
Anything else (extensions, BLANK, other BITPIX or scaling) is left to astropy.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

from biaswatch.fitsbytes import FitsStatus, read_header

_UNSIGNED_ZERO = 32768  # BZERO of unsigned 16-bit data (FITS 4.0, Table 11)
_SIGN_BIT = np.uint16(0x8000)


def plain_unsigned(hdul: fits.HDUList, readable: bytes) -> np.ndarray | None:
    """The one primary image of ``hdul`` as native uint16, or None when it is not that plain.

    The structure is read from the bytes (fitsbytes.read_header), never through astropy's
    card values: ``fileinfo`` and ``Header.get`` would verify, and a bad card elsewhere in
    the header is the classifier's to report, naming the card (frames/readiness.py).
    """
    if len(hdul) != 1:
        return None
    found = read_header(io.BytesIO(readable), first=True)
    if isinstance(found, FitsStatus):
        return None
    cards, start = found
    shape = _unsigned_shape(cards)
    if shape is None:
        return None
    rows, cols = shape
    if start + rows * cols * 2 > len(readable):  # astropy says how it is cut short
        return None
    stored = np.frombuffer(readable, dtype=">u2", count=rows * cols, offset=start)
    flipped: np.ndarray = np.bitwise_xor(stored, _SIGN_BIT, dtype=np.uint16)
    return flipped.reshape(rows, cols)


def _unsigned_shape(cards: dict[str, str]) -> tuple[int, int] | None:
    """(rows, cols) of a 2-D unsigned 16-bit image without BLANK or BSCALE; else None."""
    try:
        plain = (
            int(cards.get("NAXIS", "0")) == 2
            and int(cards["BITPIX"]) == 16
            and float(cards.get("BZERO", "0")) == _UNSIGNED_ZERO
            and float(cards.get("BSCALE", "1")) == 1
            and "BLANK" not in cards
        )
        rows, cols = int(cards["NAXIS2"]), int(cards["NAXIS1"])
    except (KeyError, ValueError):  # astropy's own read says what is wrong
        return None
    return (rows, cols) if plain and rows > 0 and cols > 0 else None
