"""QC of a master per segment and per amplifier region, and their aggregate (issue 13).

Each segment (image HDU) of a master gets today's MasterQC (rules/qc.master_qc on its
image and strided samples of its inputs). When the first input's segment header
names amplifier regions (``BWNAMP``, ``BWAN<i>`` name, ``BWAS<i>`` section in the
calibrated image, FITS 1-based, written by frames/), each region gets its own
MasterQC too and the segment's is their aggregate. The master's own QC (the primary
header's QC_* cards, CombineResult.quality) aggregates all of them: level = median
of the levels, noise, read noise and expected noise = the largest, hot columns
summed, rejected fraction = the mean (the shared contract of issue 13): one bad
amplifier shows in the aggregate's noise, and by name in its own cards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.combine.sources import sample_rows
from biaswatch.errors import CombineFailed
from biaswatch.rules.qc import (
    SAMPLE_PIXELS,
    MasterQC,
    clipped_fraction,
    master_cards,
    master_qc,
    master_qc_from_header,
)
from biaswatch.rules.segment_cards import amplifier_qc_cards
from biaswatch.sections import Section
from biaswatch.settings import CombineSettings

# Read noise is measured on this many inputs (two pairs): enough for a median of
# two estimates, and cheap next to the combine (strided reads of local copies).
QC_INPUTS = 4

Window = tuple[slice, slice]


@dataclass(frozen=True, slots=True)
class SegmentCards:
    """One segment's QC: its own (aggregate of its amplifiers, if any) and theirs."""

    quality: MasterQC
    amplifiers: tuple[tuple[str, MasterQC], ...] = ()

    def cards(self) -> list[tuple[str, object, str]]:
        """QC_* cards, then QCA<i>NAM/LEV/NOI/RON/REX/HOT/REJ per amplifier region.

        The amplifier cards come from rules.segment_cards, whose reader gives them
        back after a crash: one writer, one reader.
        """
        cards: list[tuple[str, object, str]] = list(master_cards(self.quality))
        for i, (name, qc) in enumerate(self.amplifiers, start=1):
            cards.extend(amplifier_qc_cards(i, name, qc))
        return cards


def aggregate_qc(qcs: Sequence[MasterQC]) -> MasterQC:
    """The contract's aggregate of several regions' QC (see the module's docstring)."""

    def largest(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return max(finite) if finite else math.nan

    return MasterQC(
        level=float(np.median([q.level for q in qcs])),
        noise=largest([q.noise for q in qcs]),
        read_noise=largest([q.read_noise for q in qcs]),
        expected_noise=largest([q.expected_noise for q in qcs]),
        hot_columns=sum(q.hot_columns for q in qcs),
        rejected_fraction=float(np.mean([q.rejected_fraction for q in qcs])),
    )


def as_written(qc: MasterQC) -> MasterQC:
    """The QC as its header cards round it (what a master adopted later reads back)."""
    read = master_qc_from_header({key: value for key, value, _ in master_cards(qc)})
    assert read is not None  # master_cards always writes QC_LEVEL
    return read


def amplifier_windows(header: Mapping[str, object], shape: tuple[int, int]) -> list[Window]:
    """The (rows, cols) slices of the BWAS<i> sections of a calibrated header, in order.

    Empty when the header names no amplifiers. CombineFailed for a section that is not
    ``[x1:x2,y1:y2]`` inside the image: the work file's writer and reader disagree.
    """
    count = header.get("BWNAMP", 0)
    windows = []
    for i in range(1, int(count) + 1 if isinstance(count, int) else 1):
        text = str(header.get(f"BWAS{i}", ""))
        try:  # the one section parser (sections.py), as the work file's writer used
            section = Section.parse(text)
        except ValueError as exc:
            raise CombineFailed(f"amplifier section BWAS{i}: {exc}") from None
        if (problem := section.problem_with(shape)) is not None:
            raise CombineFailed(f"amplifier section BWAS{i}: {problem}")
        windows.append(section.slices(shape))
    return windows


def amplifier_names(header: Mapping[str, object]) -> list[str]:
    """BWAN<i> of a calibrated header, i = 1..BWNAMP."""
    count = header.get("BWNAMP", 0)
    n = int(count) if isinstance(count, int) else 0
    return [str(header.get(f"BWAN{i}", f"AMP{i}")).strip() for i in range(1, n + 1)]


def _stride(values: int, budget: int) -> int:
    """The row and column stride that leaves at most about ``budget`` of ``values``."""
    return max(1, math.ceil(math.sqrt(values / budget)))


def region_qc(
    data: np.ndarray,
    inputs: Sequence[str],
    hdu: int,
    settings: CombineSettings,
    window: Window | None = None,
) -> MasterQC:
    """MasterQC of ``data`` (the combined region) from strided samples of its inputs.

    ``window`` selects the same region of each input's HDU ``hdu``; None the whole.
    """
    where = window or (slice(None), slice(None))
    region = data[where]
    stride = _stride(region.size, SAMPLE_PIXELS)
    # The clipped fraction looks at every input: ~SAMPLE_PIXELS values in all, so
    # its float64 temporaries stay a few MB however many frames there are.
    stack_stride = _stride(region.size * len(inputs), SAMPLE_PIXELS)
    pairs, stack = [], []
    for index, path in enumerate(inputs):
        if index < QC_INPUTS:
            pairs.append(_input_sample(path, hdu, where, stride))
        stack.append(_input_sample(path, hdu, where, stack_stride))
    rejected = (
        clipped_fraction(
            np.stack(stack),
            settings.sigma_low,
            settings.sigma_high,
            settings.center,
            settings.deviation,
        )
        if settings.sigma_clip
        else 0.0
    )
    return master_qc(region, pairs, len(inputs), rejected)


def _input_sample(path: str, hdu: int, where: Window, stride: int) -> np.ndarray:
    """``image[where][::stride, ::stride]`` of an input's HDU ``hdu``, float32.

    Plain float32 images (the service's work files) are read row by row (sample_rows);
    anything else through astropy's memmap.
    """
    sampled = sample_rows(Path(path), hdu, where, stride)
    if sampled is not None:
        return sampled
    with fits.open(path, memmap=True) as hdul:
        return np.array(hdul[hdu].data[where][::stride, ::stride], dtype=np.float32)


def segment_cards(
    data: np.ndarray,
    inputs: Sequence[str],
    header: fits.Header,
    hdu: int,
    settings: CombineSettings,
) -> SegmentCards:
    """One segment's QC, per amplifier region when its first input's ``header`` names them."""
    windows = amplifier_windows(header, data.shape)
    if not windows:
        return SegmentCards(as_written(region_qc(data, inputs, hdu, settings)))
    amps = tuple(
        (name, as_written(region_qc(data, inputs, hdu, settings, window)))
        for name, window in zip(amplifier_names(header), windows, strict=True)
    )
    return SegmentCards(as_written(aggregate_qc([qc for _, qc in amps])), amps)
