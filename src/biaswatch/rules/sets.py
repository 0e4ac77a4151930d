"""Sets of bias frames and when they are complete (pure, no I/O).

A set is one camera's frames of one night and one geometry (image shape and
binning): frames of different geometry never share a master. The completion
rule is a pure function of the set's state and the time, so the service only
has to ask :func:`decide` again whenever a frame arrives or a timer fires.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from biaswatch.rules.nights import night_end

if TYPE_CHECKING:
    from biaswatch.config import CameraSettings, SiteConfig


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """Raw image shape (rows, columns) and binning (x, y)."""

    rows: int
    cols: int
    xbin: int = 1
    ybin: int = 1

    def label(self) -> str:
        """Stable text form, columns first as astronomers write sizes: ``2080x2048-1x1``."""
        return f"{self.cols}x{self.rows}-{self.xbin}x{self.ybin}"


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
