"""Segments: the image regions of a calibrated work file, each combined on its own.

A calibrated work file (written by frames/, issue 13) is either one image (the
primary HDU: one segment with no name, as before issue 13), or an empty primary
followed by one float32 image extension per detector segment, named by EXTNAME
(``HDU<index>`` when it has none). Amplifiers within one image are not segments
here: they share one combined image, and only their QC is per amplifier
(segment_qc.py).

The segments are combined one after another: each combine reads its bands of every
file and holds its results, and the results of the earlier segments count against
mem_limit while the next one runs (engine.band_rows's ``held``), so the whole
master's combine stays within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from biaswatch.combine.planes import Combined, SegmentHDU
from biaswatch.errors import CombineFailed

if TYPE_CHECKING:
    from biaswatch.settings import CombineSettings


def segments_of(path: Path) -> tuple[SegmentHDU, ...]:
    """The image segments of a calibrated work file, in file order.

    One 2-D image anywhere (the primary, or a lone extension) is one segment with no
    name; several are named by EXTNAME, else ``HDU<index>``. CombineFailed when the
    file cannot be read or holds no 2-D image.
    """
    from astropy.io import fits

    found: list[tuple[str, int, tuple[int, int]]] = []
    try:
        with fits.open(path, memmap=False) as hdul:
            for index, hdu in enumerate(hdul):
                if hdu.is_image and len(hdu.shape) == 2 and min(hdu.shape) >= 1:
                    name = str(hdu.header.get("EXTNAME", "") or "").strip()
                    rows, cols = (int(n) for n in hdu.shape)
                    found.append((name or f"HDU{index}", index, (rows, cols)))
    except (OSError, ValueError, TypeError, KeyError, IndexError, fits.VerifyError) as exc:
        raise CombineFailed(f"{path}: cannot read its image HDUs: {exc}") from exc
    if not found:
        raise CombineFailed(f"{path}: holds no 2-D image to combine")
    if len(found) == 1:
        _, index, shape = found[0]
        return (SegmentHDU("", index, shape),)
    return tuple(SegmentHDU(name, index, shape) for name, index, shape in found)


def common_segments(paths: Sequence[Path]) -> tuple[SegmentHDU, ...]:
    """The segments every input shares; CombineFailed naming the first that differs.

    A segment missing, renamed, moved or shaped differently in one input makes the set
    fail with that input and both layouts named: its frames cannot be combined pixel by
    pixel.
    """
    if not paths:
        raise CombineFailed("no frames to combine")
    first = segments_of(Path(paths[0]))
    for path in paths[1:]:
        these = segments_of(Path(path))
        if these != first:
            raise CombineFailed(
                f"segments differ: {paths[0]} has {describe_segments(first)} but {path} has "
                f"{describe_segments(these)}"
            )
    return first


def describe_segments(segments: Sequence[SegmentHDU]) -> str:
    """A short text of a layout: ``AMP1 2048x4096, AMP2 2048x4096`` (rows x columns)."""
    return ", ".join(
        f"{s.name or 'image'} (HDU {s.hdu}) {s.shape[0]}x{s.shape[1]}" for s in segments
    )


def combine_segments(
    paths: Sequence[Path], settings: CombineSettings, mem_limit: int
) -> list[tuple[SegmentHDU, Combined]]:
    """Combine every segment of the inputs, one after another, within mem_limit.

    MASK and UNCERT are computed with each image when ``settings.uncertainty``.
    """
    from biaswatch.combine.engine import combine_planes  # the kernel: only where combines run

    segments = common_segments(paths)
    done: list[tuple[SegmentHDU, Combined]] = []
    held = 0
    for segment in segments:
        combined = combine_planes(
            paths, settings, mem_limit, segment.hdu, errors=settings.uncertainty, held=held
        )
        held += combined.nbytes
        done.append((segment, combined))
    return done
