"""Which master a frame taken at a time should use, and why every other was not (pure).

``explain_match`` takes frozen candidate rows and returns one :class:`MatchDecision`
per candidate: ``masters --for`` prints the chosen one, ``--explain`` all of them. A
candidate is, in this order: refused by its verdict (not accepted); of another
configuration (``--like``); too far from the frame's time (``max_age_days``); or,
among those left, the one nearest the frame's night (an earlier night wins a tie,
then the higher sequence), the others being farther in time than it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["chosen", "rejected", "other_configuration", "too_old", "farther"]
_DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class MatchCandidate:
    """A master as the matcher sees it: no file, no catalog."""

    path: str
    night: dt.date
    sequence: int
    state: str
    configuration: str
    # When the master's night began (rules/nights.py night_start): its age is
    # counted from there, so a master is never younger than it says.
    start: dt.datetime


@dataclass(frozen=True)
class MatchDecision:
    """What became of one candidate, and the reason in words."""

    candidate: MatchCandidate
    outcome: Outcome
    reason: str
    # Days from the candidate's night start to the frame's time (negative: after it).
    age_days: float


@dataclass(frozen=True)
class MatchRequest:
    """What is matched: the frame's time and night, configuration, and the age limit."""

    when: dt.datetime
    night: dt.date
    configuration: str | None
    max_age_days: float


def explain_match(
    candidates: Sequence[MatchCandidate], request: MatchRequest
) -> tuple[MatchDecision, ...]:
    """Every candidate's decision, in the order given; at most one is ``chosen``."""
    refusals = [_refusal(c, request) for c in candidates]
    usable = [c for c, refusal in zip(candidates, refusals, strict=True) if refusal is None]
    chosen = min(usable, key=lambda c: _distance(c, request.night), default=None)
    decisions = []
    for candidate, refusal in zip(candidates, refusals, strict=True):
        age = _age_days(candidate, request.when)
        if refusal is not None:
            decisions.append(MatchDecision(candidate, refusal[0], refusal[1], age))
        elif candidate is chosen:
            why = f"nearest usable: {_nights(candidate, request.night)}"
            decisions.append(MatchDecision(candidate, "chosen", why, age))
        else:
            assert chosen is not None  # a usable candidate implies a chosen one
            why = (
                f"farther in time: {_nights(candidate, request.night)}, "
                f"the chosen one {_nights(chosen, request.night)}"
            )
            decisions.append(MatchDecision(candidate, "farther", why, age))
    return tuple(decisions)


def chosen_of(decisions: Sequence[MatchDecision]) -> MatchDecision | None:
    """The chosen decision, or None when no candidate fits."""
    return next((d for d in decisions if d.outcome == "chosen"), None)


def nearest_too_old(decisions: Sequence[MatchDecision]) -> MatchDecision | None:
    """Of the candidates refused only for their age, the one nearest the frame's time."""
    old = [d for d in decisions if d.outcome == "too_old"]
    return min(old, key=lambda d: abs(d.age_days), default=None)


def _refusal(candidate: MatchCandidate, request: MatchRequest) -> tuple[Outcome, str] | None:
    if candidate.state != "accepted":
        return "rejected", f"verdict: {candidate.state}"
    wanted = request.configuration
    if wanted is not None and candidate.configuration != wanted:
        return "other_configuration", (
            f"configuration {candidate.configuration}, the frame's is {wanted}"
        )
    age = _age_days(candidate, request.when)
    if abs(age) > request.max_age_days:
        side = "older" if age > 0 else "newer"
        return "too_old", (
            f"{abs(age):.1f} days {side} than the frame's time "
            f"(max_age_days = {request.max_age_days:g})"
        )
    return None


def _age_days(candidate: MatchCandidate, when: dt.datetime) -> float:
    return (when - candidate.start).total_seconds() / _DAY_SECONDS


def _distance(candidate: MatchCandidate, night: dt.date) -> tuple[int, bool, int]:
    # An earlier night wins a tie: a master made before the frame is the usual choice.
    gap = (candidate.night - night).days
    return abs(gap), gap > 0, -candidate.sequence


def _nights(candidate: MatchCandidate, night: dt.date) -> str:
    gap = (candidate.night - night).days
    if gap == 0:
        return "the frame's night"
    side = "before" if gap < 0 else "after"
    return f"{abs(gap)} night{'s' if abs(gap) != 1 else ''} {side} the frame's"
