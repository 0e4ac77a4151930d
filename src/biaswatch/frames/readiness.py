"""Frames on disk: when a file is ready, whether it is whole FITS, what it is.

Watchdog's ``created`` fires when a file appears, long before the camera has
finished writing it (watchdog #586), and astropy only *warns* when a FITS file
is truncated (``_File.seek``). So a path becomes a frame in three steps:

1. :class:`Readiness` waits until its size and mtime have not changed for
   ``settle_seconds`` (or the writer closed it, on inotify);
2. :func:`fits_status` (fitsbytes.py) checks the bytes against the FITS
   structure itself (END card present, data as long as BITPIX x NAXISn say);
3. :func:`read_frame` opens it only if it is a regular file the camera may
   read, and reads it only if its headers announce no more than the camera's
   ``max_frame_bytes`` (frames/opening.py); then reads it once, hashes it, picks the
   image HDUs (one segment each, frames/segments.py) and returns plain data for
   :func:`classify` and calibration.

The raw file is only ever opened for reading.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from biaswatch.config import CameraConfig
from biaswatch.errors import FrameRejected
from biaswatch.fitsbytes import content_status, pad_last_block
from biaswatch.frames.opening import FileBytes, read_bytes
from biaswatch.frames.pixels import plain_unsigned
from biaswatch.rules.nights import TimeUnparsable, header_instant
from biaswatch.rules.sets import BINNING_KEYWORDS, FrameGeometry, binning_from, mode_value
from biaswatch.settings import (
    DEFAULT_DATE_KEYWORDS,
    DEFAULT_DATE_RANGE,
    TIME_OF_DAY_KEYWORDS,
    DateRange,
)

_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "END"}


# --- 1. readiness ----------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float
    first_seen: float
    settle: float
    closed: bool = False


@dataclass(slots=True)
class Readiness:
    """Tracks candidate paths until they stop changing."""

    _pending: dict[Path, _Pending] = field(default_factory=dict)
    vanished: list[Path] = field(default_factory=list)  # dropped by settled(); caller clears

    def note(self, path: Path, settle: float, now: float, *, closed: bool = False) -> None:
        """Start (or keep) watching ``path``; ``closed`` means the writer closed it."""
        if path not in self._pending:
            self._pending[path] = _Pending(-1, -1, now, now, settle, closed)
        elif closed:
            self.mark_closed(path)

    def mark_closed(self, path: Path) -> None:
        """The writer closed ``path``: it is ready at the next look, without settling."""
        entry = self._pending.get(path)
        if entry is not None:
            entry.closed = True

    def forget(self, path: Path) -> None:
        """Stop watching ``path``."""
        self._pending.pop(path, None)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def waiting_since(self, path: Path) -> float | None:
        """When ``path`` was first noted (monotonic seconds), or None."""
        entry = self._pending.get(path)
        return None if entry is None else entry.first_seen

    def settled(self, now: float, limit: int | None = None) -> list[Path]:
        """Paths unchanged for their settle time (or closed), at most ``limit`` of them.

        Vanished paths are dropped (and listed in ``vanished``).
        """
        ready: list[Path] = []
        for path, entry in list(self._pending.items()):
            if limit is not None and len(ready) >= limit:
                break
            try:
                st = path.stat()
            except FileNotFoundError:
                del self._pending[path]
                self.vanished.append(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                entry.size, entry.mtime_ns, entry.stable_since = st.st_size, st.st_mtime_ns, now
                if not entry.closed:
                    continue
            if entry.closed or now - entry.stable_since >= entry.settle:
                ready.append(path)
                entry.closed = False
        return ready

    def restart_settle(self, path: Path, now: float, wait: float | None = None) -> None:
        """Wait another settle period (or ``wait`` seconds) before looking at ``path`` again."""
        entry = self._pending.get(path)
        if entry is not None:
            entry.stable_since = now
            if wait is not None:
                entry.settle = wait


# --- 3. reading and classifying -------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentImage:
    """One image HDU of a frame: its segment name, pixels and merged header."""

    name: str  # EXTNAME, else HDU<index>; "" when the frame has one image HDU
    image: np.ndarray
    header: fits.Header  # the HDU's header plus the primary keywords it lacks
    own: fits.Header | None = None  # the HDU's header alone (several HDUs only)


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame read from disk: its (first) image, merged header, identity, and all its images."""

    path: Path
    image: np.ndarray
    header: fits.Header
    sha256: str
    size: int
    mtime_ns: int
    # Every image HDU in file order when there are several (issue 13); empty for one.
    extensions: tuple[SegmentImage, ...] = ()
    primary: fits.Header | None = None  # the primary HDU's header (several HDUs only)

    def images(self) -> tuple[SegmentImage, ...]:
        """The frame's image HDUs: its extensions, or its one image with no name."""
        return self.extensions or (SegmentImage("", self.image, self.header),)


def read_frame(path: Path, camera: CameraConfig) -> RawFrame:
    """Read ``path`` once (read-only), hash it and pick its image HDUs.

    Without the camera's ``hdu`` setting every HDU holding image data is read (one
    segment each); with it, that HDU alone.

    Raises:
        FrameRejected: unreadable or corrupt FITS, or no 2-D image.
    """
    return parse_frame(read_bytes(path, camera), camera)


def parse_frame(raw: FileBytes, camera: CameraConfig) -> RawFrame:
    """A file's bytes as a frame: hashed, its image HDUs picked (CPU only, no disk).

    Raises:
        FrameRejected: corrupt FITS, or no 2-D image.
    """
    content = raw.content
    readable = content
    if content_status(content).state == "complete":
        # Every HDU's data is there; only the last block's padding may be missing,
        # which fits_status accepts (some cameras stop at the last data byte).
        readable = pad_last_block(content)
    try:
        with warnings.catch_warnings():
            # astropy only warns on truncation (astropy#13356); that is an error here.
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(io.BytesIO(readable), memmap=False) as hdul:
                images = _plain_images(hdul, readable, camera.hdu) or _pick_images(hdul, camera.hdu)
                primary = hdul[0].header.copy() if len(images) > 1 else None
    except FrameRejected:
        raise
    except Exception as exc:
        raise FrameRejected(f"corrupt FITS: {type(exc).__name__}: {exc}") from None
    digest = hashlib.sha256(content).hexdigest()  # releases the GIL: the lane reads on
    first = images[0]
    several = len(images) > 1
    return RawFrame(
        raw.path,
        first.image,
        first.header,
        digest,
        raw.size,
        raw.mtime_ns,
        tuple(images) if several else (),
        primary,
    )


def _plain_images(
    hdul: fits.HDUList, readable: bytes, hdu: int | str | None
) -> list[SegmentImage] | None:
    """The one plain unsigned 16-bit primary image, read in place (frames/pixels.py); else None."""
    if hdu not in (None, 0):
        return None
    image = plain_unsigned(hdul, readable)
    if image is None:
        return None
    return [SegmentImage("", image, _merged_header(hdul[0].header, hdul[0].header))]


def _pick_images(hdul: fits.HDUList, hdu: int | str | None) -> list[SegmentImage]:
    """The camera's ``hdu``, else every HDU holding data (several: one segment each)."""
    if hdu is not None:
        image, header = _pick_image(hdul, hdu)
        return [SegmentImage("", image, header)]
    # Image HDUs only: a table beside the image (a camera's metadata) is no segment.
    holding = [
        (i, h)
        for i, h in enumerate(hdul)
        if getattr(h, "is_image", False) and getattr(h, "data", None) is not None
    ]
    if not holding:  # no image: _pick_image says why (no data, or not 2-D)
        image, header = _pick_image(hdul, None)
        return [SegmentImage("", image, header)]
    if len(holding) == 1:
        chosen = holding[0][1]
        return [
            SegmentImage("", _image_data(chosen), _merged_header(hdul[0].header, chosen.header))
        ]
    names = _segment_names([(i, h.header) for i, h in holding])
    primary = hdul[0].header
    return [
        SegmentImage(name, _image_data(h), _merged_header(primary, h.header), h.header.copy())
        for name, (_, h) in zip(names, holding, strict=True)
    ]


def _segment_names(hdus: list[tuple[int, fits.Header]]) -> list[str]:
    """EXTNAME, else ``HDU<index>``; names given twice (Gemini's SCI,1 SCI,2) get EXTVER."""
    names = [str(h.get("EXTNAME") or f"HDU{i}").strip() for i, h in hdus]
    return [
        f"{name}_{h.get('EXTVER', i)}" if names.count(name) > 1 else name
        for name, (i, h) in zip(names, hdus, strict=True)
    ]


def _pick_image(hdul: fits.HDUList, hdu: int | str | None) -> tuple[np.ndarray, fits.Header]:
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError):
            raise FrameRejected(f"no HDU {hdu!r} (the camera's 'hdu' setting)") from None
    else:
        chosen = next((h for h in hdul if getattr(h, "data", None) is not None), None)
        if chosen is None:
            raise FrameRejected("no HDU holds image data")
    return _image_data(chosen), _merged_header(hdul[0].header, chosen.header)


def _image_data(chosen: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> np.ndarray:
    """The HDU's pixels as a 2-D array of numbers, or the frame's error naming the HDU."""
    data = chosen.data
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype.fields is not None:
        shape = getattr(data, "shape", None)
        raise FrameRejected(f"HDU {chosen.name!r} is not a 2-D image (shape {shape})")
    return np.array(data)


def _merged_header(primary: fits.Header, image: fits.Header) -> fits.Header:
    """The image HDU's header plus primary keywords it lacks (IMAGETYP often lives there)."""
    # One Header(cards): appending card by card is quadratic in astropy (a primary
    # of 20,000 cards took 74 s; issue 11, finding 10).
    have = {card.keyword for card in image.cards} | _STRUCTURAL | {""}
    extra = []
    for card in primary.cards:
        if card.keyword not in have:  # the first of each keyword only, as before
            have.add(card.keyword)
            extra.append(card)
    return fits.Header([*(copy.copy(card) for card in image.cards), *extra])


def header_value(header: fits.Header, key: str) -> object:
    """A header value, or None when absent.

    Raises:
        FrameRejected: the card is there but astropy cannot parse it (control
            characters, a broken quote): the frame's own fault, said once.
    """
    try:
        return header.get(key)
    except Exception as exc:  # astropy's VerifyError or ValueError on an unparsable card
        raise FrameRejected(f"{key} card is unreadable: {_card_image(header, key)}") from exc


def header_text(header: fits.Header, key: str) -> str | None:
    """A header value as text for a record, never raising (the reject path uses it)."""
    try:
        value = header.get(key)
    except Exception:  # unparsable card: the reason already says so
        return None
    return None if value is None else str(value)


def _card_image(header: fits.Header, key: str) -> str:
    """The card's 80 characters, control characters escaped, for a reason."""
    try:
        # Card.image re-formats the value, which raises for this very card; the
        # text astropy read from the file is kept in _image (astropy 5-7 card.py).
        image = str(getattr(header.cards[key], "_image", None) or "")
    except Exception:  # no card to show
        image = ""
    return ascii(image.rstrip()) if image else "(unparsable)"


@dataclass(frozen=True, slots=True)
class FrameKind:
    """Whether a frame is a bias, the type it says it is, and why not when it is not."""

    is_bias: bool
    imagetyp: str | None  # the first deciding keyword's value, as written (the record's)
    reason: str = ""  # why it is not a bias, naming the keyword and the value seen


def classify(header: fits.Header, camera: CameraConfig) -> FrameKind:
    """Is this a bias frame, by ``bias_when`` or else ``imagetyp_keyword``/``bias_values``?

    Raises:
        FrameRejected: without ``bias_when``, the keyword is missing; or a deciding
            card is unreadable.
    """
    if camera.bias_when is None:
        return _classify_by_imagetyp(header, camera)
    imagetyp = header_text(header, type_keyword(camera))
    for rule in camera.bias_when:  # every rule must hold
        value = header_value(header, rule.keyword)
        if value is None:
            why = f"missing {rule.keyword} keyword, which bias_when needs"
            return FrameKind(False, imagetyp, why)
        if not rule.matches(value):
            why = f"{rule.keyword} = {value!r} is not a bias (bias_when wants {rule.describe()})"
            return FrameKind(False, imagetyp, why)
    return FrameKind(True, imagetyp)


def type_keyword(camera: CameraConfig) -> str:
    """The keyword whose value a frame's record keeps as its type (imagetyp)."""
    return camera.imagetyp_keyword if camera.bias_when is None else camera.bias_when[0].keyword


def _classify_by_imagetyp(header: fits.Header, camera: CameraConfig) -> FrameKind:
    key = camera.imagetyp_keyword
    value = header_value(header, key)
    if value is None or not str(value).strip():
        raise FrameRejected(f"missing {key} keyword: cannot tell whether this is a bias")
    text = str(value).strip()
    if text.lower() in camera.bias_values:
        return FrameKind(True, text)
    return FrameKind(False, text, f"{key} = {text!r} is not a bias")


def observation_time(
    frame: RawFrame,
    date_range: DateRange = DEFAULT_DATE_RANGE,
    now: dt.datetime | None = None,
    keywords: Sequence[str] = DEFAULT_DATE_KEYWORDS,
) -> tuple[dt.datetime, str | None]:
    """The first of ``keywords`` readable and within ``date_range``, as aware UTC.

    Else the file's mtime, with a note saying what each keyword was and why it failed.
    """
    now = now or dt.datetime.now(dt.UTC)
    problems = []
    for keyword in keywords:
        when, problem = _keyword_time(frame.header, keyword)
        if when is not None and date_range.contains(when, now):
            return when, None
        if when is not None:
            problem = f"{header_text(frame.header, keyword)!r} outside date_range "
            problem += date_range.describe()
        problems.append(f"{keyword} {problem}")
    # Keywords the frame lacks are named only when it has none of them: a camera
    # writing DATE-OBS badly is told about DATE-OBS, not about the MJD-OBS it never writes.
    told = [p for p in problems if not p.endswith(" missing")] or problems[:1]
    mtime = dt.datetime.fromtimestamp(frame.mtime_ns / 1e9, tz=dt.UTC)
    return mtime, f"{', '.join(told)}: night taken from file mtime {mtime:%Y-%m-%dT%H:%M:%S}Z"


def _keyword_time(header: fits.Header, keyword: str) -> tuple[dt.datetime | None, str]:
    """The instant a keyword gives, or None and why not ("missing", "unparsable (...)")."""
    try:
        value = header.get(keyword)
    except Exception:  # astropy cannot parse the card: the reason shows its text
        return None, f"unreadable: {_card_image(header, keyword)}"
    if value is None:
        return None, "missing"
    time_of_day = next(
        (t for k in TIME_OF_DAY_KEYWORDS if (t := header_text(header, k)) is not None), None
    )
    try:
        when = header_instant(
            value,
            mjd="MJD" in keyword,
            time_of_day=time_of_day,
            timesys=header_text(header, "TIMESYS"),
        )
    except TimeUnparsable as exc:
        return None, str(exc)
    return when, ""


def geometry(
    header: fits.Header, segments: Sequence[tuple[str, tuple[int, int]]], camera: CameraConfig
) -> FrameGeometry:
    """What a frame must share with the others of its set.

    Args:
        header: the primary and first image HDU's headers merged (binning, group_by).
        segments: each RAW segment's name and (rows, cols), in raw order; one
            segment named "" for a frame of one image and no amplifiers.
        camera: its ``group_by`` keywords.

    Raises:
        FrameRejected: a binning keyword is there but not binning.
    """
    present = {}
    for key in BINNING_KEYWORDS:
        value = header_value(header, key)
        if value is not None:
            present[key] = value
    try:
        xbin, ybin = binning_from(present)
    except ValueError as exc:
        raise FrameRejected(str(exc)) from None
    rows, cols = segments[0][1]
    one = len(segments) == 1 and not segments[0][0]
    named = () if one else tuple((name, r, c) for name, (r, c) in segments)
    modes = tuple((key, mode_value(header_value(header, key))) for key in camera.group_by)
    return FrameGeometry(rows, cols, xbin, ybin, named, modes)
