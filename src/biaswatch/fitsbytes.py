"""FITS structure read from the bytes themselves, without astropy.

Two callers need the structure of a FITS file but not astropy's objects:
readiness (is the file whole yet? astropy only warns on truncation) and the
combine's band reader (where are a plain float32 image's bytes?), which also
saves the combining process astropy's import time and header objects.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from biaswatch.errors import FrameRejected

BLOCK = 2880  # FITS logical record length, FITS 4.0 sect. 3.1
CARD = 80
CARDS_PER_BLOCK = BLOCK // CARD
# Header cards a frame may hold. Camera headers hold tens to a few hundred cards
# (the seed's frames 40-odd; DECam's ~300); 10,000 (800 kB of header) leaves room
# for long HISTORY logs. Beyond it a header is junk, and astropy is quadratic in
# places (Header.append: 20,000 cards 32 s, 100,000 cards 9 minutes; issue 11,
# finding 10), so it is refused here, from the bytes, before astropy parses it.
MAX_HEADER_CARDS = 10_000


@dataclass(frozen=True, slots=True)
class FitsStatus:
    """Whether a file holds whole FITS HDUs: complete, incomplete (yet), or not FITS."""

    state: Literal["complete", "incomplete", "not_fits"]
    detail: str = ""


def fits_status(path: Path) -> FitsStatus:
    """Check header END cards and data lengths of every HDU against the file size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _walk_hdus(f, size)


def content_status(content: bytes) -> FitsStatus:
    """fits_status of bytes already read."""
    return _walk_hdus(io.BytesIO(content), len(content))


def pad_last_block(content: bytes) -> bytes:
    """Whole-data FITS bytes padded to a whole block, as the standard writes them.

    Only for content whose every HDU's data is present (content_status complete):
    what is added is the last block's padding, which some cameras leave out and
    without which astropy warns "File may have been truncated".
    """
    return content + bytes(-len(content) % BLOCK)


def _walk_hdus(f: BinaryIO, size: int) -> FitsStatus:
    offset, index = 0, 0
    while True:
        f.seek(offset)
        header = read_header(f, first=index == 0)
        if isinstance(header, FitsStatus):
            if index > 0 and header.state == "not_fits":
                return _trailing(f, offset, size)
            return header
        cards, header_bytes = header
        blocks = header_bytes // BLOCK
        if CARDS_PER_BLOCK * (blocks - 1) > MAX_HEADER_CARDS:  # before astropy parses it
            return FitsStatus(
                "not_fits",
                f"header of {blocks} blocks holds more than {MAX_HEADER_CARDS} cards",
            )
        try:
            data = data_bytes(cards)
        except FrameRejected as exc:  # not a size problem: no wait makes it whole
            return FitsStatus("not_fits", exc.reason)
        have = size - offset - header_bytes
        if have < data:
            what = "primary HDU" if index == 0 else f"HDU {index}"
            return FitsStatus("incomplete", f"{what} data: {max(have, 0)} of {data} bytes")
        offset += header_bytes + math.ceil(data / BLOCK) * BLOCK
        index += 1
        # The last HDU's padding is optional in practice: some camera programs
        # stop at the last data byte, and astropy reads such files.
        if offset >= size:
            return FitsStatus("complete", f"{index} HDU(s)")


def _trailing(f: BinaryIO, offset: int, size: int) -> FitsStatus:
    """Bytes after the last HDU: zeros are padding; anything else means a wrong header.

    A header whose BITPIX or NAXISn is smaller than the data leaves the rest of
    the data here: read as it says, the frame would be half an image.
    """
    f.seek(offset)
    while chunk := f.read(1 << 20):
        if chunk.count(0) != len(chunk):
            return FitsStatus(
                "not_fits",
                f"{size - offset} bytes follow the last HDU and are not an extension: "
                "its BITPIX or NAXISn do not describe the data",
            )
    return FitsStatus("complete", "zero bytes after the last HDU ignored")


def read_header(f: BinaryIO, *, first: bool) -> tuple[dict[str, str], int] | FitsStatus:
    """The header's cards (keyword -> value text) and its length in bytes, or why not."""
    start = f.read(BLOCK)
    magic = b"SIMPLE  =" if first else b"XTENSION="
    if len(start) < len(magic):
        return FitsStatus("incomplete", "file is shorter than one FITS card")
    if not start.startswith(magic):
        return FitsStatus("not_fits", "does not start with a FITS 'SIMPLE' card")
    cards: dict[str, str] = {}
    block, total = start, 0
    while True:
        if len(block) < BLOCK:
            return FitsStatus("incomplete", "header has no END card")
        total += BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i : i + CARD].decode("ascii", errors="replace")
            key = card[:8].strip()
            if key == "END":
                return cards, total
            if card[8:10] == "= ":
                cards[key] = card[10:].split("/", 1)[0].strip()
        block = f.read(BLOCK)


# The BITPIX values FITS allows (FITS 4.0, sect. 4.4.1.1, Table 8).
_BITPIX = (8, 16, 32, 64, -32, -64)


def data_bytes(cards: dict[str, str]) -> int:
    """Bytes of data the header announces: |BITPIX|/8 x GCOUNT x (PCOUNT + prod NAXISn).

    Raises:
        FrameRejected: a structure keyword is missing, not a number, or out of the
            range FITS allows (a negative NAXISn once made a negative seek, which
            looked like an unreadable file and was retried forever).
    """
    try:
        bitpix, naxis = int(cards["BITPIX"]), int(cards.get("NAXIS", "0"))
        axes = [int(cards[f"NAXIS{i}"]) for i in range(1, naxis + 1)] if 0 < naxis <= 999 else []
        pcount, gcount = int(cards.get("PCOUNT", "0")), int(cards.get("GCOUNT", "1"))
    except (KeyError, ValueError) as exc:
        raise FrameRejected(f"malformed FITS structure keyword: {exc}") from None
    problem = _structure_problem(bitpix, naxis, axes, pcount, gcount)
    if problem:
        raise FrameRejected(f"malformed FITS structure keyword: {problem}")
    if naxis == 0:
        return 0
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(axes))


def _structure_problem(bitpix: int, naxis: int, axes: list[int], pcount: int, gcount: int) -> str:
    """What is out of FITS's range (FITS 4.0 sect. 4.4.1), or '' when nothing is."""
    if bitpix not in _BITPIX:
        return f"BITPIX = {bitpix} is not one of {', '.join(map(str, _BITPIX))}"
    if not 0 <= naxis <= 999:
        return f"NAXIS = {naxis} is not between 0 and 999"
    for i, length in enumerate(axes, start=1):
        if length < 0:
            return f"NAXIS{i} = {length} is negative"
    if pcount < 0 or gcount < 0:
        return f"PCOUNT = {pcount}, GCOUNT = {gcount}: neither may be negative"
    return ""
