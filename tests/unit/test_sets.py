"""Set completion: complete, quiet, night end, insufficient, and when to ask again."""

from __future__ import annotations

import datetime as dt

import pytest

from biaswatch.rules.sets import Action, FrameGeometry, Rules, SetState, decide, input_digest

T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
END = T0 + dt.timedelta(hours=12)
RULES = Rules(expected_frames=10, min_frames=3, quiet=dt.timedelta(minutes=30))


def minutes(m: float) -> dt.datetime:
    """T0 plus ``m`` minutes."""
    return T0 + dt.timedelta(minutes=m)


@pytest.mark.parametrize(
    ("frames", "now", "action", "reason"),
    [
        (10, minutes(0), Action.COMBINE, "complete: 10 of 10 frames"),
        (12, minutes(0), Action.COMBINE, "complete: 12 of 10 frames"),
        (5, minutes(29), Action.WAIT, "waiting: 5 of 10 frames"),
        (5, minutes(30), Action.COMBINE, "quiet for 30 min with 5 frames"),
        (3, minutes(45), Action.COMBINE, "quiet for 30 min with 3 frames"),
        (2, minutes(45), Action.WAIT, "waiting: 2 of 10 frames"),
        (2, END, Action.INSUFFICIENT, "night ended with 2 frame(s), fewer than min_frames=3"),
        (0, END, Action.INSUFFICIENT, "night ended with 0 frame(s), fewer than min_frames=3"),
    ],
)
def test_decide(frames: int, now: dt.datetime, action: Action, reason: str) -> None:
    """A set combines at expected_frames, after quiet_minutes with min_frames, else waits."""
    decision = decide(SetState(frames, T0, END), RULES, now)
    assert (decision.action, decision.reason) == (action, reason)


def test_night_end_combines_what_is_left() -> None:
    """At night end a set with at least min_frames combines even if not quiet yet."""
    state = SetState(4, END - dt.timedelta(minutes=1), END)
    decision = decide(state, RULES, END)
    assert (decision.action, decision.reason) == (Action.COMBINE, "night ended with 4 frames")


def test_recheck_is_the_quiet_deadline_when_enough_frames() -> None:
    """A waiting set with min_frames is checked again when its quiet period ends."""
    decision = decide(SetState(4, T0, END), RULES, minutes(1))
    assert decision.recheck_at == minutes(30)


def test_recheck_is_night_end_when_too_few_frames() -> None:
    """A waiting set below min_frames is checked again at night end only."""
    decision = decide(SetState(2, T0, END), RULES, minutes(1))
    assert decision.recheck_at == END


def test_recheck_never_after_night_end() -> None:
    """The quiet deadline is capped at night end."""
    state = SetState(4, END - dt.timedelta(minutes=5), END)
    decision = decide(state, RULES, END - dt.timedelta(minutes=1))
    assert decision.recheck_at == END


def test_geometry_label_is_columns_by_rows_then_binning() -> None:
    """A geometry's label reads columns x rows, then x and y binning."""
    assert FrameGeometry(rows=2048, cols=2080, xbin=2, ybin=1).label() == "2080x2048-2x1"


def test_input_digest_ignores_order() -> None:
    """The digest of a set depends on its frames, not their order."""
    assert input_digest(["b", "a", "c"]) == input_digest(["c", "b", "a"])
    assert input_digest(["a", "b"]) != input_digest(["a", "c"])


def test_segment_labels_differ_where_the_text_could_hide_it() -> None:
    """Names joined by '.' that contain '.', or segments of different shapes, get a digest."""
    a = FrameGeometry(4, 4, segments=(("A.B", 4, 4), ("C", 4, 4))).label()
    b = FrameGeometry(4, 4, segments=(("A", 4, 4), ("B.C", 4, 4))).label()
    mixed = FrameGeometry(4, 4, segments=(("A", 4, 4), ("B", 4, 6))).label()
    assert a != b
    assert a.startswith("2x4x4-1x1-A_B.C-")
    assert mixed.startswith("2seg-1x1-A.B-")


def test_long_segment_lists_are_summarised() -> None:
    """Sixteen long amplifier names are summarised as a count and a digest: a short file name."""
    segments = tuple((f"AMPLIFIER{i:02d}", 100, 100) for i in range(16))
    label = FrameGeometry(100, 100, segments=segments).label()
    assert label.startswith("16x100x100-1x1-16seg-")
    assert len(label) < 40
