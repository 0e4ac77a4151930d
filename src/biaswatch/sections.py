"""FITS section strings such as ``[1:2048, 1:2048]`` (pure, no I/O).

FITS sections are 1-based, inclusive, and list the x (column) range first;
numpy slices are 0-based, half-open, and index rows first. Everything that
touches a section goes through :class:`Section` so that conversion lives in
one place.

The grammar is ccdproc's (``ccdproc.utils.slices.slice_from_string`` with
``fits_convention=True``, which ``subtract_overscan`` and ``trim_image`` use), so a
section ccdproc accepts is accepted here and selects the same pixels:
``*`` for a whole axis, ``-*`` for it reversed, a reversed range such as
``[2048:1,*]``, open ends (``[:1024,1:]``) and blanks anywhere. It is written out
here rather than imported because this module is loaded by the combine child and
by every command that reads the config, and importing ccdproc costs 0.4 s
(tests/unit/test_imports.py keeps it out of the child); a unit test checks every
form against ccdproc's parser on real arrays. Two forms ccdproc takes are refused,
as biaswatch cannot honour them: a step (``[1:2048:2,*]``, a subsampled overscan
or trim is no calibration) and a single index (``[5,*]``: ccdproc reads it as
``1:5``, IRAF as column 5 alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

# An end of 0 stands for the axis's last pixel (``*``, an open end): FITS indices
# start at 1, so 0 is never a pixel. Section.within(shape) puts the number in.
LAST = 0


def _axis(text: str, whole: str) -> tuple[int, int]:
    """One axis of a section (``5:10``, ``10:5``, ``*``, ``-*``, ``:10``) as (first, last)."""
    if text == "*":
        return 1, LAST
    if text == "-*":
        return LAST, 1
    parts = text.split(":")
    if len(parts) == 1:
        raise ValueError(
            f"{whole!r}: {text!r} is one index, which ccdproc reads as 1:{text} and IRAF "
            f"as that pixel alone; write {text}:{text} or 1:{text}"
        )
    if len(parts) > 2 or "*" in text:
        raise ValueError(f"{whole!r} has a step ({text!r}): biaswatch cannot honour it")
    try:
        first, last = (int(p) if p else None for p in parts)
    except ValueError:
        raise ValueError(f"{whole!r}: {text!r} is not a range of whole numbers") from None
    if (first is not None and first < 1) or (last is not None and last < 1):
        raise ValueError(f"{whole!r}: FITS sections start at 1")
    return (1 if first is None else first), (LAST if last is None else last)


@dataclass(frozen=True, slots=True)
class Section:
    """A rectangular FITS section, 1-based and inclusive, x first.

    An end may be :data:`LAST` (from ``*`` or an open range) until :meth:`within`
    gives it the image's size; a range whose first end is larger runs backwards,
    as in ccdproc.
    """

    x1: int
    x2: int
    y1: int
    y2: int

    @classmethod
    def parse(cls, text: str) -> Section:
        """Parse a section as ccdproc does; raise ValueError saying why not."""
        bare = text.replace(" ", "")
        if not (bare.startswith("[") and bare.endswith("]")):
            raise ValueError(f"{text!r} is not a FITS section like '[1:2048,1:2048]'")
        axes = bare[1:-1].split(",")
        if len(axes) != 2:
            raise ValueError(f"{text!r} is not a FITS section like '[1:2048,1:2048]'")
        (x1, x2), (y1, y2) = (_axis(a, text) for a in axes)
        return cls(x1, x2, y1, y2)

    def fits_string(self) -> str:
        """The section in FITS notation without spaces, as ccdproc expects it."""
        return f"[{_end_text(self.x1, self.x2)},{_end_text(self.y1, self.y2)}]"

    def within(self, shape: tuple[int, ...]) -> Section:
        """This section with every :data:`LAST` replaced by the image's size on that axis."""
        rows, cols = shape[-2], shape[-1]
        return replace(
            self,
            x1=self.x1 or cols,
            x2=self.x2 or cols,
            y1=self.y1 or rows,
            y2=self.y2 or rows,
        )

    def shape(self) -> tuple[int, int]:
        """The (rows, columns) of the data this section selects.

        Raises:
            ValueError: an end is still :data:`LAST` (call :meth:`within` first).
        """
        if LAST in (self.x1, self.x2, self.y1, self.y2):
            raise ValueError(f"{self.fits_string()} has no size until an image gives it one")
        return abs(self.y2 - self.y1) + 1, abs(self.x2 - self.x1) + 1

    def slices(self, shape: tuple[int, ...]) -> tuple[slice, slice]:
        """The numpy (rows, columns) slices ccdproc takes for this section of ``shape``."""
        concrete = self.within(shape)
        return _slice(concrete.y1, concrete.y2), _slice(concrete.x1, concrete.x2)

    def problem_with(self, shape: tuple[int, ...]) -> str | None:
        """Why this section does not fit an image of ``shape`` (rows, cols), or None."""
        rows, cols = shape[-2], shape[-1]
        concrete = self.within(shape)
        if max(concrete.x1, concrete.x2) > cols or max(concrete.y1, concrete.y2) > rows:
            return f"{self.fits_string()} does not fit an image of {cols} x {rows} (x by y)"
        return None


def _end_text(first: int, last: int) -> str:
    if (first, last) == (1, LAST):
        return "*"
    if (first, last) == (LAST, 1):
        return "-*"
    return f"{first or ''}:{last or ''}"


def _slice(first: int, last: int) -> slice:
    """ccdproc's ``_defitsify_slice`` for one axis of a concrete range."""
    if first <= last:
        return slice(first - 1, last)
    return slice(first - 1, last - 2 if last > 1 else None, -1)


@dataclass(frozen=True, slots=True)
class SectionSource:
    """Where a calibration section comes from: nowhere, a header keyword, or fixed."""

    kind: Literal["none", "header", "fixed", "auto"]
    keyword: str = ""
    section: Section | None = None

    @classmethod
    def parse(cls, text: str) -> SectionSource:
        """Parse ``none``, ``header:KEYWORD`` or a literal section."""
        stripped = text.strip()
        if stripped.lower() == "none":
            return cls("none")
        if stripped.lower().startswith("header:"):
            keyword = stripped.split(":", 1)[1].strip().upper()
            if not re.fullmatch(r"[A-Z0-9_-]{1,8}", keyword):
                raise ValueError(f"{keyword!r} is not a FITS keyword (1-8 of A-Z 0-9 _ -)")
            return cls("header", keyword=keyword)
        return cls("fixed", section=Section.parse(stripped))

    def describe(self) -> str:
        """The setting as written in the config."""
        if self.kind in ("none", "auto"):
            return self.kind
        if self.kind == "header":
            return f"header:{self.keyword}"
        assert self.section is not None
        return self.section.fits_string()
