"""FITS section strings such as ``[1:2048, 1:2048]`` (pure, no I/O).

FITS sections are 1-based, inclusive, and list the x (column) range first;
numpy slices are 0-based, half-open, and index rows first. Everything that
touches a section goes through :class:`Section` so that conversion lives in
one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


@dataclass(frozen=True, slots=True)
class Section:
    """A rectangular FITS section, 1-based and inclusive, x first."""

    x1: int
    x2: int
    y1: int
    y2: int

    @classmethod
    def parse(cls, text: str) -> Section:
        """Parse ``[x1:x2,y1:y2]`` (spaces allowed); raise ValueError otherwise."""
        match = _SECTION.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a FITS section like '[1:2048,1:2048]'")
        x1, x2, y1, y2 = (int(v) for v in match.groups())
        if min(x1, x2, y1, y2) < 1:
            raise ValueError(f"{text!r}: FITS sections start at 1")
        return cls(x1, x2, y1, y2)

    def fits_string(self) -> str:
        """The section in FITS notation without spaces, as ccdproc expects it."""
        return f"[{self.x1}:{self.x2},{self.y1}:{self.y2}]"

    def shape(self) -> tuple[int, int]:
        """The (rows, columns) of the data this section selects."""
        return abs(self.y2 - self.y1) + 1, abs(self.x2 - self.x1) + 1

    def problem_with(self, shape: tuple[int, ...]) -> str | None:
        """Why this section does not fit an image of ``shape`` (rows, cols), or None."""
        rows, cols = shape[-2], shape[-1]
        if max(self.x1, self.x2) > cols or max(self.y1, self.y2) > rows:
            return f"{self.fits_string()} does not fit an image of {cols} x {rows} (x by y)"
        return None


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
