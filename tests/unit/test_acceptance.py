"""Accepting or rejecting a master against the camera's recent accepted masters."""

from __future__ import annotations

import math

from biaswatch.rules.acceptance import MIN_BASELINE, judge
from biaswatch.rules.qc import MasterQC


def master(level: float = 0.0, read_noise: float = 5.0, noise: float = 1.6) -> MasterQC:
    """A master of ten frames with this QC."""
    return MasterQC(level, noise, read_noise, read_noise / math.sqrt(10), 0)


BASELINE = [master(0.1 * i, 5.0 + 0.02 * i) for i in range(8)]


def test_a_master_like_the_last_ones_is_accepted() -> None:
    """Level, read noise and structure within the baseline's spread: accepted."""
    verdict = judge(master(0.3, 5.05), BASELINE, sigma=5)
    assert (verdict.state, verdict.reason) == (
        "accepted",
        "within 5 robust sigma of the last 8 masters",
    )


def test_a_drifted_master_is_rejected_with_the_metric_that_moved() -> None:
    """A master whose level moved by 20 ADU is rejected, and the reason names the level."""
    verdict = judge(master(20.0, 5.0), BASELINE, sigma=5)
    assert verdict.state == "rejected"
    assert verdict.reason.startswith("level 20.00 ADU is +")
    assert "from the baseline's 0.35 ADU (limit 5)" in verdict.reason


def test_noisier_and_structured_masters_are_rejected() -> None:
    """A read noise 40% up, or a master three times noisier than its read noise allows."""
    assert judge(master(0.2, 7.0), BASELINE, sigma=5).reason.startswith("read noise 7.00 ADU")
    structured = judge(master(0.2, 5.0, noise=4.8), BASELINE, sigma=5)
    assert structured.state == "rejected" and structured.reason.startswith("structure 3.04")


def test_the_first_masters_are_accepted_without_a_baseline() -> None:
    """With fewer than MIN_BASELINE accepted masters, even an odd one is accepted, and says so."""
    verdict = judge(master(500.0), BASELINE[: MIN_BASELINE - 1], sigma=5)
    assert verdict.state == "accepted"
    assert verdict.reason == "no baseline yet (2 accepted master(s), 3 needed)"
    assert judge(None, BASELINE, sigma=5).state == "accepted"
