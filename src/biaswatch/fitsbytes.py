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
import stat
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
    """Check header END cards and data lengths of every HDU against the file size.

    Opened without blocking: a FIFO under a frame's name would otherwise hold the
    caller in open() until some writer came (only regular files are FITS files).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return file_status(f)


def file_status(f: BinaryIO) -> FitsStatus:
    """fits_status of a file already open."""
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        return FitsStatus("not_fits", "not a regular file")
    return _walk_hdus(f, st.st_size)


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


@dataclass(frozen=True, slots=True)
class Announced:
    """What a file's headers say it holds, read before any data is.

    ``stored`` is the data the HDUs occupy in the file (headers included);
    ``in_memory`` what reading them makes: a tile-compressed image (a BINTABLE
    with ZIMAGE = T, FITS 4.0 sect. 10) counts as its decompressed size,
    |ZBITPIX|/8 x prod ZNAXISn, not as its table.
    """

    stored: int
    in_memory: int
    hdus: int


def announced(f: BinaryIO) -> Announced:
    """Walk the headers of an open file, skipping over data; stop at the first non-HDU."""
    offset, stored, in_memory, index = 0, 0, 0, 0
    while True:
        f.seek(offset)
        header = read_header(f, first=index == 0)
        if isinstance(header, FitsStatus):
            return Announced(stored, in_memory, index)
        cards, header_bytes = header
        try:
            data = data_bytes(cards)  # never negative: its range checks refuse that
        except FrameRejected as exc:  # worded as fits_status words it, whichever looks first
            raise FrameRejected(f"not a FITS file: {exc.reason}") from None
        stored += header_bytes + data
        in_memory += _decompressed_bytes(cards) if _tile_compressed(cards) else data
        offset += header_bytes + math.ceil(data / BLOCK) * BLOCK
        index += 1


def _tile_compressed(cards: dict[str, str]) -> bool:
    return cards.get("XTENSION", "").strip("' ") == "BINTABLE" and cards.get("ZIMAGE") == "T"


def _decompressed_bytes(cards: dict[str, str]) -> int:
    try:
        bitpix, naxis = int(cards["ZBITPIX"]), int(cards["ZNAXIS"])
        pixels = math.prod(int(cards[f"ZNAXIS{i}"]) for i in range(1, naxis + 1))
    except (KeyError, ValueError) as exc:
        raise FrameRejected(f"malformed tile-compression keyword: {exc}") from None
    return abs(bitpix) // 8 * max(pixels, 0)


# Cards read looking for END before the file is judged not FITS: 80 MB, a hundred times
# the 10,000-card header bound of issue 11 (finding 10), which judges any header that
# has an END once it is read. This one only stops a walk through junk without END: a
# sparse file of gigabytes of zeros after a SIMPLE card was read to its end at every
# look (3.2 GB: 50 s), and now costs about a second.
END_SEARCH_CARDS = 1_000_000


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
        if total >= END_SEARCH_CARDS * CARD:  # a hole or junk, never a header: stop reading
            return FitsStatus("not_fits", f"no END card in the first {END_SEARCH_CARDS} cards")
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
