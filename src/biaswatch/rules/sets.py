"""Sets of bias frames and when they are complete (pure, no I/O).

A set is one camera's frames of one night and one geometry (image shape, segments,
binning and the camera's group_by values): frames of different geometry never
share a master. The completion rule is a pure function of the set's state and
the time, so the service only has to ask :func:`decide` again whenever a frame
arrives or a timer fires.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from biaswatch.rules.nights import night_end

if TYPE_CHECKING:
    from biaswatch.config import CameraSettings, SiteConfig


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """What must be equal for frames to share a master.

    The raw image shape (rows, columns) and binning (x, y); for a frame of several
    segments (image HDUs or amplifiers) each one's name and raw shape; and the
    values of the camera's ``group_by`` keywords ("" when a frame lacks one).
    """

    rows: int
    cols: int
    xbin: int = 1
    ybin: int = 1
    segments: tuple[tuple[str, int, int], ...] = ()  # (name, rows, cols); () for one segment
    modes: tuple[tuple[str, str], ...] = ()  # (keyword, value as written)

    def label(self) -> str:
        """Stable, file-name safe text, columns first as astronomers write sizes.

        ``2080x2048-1x1`` for one image; ``3x2048x4096-1x1-CCD1.CCD2.CCD3`` for three
        segments of one shape; ``-CCDSPEED_FAST`` per group_by keyword. Wherever the
        readable text could hide a difference (a name or value with other characters,
        segments of different shapes, a long list) a digest of the exact values follows.
        """
        parts = [self._shape_part(), f"{self.xbin}x{self.ybin}"]
        exact = True
        if self.segments:
            # '.' joins the names, so a '.' within one (EXTNAME.AMPNAME) is made '_'.
            safe = [_UNSAFE_NAME.sub("_", n) for n, _, _ in self.segments]
            names = ".".join(safe)
            exact = safe == [n for n, _, _ in self.segments]
            if len(names) > _MAX_NAMES:
                names, exact = f"{len(self.segments)}seg", False
            parts.append(names)
            exact = exact and len({(r, c) for _, r, c in self.segments}) == 1
        for keyword, value in self.modes:
            text, same = _safe(f"{keyword}_{value}" if value else f"no{keyword}")
            parts.append(text)
            exact = exact and same
        if not exact:
            parts.append(_digest(repr((self.segments, self.modes))))
        return "-".join(parts)

    def _shape_part(self) -> str:
        if not self.segments:
            return f"{self.cols}x{self.rows}"
        shapes = {(r, c) for _, r, c in self.segments}
        if len(shapes) == 1:
            rows, cols = shapes.pop()
            return f"{len(self.segments)}x{cols}x{rows}"
        return f"{len(self.segments)}seg"


# Names beyond this are summarised: a label is part of a file name (255 bytes on
# ext4 and XFS), which also holds the camera, night and time.
_MAX_NAMES = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


def _safe(text: str) -> tuple[str, bool]:
    """``text`` with characters outside [A-Za-z0-9._-] made '_', and whether it was already."""
    safe = _UNSAFE.sub("_", text)
    return safe, safe == text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def binning_from(values: Mapping[str, object]) -> tuple[int, int]:
    """(x, y) binning from CCDSUM ('1 2'), XBINNING/YBINNING or BINNING ('2x2', '2').

    The first the frame has, in that order; 1 x 1 when none. ``values`` maps each of
    those keywords the frame has to its header value.

    Raises:
        ValueError: the keyword is there but its value is not binning; says which.
    """
    if "CCDSUM" in values:
        return _pair("CCDSUM", values["CCDSUM"], r"\s*(\d+)\s+(\d+)\s*")
    if "XBINNING" in values or "YBINNING" in values:
        return _whole("XBINNING", values.get("XBINNING", 1)), _whole(
            "YBINNING", values.get("YBINNING", 1)
        )
    if "BINNING" in values:
        value = values["BINNING"]
        if isinstance(value, int) and not isinstance(value, bool):
            return _whole("BINNING", value), _whole("BINNING", value)
        return _pair("BINNING", value, r"\s*(\d+)\s*(?:[xX*]\s*(\d+)\s*)?")
    return 1, 1


BINNING_KEYWORDS = ("CCDSUM", "XBINNING", "YBINNING", "BINNING")


def _pair(key: str, value: object, pattern: str) -> tuple[int, int]:
    match = re.fullmatch(pattern, str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{key} = {value!r} is not binning such as {_EXAMPLES[key]}")
    x = _whole(key, match.group(1))
    return x, _whole(key, match.group(2)) if match.group(2) else x


_EXAMPLES = {"CCDSUM": "'1 2' (x then y)", "BINNING": "'2x2' or '2'"}


def _whole(key: str, value: object) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        binning = int(value) if isinstance(value, int | float) else int(str(value))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key} = {value!r} is not a whole number") from None
    if binning < 1:
        raise ValueError(f"{key} = {binning} must be at least 1")
    return binning


def mode_value(value: object) -> str:
    """A group_by keyword's value as text: numbers in one form (2 and 2.0 are one mode)."""
    if value is None or isinstance(value, bool):
        return "" if value is None else ("T" if value else "F")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(frozen=True, slots=True)
class Rules:
    """A camera's completion settings."""

    expected_frames: int
    min_frames: int
    quiet: dt.timedelta


@dataclass(frozen=True, slots=True)
class SetState:
    """What the decision needs to know about one open set."""

    frames: int
    last_arrival: dt.datetime
    night_end: dt.datetime


class Action(enum.Enum):
    """What to do with a set now."""

    WAIT = "wait"
    COMBINE = "combine"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True, slots=True)
class Decision:
    """The action, a reason a person can read, and when to ask again (if waiting)."""

    action: Action
    reason: str
    recheck_at: dt.datetime | None = None


def decide(state: SetState, rules: Rules, now: dt.datetime) -> Decision:
    """Combine when complete, quiet or at night end; insufficient below min_frames."""
    n = state.frames
    if n >= rules.expected_frames:
        return Decision(Action.COMBINE, f"complete: {n} of {rules.expected_frames} frames")
    quiet_until = state.last_arrival + rules.quiet
    enough = n >= rules.min_frames
    if enough and now >= quiet_until:
        minutes = rules.quiet.total_seconds() / 60
        return Decision(Action.COMBINE, f"quiet for {minutes:g} min with {n} frames")
    if now >= state.night_end:
        if enough:
            return Decision(Action.COMBINE, f"night ended with {n} frames")
        return Decision(
            Action.INSUFFICIENT,
            f"night ended with {n} frame(s), fewer than min_frames={rules.min_frames}",
        )
    recheck = min(quiet_until, state.night_end) if enough else state.night_end
    return Decision(Action.WAIT, f"waiting: {n} of {rules.expected_frames} frames", recheck)


def input_digest(hashes: list[str]) -> str:
    """A set's identity: the sha256 of its frames' sorted content hashes."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def decide_set(
    frames: int,
    last_arrival: dt.datetime,
    night: dt.date,
    camera: CameraSettings,
    site: SiteConfig,
    now: dt.datetime,
) -> Decision:
    """:func:`decide` for a camera's set, its night end and rules taken from the config."""
    end = night_end(night, site.zone, site.night_rollover, camera.night_end)
    quiet = dt.timedelta(minutes=camera.quiet_minutes)
    rules = Rules(camera.expected_frames, camera.min_frames, quiet)
    return decide(SetState(frames, last_arrival, end), rules, now)
