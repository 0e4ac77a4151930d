"""The pure matcher behind ``masters --for`` and ``--explain`` (rules/matching.py)."""

from __future__ import annotations

import datetime as dt

from biaswatch.rules.matching import (
    MatchCandidate,
    MatchRequest,
    chosen_of,
    explain_match,
    nearest_too_old,
)

WHEN = dt.datetime(2025, 3, 11, 3, 0, tzinfo=dt.UTC)
NIGHT = dt.date(2025, 3, 10)


def candidate(
    night: dt.date, state: str = "accepted", label: str = "56x40-1x1", sequence: int = 1
) -> MatchCandidate:
    """A master of ``night`` that began at 18:00 UTC on its date."""
    start = dt.datetime.combine(night, dt.time(18, 0), tzinfo=dt.UTC)
    return MatchCandidate(f"bias_{night}_{sequence}.fits", night, sequence, state, label, start)


def request(configuration: str | None = "56x40-1x1", max_age_days: float = 30) -> MatchRequest:
    """A frame of 2025-03-11T03:00Z (night 2025-03-10), optionally of a configuration."""
    return MatchRequest(WHEN, NIGHT, configuration, max_age_days)


def outcomes(*candidates: MatchCandidate, asked: MatchRequest | None = None) -> list[str]:
    """Each candidate's outcome, in order."""
    return [d.outcome for d in explain_match(candidates, asked or request())]


def test_the_nearest_accepted_master_is_chosen_and_the_others_are_farther() -> None:
    """Of three usable masters, the one of the frame's night is chosen; the rest are farther."""
    decisions = explain_match(
        [
            candidate(NIGHT - dt.timedelta(days=3)),
            candidate(NIGHT),
            candidate(NIGHT + dt.timedelta(days=2)),
        ],
        request(),
    )
    assert [d.outcome for d in decisions] == ["farther", "chosen", "farther"]
    assert "3 nights before the frame's" in decisions[0].reason
    assert "the chosen one the frame's night" in decisions[0].reason
    chosen = chosen_of(decisions)
    assert chosen is not None and chosen.candidate.night == NIGHT


def test_an_earlier_night_wins_a_tie_then_the_higher_sequence() -> None:
    """One night before and after are as near: the earlier wins, its higher sequence first."""
    before, after = NIGHT - dt.timedelta(days=1), NIGHT + dt.timedelta(days=1)
    assert outcomes(
        candidate(after), candidate(before, sequence=1), candidate(before, sequence=2)
    ) == ["farther", "farther", "chosen"]


def test_a_rejected_master_is_refused_for_its_verdict_even_when_nearest() -> None:
    """A rejected master of the frame's night loses to an accepted one of two nights before."""
    decisions = explain_match(
        [candidate(NIGHT, state="rejected"), candidate(NIGHT - dt.timedelta(days=2))], request()
    )
    assert [d.outcome for d in decisions] == ["rejected", "chosen"]
    assert decisions[0].reason == "verdict: rejected"


def test_a_master_of_another_configuration_is_named_with_both_labels() -> None:
    """With a configuration asked, a master of another is refused, showing both labels."""
    decisions = explain_match([candidate(NIGHT, label="56x40-2x1")], request("56x40-1x1"))
    assert [d.outcome for d in decisions] == ["other_configuration"]
    assert decisions[0].reason == "configuration 56x40-2x1, the frame's is 56x40-1x1"
    assert chosen_of(decisions) is None


def test_without_a_configuration_every_label_may_be_chosen() -> None:
    """No --like: a master of any configuration is usable."""
    assert outcomes(candidate(NIGHT, label="56x40-2x1"), asked=request(None)) == ["chosen"]


def test_a_master_older_than_max_age_days_is_never_chosen() -> None:
    """A master 41.4 days old with max_age_days 30 is too old, and no master is chosen."""
    old = candidate(NIGHT - dt.timedelta(days=41))
    decisions = explain_match([old], request())
    assert [d.outcome for d in decisions] == ["too_old"]
    # 2025-01-28T18:00Z to 2025-03-11T03:00Z: 41 days and 9 hours
    assert decisions[0].reason == "41.4 days older than the frame's time (max_age_days = 30)"
    assert chosen_of(decisions) is None
    nearest = nearest_too_old(decisions)
    assert nearest is not None and nearest.candidate == old


def test_a_larger_max_age_days_admits_the_old_master() -> None:
    """The same 41-day-old master is chosen when max_age_days is 60."""
    assert outcomes(candidate(NIGHT - dt.timedelta(days=41)), asked=request(max_age_days=60)) == [
        "chosen"
    ]


def test_a_master_far_after_the_frame_is_too_new_as_well() -> None:
    """The validity window holds both ways: a master 40 days after the frame is refused."""
    decisions = explain_match([candidate(NIGHT + dt.timedelta(days=40))], request())
    assert decisions[0].outcome == "too_old"
    assert "days newer than the frame's time" in decisions[0].reason


def test_nearest_too_old_is_the_one_nearest_the_frame() -> None:
    """Of two masters refused for age, the nearer in time is the one the message names."""
    far, near = candidate(NIGHT - dt.timedelta(days=90)), candidate(NIGHT - dt.timedelta(days=35))
    nearest = nearest_too_old(explain_match([far, near], request()))
    assert nearest is not None and nearest.candidate == near


def test_no_candidates_no_decisions() -> None:
    """An empty catalog gives no decisions and nothing chosen."""
    assert explain_match([], request()) == ()
    assert chosen_of(()) is None and nearest_too_old(()) is None
