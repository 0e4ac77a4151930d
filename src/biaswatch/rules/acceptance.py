"""Is a new master like the camera's recent ones? Pure: QC in, a verdict out.

Every master is a candidate first. It is compared with the camera's last
accepted masters of the same geometry (a rolling baseline, not hand-set
limits): its level, read noise and structure (its own noise over the noise
a flat master of its read noise would have) must each lie within ``sigma``
robust sigmas of theirs. Within them it is accepted and ``latest.fits`` moves
to it; beyond them it is rejected, kept on disk, and ``latest.fits`` stays on
the last accepted master. A person may overrule either way (cli/verdict.py).

A master of several segments (image HDUs or amplifiers) is also judged segment by
segment, each against the same segment of the baseline, as ESO checks read noise
per output port and Rubin's cp_verify noise and level per amplifier: one bad
amplifier among four hardly moves the aggregate, and the reason names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from biaswatch.rules.qc import MAD_TO_SIGMA, MasterQC

# The baseline: the last BASELINE accepted masters; fewer than MIN_BASELINE say
# too little about what is normal, so the first masters are accepted as they come.
BASELINE = 10
MIN_BASELINE = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accepted or rejected, and why."""

    state: Literal["accepted", "rejected"]
    reason: str


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    unit: str
    value: float
    history: list[float]
    floor: float  # the smallest spread that is meaningful for this metric


def judge(
    candidate: MasterQC | None,
    baseline: Sequence[MasterQC],
    sigma: float,
    segments: Sequence[tuple[str, MasterQC]] = (),
    segment_baseline: Sequence[Mapping[str, MasterQC]] = (),
) -> Verdict:
    """Compare a candidate's QC with the baseline (newest accepted masters first).

    A master of several segments (image HDUs or amplifiers) is also judged segment by
    segment against the same segment of the baseline masters (``segment_baseline``,
    one mapping per master, newest first): one bad amplifier among four barely moves
    the aggregate, and the reason names it.
    """
    if candidate is None:
        return Verdict("accepted", "no QC measured: accepted without comparison")
    usable = _usable(baseline)
    if len(usable) < MIN_BASELINE:
        return Verdict(
            "accepted",
            f"no baseline yet ({len(usable)} accepted master(s), {MIN_BASELINE} needed)",
        )
    beyond = _beyond_all(candidate, usable, sigma)
    for name, quality in segments:
        history = _usable([m[name] for m in segment_baseline[:BASELINE] if name in m])
        if len(history) >= MIN_BASELINE:
            beyond += [f"segment {name}: {text}" for text in _beyond_all(quality, history, sigma)]
    if beyond:
        return Verdict("rejected", "; ".join(beyond))
    return Verdict("accepted", f"within {sigma:g} robust sigma of the last {len(usable)} masters")


def _usable(baseline: Sequence[MasterQC]) -> list[MasterQC]:
    return [q for q in baseline[:BASELINE] if math.isfinite(q.read_noise)]


def _beyond_all(candidate: MasterQC, usable: Sequence[MasterQC], sigma: float) -> list[str]:
    """Why the candidate's level, read noise or structure is beyond the baseline's."""
    read_noise = float(np.median([q.read_noise for q in usable]))
    metrics = [
        # Levels: a shift under a quarter of the read noise is below any frame's noise.
        _Metric("level", " ADU", candidate.level, [q.level for q in usable], read_noise / 4),
        # Read noise is measured to a few per cent from two pairs of ~1M pixels.
        _Metric(
            "read noise",
            " ADU",
            candidate.read_noise,
            [q.read_noise for q in usable],
            0.05 * read_noise,
        ),
        # Structure: noise over expected noise is 1 for a flat master; 10% is noise.
        _Metric("structure", "", _structure(candidate), [_structure(q) for q in usable], 0.1),
    ]
    return [text for m in metrics if (text := _beyond(m, sigma)) is not None]


def _structure(qc: MasterQC) -> float:
    if not (math.isfinite(qc.expected_noise) and qc.expected_noise > 0):
        return math.nan
    return qc.noise / qc.expected_noise


def _beyond(metric: _Metric, sigma: float) -> str | None:
    history = [v for v in metric.history if math.isfinite(v)]
    if not history or not math.isfinite(metric.value):
        return None
    centre = float(np.median(history))
    spread = float(MAD_TO_SIGMA * np.median(np.abs(np.asarray(history) - centre)))
    scale = max(spread, metric.floor)
    off = (metric.value - centre) / scale
    if abs(off) <= sigma:
        return None
    return (
        f"{metric.name} {metric.value:.2f}{metric.unit} is {off:+.1f} robust sigma from the "
        f"baseline's {centre:.2f}{metric.unit} (limit {sigma:g})"
    )
