"""The soak's odd files (issue 11): how each is written and what it must become.

EXPECTATIONS is the one table of what the service must make of each odd kind; the
lead adjusts it there as the fixes land. A kind's file is written by ``write_odd``
into a camera's watched directory, never into the mirror of the hung mount.

Kinds (issue 11's findings in brackets):
- ``date-9999``, ``date-0001``: a valid bias whose DATE-OBS is 9999-12-31T13:00:00 or
  0001-01-01T00:00:00 [1]: a bias, combined, its night taken from the file's mtime;
- ``ctrl-imagetyp``: IMAGETYP = 'BI\\x01AS' [8]: rejected once, with a reason;
- ``negative-naxis``: NAXIS1 = -72 [8]: rejected, with a reason;
- ``sparse-huge``: a sparse file (a few KB on disk) whose header announces
  20000 x 20000 float64 (3.2 GB) [3]: rejected, the service's RSS bounded;
- ``fz-huge``: a 1.6 MB tile-compressed .fits.fz of 20000 x 20000 int16 zeros [3]: rejected;
- ``non-utf8-name``: a valid bias named ``..._bias_\\xff\\xfe.fits`` [5]: combined;
- ``long-name``: a valid bias with a 255-byte name [7]: combined;
- ``fifo``: a FIFO named ``..._x.fits`` [9]: recorded (rejected or ignored), its camera
  never stalled;
- ``many-cards``: a valid bias with 20,000 extra header cards [10]: rejected or
  combined, as the service decides, but judged (not left 'seen');
- ``symlink-out``: a symlink to a valid bias outside every watched tree [12]: never
  combined; ignored or rejected (a row with a reason), or no row at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.config import CameraConfig
from biaswatch.testing.camera import Geometry

# The size the huge files announce: 20000 x 20000, as in the finding 3.
HUGE_SIDE = 20_000
# 20,000 cards: the finding 10 measured 42 s for these in calibrated_header.
MANY_CARDS = 20_000
# A 255-byte name: NAME_MAX of Linux filesystems (limits.h), the longest legal name.
NAME_MAX = 255
CARD = 80
BLOCK = 2880


@dataclass(frozen=True, slots=True)
class Expect:
    """What the service must make of one odd kind."""

    statuses: frozenset[str]  # the final frames.status it may have
    row_optional: bool = False  # no frames row at all is fine too
    reason: bool = False  # a row that is not combined must say why
    night_from_mtime: bool = False  # its night is the night of the file's mtime
    same_sha: bool = False  # the row's sha256 is the sha256 of the written bytes


def _expect(*statuses: str, **flags: bool) -> Expect:
    return Expect(frozenset(statuses), **flags)


# THE TABLE: what each odd kind must become (see the module docstring for why).
EXPECTATIONS: dict[str, Expect] = {
    "date-9999": _expect("combined", night_from_mtime=True, same_sha=True),
    "date-0001": _expect("combined", night_from_mtime=True, same_sha=True),
    "ctrl-imagetyp": _expect("rejected", reason=True),
    "negative-naxis": _expect("rejected", reason=True),
    "sparse-huge": _expect("rejected", reason=True),
    "fz-huge": _expect("rejected", reason=True),
    "non-utf8-name": _expect("combined", same_sha=True),
    "long-name": _expect("combined", same_sha=True),
    "fifo": _expect("rejected", "ignored", reason=True),
    "many-cards": _expect("rejected", "combined"),
    "symlink-out": _expect("ignored", "rejected", row_optional=True, reason=True),
}
ODD_KINDS = tuple(EXPECTATIONS)

# A second `biaswatch run` on the same config must exit by itself within this, with a
# status other than 0, and (SECOND_RUN_NAMES_PID) name the running service's pid. The
# refusal itself is at once; the interpreter's imports took 8 s on 2 busy cores.
SECOND_RUN_TIMEOUT = 30.0
SECOND_RUN_NAMES_PID = True
# The service process's VmHWM must stay below this. It runs at about 270 MiB (issue
# 11, finding 3: "from 268 to 2,923 MiB" once a huge .fits.fz was read whole).
MAX_SERVICE_RSS_MIB = 768
# The memory cgroup the service runs in, as in the issue's finding 3 ("a 1.2 GB
# memory cgroup"); an OOM kill there ends the service, which the soak counts.
CGROUP_LIMIT_BYTES = 1_200_000_000


@dataclass(frozen=True, slots=True)
class OddFile:
    """An odd file as written: its path as the service sees it and its fingerprint."""

    path: Path
    fingerprint: str


def bias_payload(header: fits.Header, data: np.ndarray, camera: CameraConfig) -> bytes:
    """A complete FITS file of ``data`` with ``header``, where the camera reads its image."""
    from biaswatch.testing.camera import frame_bytes

    return frame_bytes(data, header, hdu=camera.hdu)


def replace_once(payload: bytes, old: bytes, new: bytes) -> bytes:
    """``payload`` with its one occurrence of ``old`` replaced (same length)."""
    if payload.count(old) != 1 or len(old) != len(new):
        raise ValueError(f"cannot patch {old!r} in the frame")
    return payload.replace(old, new)


def card(keyword: str, value: int) -> bytes:
    """A fixed-format integer card (FITS 4.0, section 4.2.3: right-justified in 11-30)."""
    return f"{keyword:<8}= {value:>20}".ljust(CARD).encode("ascii")


def control_imagetyp(payload: bytes, keyword: str) -> bytes:
    """IMAGETYP 'BI\\x01AS': astropy refuses to write it, so the bytes are patched."""
    old = f"{keyword:<8}= 'BIQAS".encode("ascii")
    return replace_once(payload, old, old.replace(b"BIQAS", b"BI\x01AS"))


def negative_naxis1(payload: bytes, cols: int) -> bytes:
    """NAXIS1 = -cols: a header astropy would not write."""
    return replace_once(payload, card("NAXIS1", cols)[:30], card("NAXIS1", -cols)[:30])


def with_many_cards(payload: bytes, count: int) -> bytes:
    """The frame with ``count`` integer cards added before the first header's END."""
    end = _end_card(payload)
    header_blocks = end // BLOCK + 1
    extra = b"".join(card(f"C{i:07d}", i) for i in range(count))
    header = payload[:end] + extra + b"END".ljust(CARD)
    header += b" " * (-len(header) % BLOCK)
    return header + payload[header_blocks * BLOCK :]


def _end_card(payload: bytes) -> int:
    for offset in range(0, len(payload), CARD):
        if payload[offset : offset + CARD].rstrip() == b"END":
            return offset
    raise ValueError("no END card")


def huge_header(base: fits.Header, bitpix: int) -> fits.Header:
    """``base`` announcing a HUGE_SIDE x HUGE_SIDE image of ``bitpix``."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = 2
    header["NAXIS1"] = HUGE_SIDE
    header["NAXIS2"] = HUGE_SIDE
    for entry in base.cards:
        if entry.keyword not in header and entry.keyword not in ("BZERO", "BSCALE"):
            header.append(entry)
    return header


def write_sparse_huge(path: Path, base: fits.Header) -> None:
    """A header announcing 20000 x 20000 float64, then a hole to the announced size."""
    header = huge_header(base, -64).tostring().encode("ascii")
    data = HUGE_SIDE * HUGE_SIDE * 8
    with open(path, "xb") as stream:
        stream.write(header)
        stream.truncate(len(header) + data + (-data % BLOCK))


def fz_huge_payload(base: fits.Header) -> bytes:
    """A valid .fits.fz of 20000 x 20000 int16 zeros: one GZIP_1 tile per row, repeated.

    Compressing the whole image in memory would take 800 MB here; every row's tile is
    the same bytes, so one row is compressed and its tile repeated in the heap.
    """
    table, tile = _one_row_tile()
    table["NAXIS2"] = HUGE_SIDE
    table["ZNAXIS2"] = HUGE_SIDE
    table["PCOUNT"] = HUGE_SIDE * len(tile)
    table["TFORM1"] = f"1PB({len(tile)})"
    for entry in base.cards:
        if entry.keyword not in table and not _structural(entry.keyword):
            table.append(entry)
    descriptors = np.empty((HUGE_SIDE, 2), dtype=">i4")
    descriptors[:, 0] = len(tile)
    descriptors[:, 1] = np.arange(HUGE_SIDE) * len(tile)
    body = descriptors.tobytes() + tile * HUGE_SIDE
    body += b"\0" * (-len(body) % BLOCK)
    primary = fits.PrimaryHDU().header.tostring().encode("ascii")
    return primary + table.tostring().encode("ascii") + body


def _structural(keyword: str) -> bool:
    return keyword in ("SIMPLE", "BITPIX", "BZERO", "BSCALE", "EXTEND") or keyword.startswith(
        "NAXIS"
    )


def _one_row_tile() -> tuple[fits.Header, bytes]:
    zeros = np.zeros((1, HUGE_SIDE), dtype=np.int16)
    hdu = fits.CompImageHDU(zeros, compression_type="GZIP_1", tile_shape=(1, HUGE_SIDE))
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    buffer.seek(0)
    with fits.open(buffer, disable_image_compression=True) as hdul:
        tile = np.asarray(hdul[1].data["COMPRESSED_DATA"][0], dtype=np.uint8).tobytes()
        return hdul[1].header.copy(), tile


def odd_name(camera: str, number: int, kind: str) -> str:
    """The file name of an odd file (bytes that are not UTF-8 as PEP 383 surrogates)."""
    stem = f"{camera}_{number:05d}_{kind}"
    if kind == "non-utf8-name":
        return os.fsdecode(f"{stem}_bias_".encode() + b"\xff\xfe.fits")
    if kind == "long-name":
        return stem + "_" + "x" * (NAME_MAX - len(stem) - len("_.fits")) + ".fits"
    if kind == "fz-huge":
        return stem + ".fits.fz"
    if kind == "fifo":
        return stem + "_x.fits"
    return stem + ".fits"


def fingerprint(path: Path, kind: str) -> str:
    """What must not change in a written file: its sha256, or for sparse and FIFO a stand-in.

    A sparse huge file is 3.2 GB when read: its first 64 KiB and size stand for it.
    A FIFO cannot be read without a writer: that it is still a FIFO stands for it.
    """
    if kind == "fifo":
        return "fifo" if stat.S_ISFIFO(os.lstat(path).st_mode) else "not a fifo any more"
    if kind == "sparse-huge":
        with open(path, "rb") as stream:
            head = hashlib.sha256(stream.read(65536)).hexdigest()
        return f"{head}:{path.stat().st_size}"
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def night_of_mtime(path: Path, zone: dt.tzinfo, rollover: dt.time) -> str:
    """The night label of a file's mtime, as the service falls back to it."""
    from zoneinfo import ZoneInfo

    from biaswatch.rules.nights import night_label

    when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    assert isinstance(zone, ZoneInfo)
    return str(night_label(when, zone, rollover))


def safe_text(text: str) -> str:
    """Text printable on any terminal: undecodable bytes and controls escaped."""
    raw = text.encode("utf-8", errors="surrogateescape")
    shown = raw.decode("utf-8", errors="backslashreplace")
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", shown)


@dataclass(frozen=True, slots=True)
class OddContext:
    """Where a camera's odd file goes and how its valid frames look."""

    camera: CameraConfig
    directory: Path  # the watched directory
    outside: Path  # a directory no camera watches (symlink targets)
    geometry: Geometry
    structure: np.ndarray


def write_odd(kind: str, ctx: OddContext, number: int, noise: np.random.Generator) -> OddFile:
    """Write one odd file of ``kind`` whole; its path as the service sees it."""
    from biaswatch.testing.camera import camera_header, make_raw_bias

    path = ctx.directory / odd_name(ctx.camera.name, number, kind)
    header = camera_header(ctx.camera, ctx.geometry, dt.datetime.now(dt.UTC), number)
    if kind == "fifo":
        os.mkfifo(path)
        return OddFile(path, fingerprint(path, kind))
    if kind == "sparse-huge":
        write_sparse_huge(path, header)
        return OddFile(path, fingerprint(path, kind))
    if kind == "fz-huge":
        payload = fz_huge_payload(header)
    else:
        payload = _bias_kind_payload(
            kind, header, ctx, make_raw_bias(ctx.geometry, noise, structure=ctx.structure)
        )
    target = ctx.outside / path.name if kind == "symlink-out" else path
    _write_renamed(target, payload)
    if kind == "symlink-out":
        os.symlink(target, path)
    return OddFile(path, fingerprint(path, kind))


def _bias_kind_payload(kind: str, header: fits.Header, ctx: OddContext, data: np.ndarray) -> bytes:
    keyword = ctx.camera.imagetyp_keyword
    if kind == "date-9999":
        header["DATE-OBS"] = "9999-12-31T13:00:00"
    elif kind == "date-0001":
        header["DATE-OBS"] = "0001-01-01T00:00:00"
    elif kind == "ctrl-imagetyp":
        header[keyword] = "BIQAS"
    payload = bias_payload(header, data, ctx.camera)
    if kind == "ctrl-imagetyp":
        return control_imagetyp(payload, keyword)
    if kind == "negative-naxis":
        return negative_naxis1(payload, ctx.geometry.cols)
    if kind == "many-cards":
        return with_many_cards(payload, MANY_CARDS)
    return payload


def _write_renamed(path: Path, payload: bytes) -> None:
    """Whole, under a hidden name beside it, then renamed in: no half-written odd file."""
    # Not ".NAME.part": a 255-byte NAME would make it too long.
    temporary = path.with_name(f".odd-{uuid.uuid4().hex}.part")
    with open(temporary, "xb") as stream:
        stream.write(payload)
    temporary.rename(path)
