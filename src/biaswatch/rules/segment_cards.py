"""The QC of a master's segments in its headers: written by the combine, read at adoption.

Issue 13's contract: each segment image HDU of an MEF master carries its own QC_*
cards (rules/qc.py master_cards); amplifier regions of one image carry QCA<i>NAM,
QCA<i>LEV, QCA<i>NOI, QCA<i>RON, QCA<i>REX, QCA<i>HOT and QCA<i>REJ in that image's
header. A master adopted after a crash has only these cards left of its QC
(publish/master.py quality_on_disk). Pure: header mappings in, QC out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from biaswatch.rules.qc import MasterQC, master_qc_from_header

# Amplifier regions of one image carry their QC as indexed cards (issue 13's contract):
# QCA<i>NAM is the name, then these, i = 1..n as BWAN<i>. <i> of up to two digits keeps
# every keyword within FITS's 8 characters.
_AMPLIFIER_CARDS = {
    "level": "LEV",
    "noise": "NOI",
    "read_noise": "RON",
    "expected_noise": "REX",
}


def amplifier_qc_cards(index: int, name: str, qc: MasterQC) -> list[tuple[str, object, str]]:
    """FITS cards of amplifier ``index`` (1-based) of an image: QCA<i>NAM, QCA<i>LEV, ..."""
    key = f"QCA{index}"
    cards: list[tuple[str, object, str]] = [
        (f"{key}NAM", name, "amplifier of the QCA cards below"),
        (f"{key}LEV", round(qc.level, 4), f"[adu] {name} median level"),
        (f"{key}NOI", round(qc.noise, 4), f"[adu] {name} master robust noise"),
        (f"{key}RON", round(qc.read_noise, 4), f"[adu] {name} read noise from input pairs"),
        (f"{key}REX", round(qc.expected_noise, 4), f"[adu] {name} read noise / sqrt(NCOMBINE)"),
        (f"{key}HOT", qc.hot_columns, f"{name} columns standing out by 5 sigma"),
        (f"{key}REJ", round(qc.rejected_fraction, 6), f"{name} fraction of pixels clipped"),
    ]
    return [c for c in cards if not isinstance(c[1], float) or math.isfinite(c[1])]


def amplifier_qc_from_header(header: Mapping[str, object]) -> list[tuple[str, MasterQC]]:
    """The (name, QC) of each amplifier region an image's header lists (QCA<i>*), in order."""
    found = []
    index = 1
    while f"QCA{index}NAM" in header:
        key = f"QCA{index}"
        values = {n: _card_float(header.get(key + card)) for n, card in _AMPLIFIER_CARDS.items()}
        hot = header.get(key + "HOT", 0)
        found.append(
            (
                str(header[key + "NAM"]),
                MasterQC(
                    **values,
                    hot_columns=int(hot) if isinstance(hot, int | float) else 0,
                    rejected_fraction=_card_float(header.get(key + "REJ", 0.0)),
                ),
            )
        )
        index += 1
    return found


def segments_qc_from_headers(
    headers: Sequence[Mapping[str, object]],
) -> tuple[tuple[str, MasterQC], ...]:
    """Each segment's QC from a master's HDU headers (primary first), as the combine wrote it.

    An MEF master's segment image HDUs (not their ``_MASK``/``_UNCERT``) carry QC_* cards;
    amplifier regions of an image carry QCA<i>* cards, named ``EXTNAME.AMP`` in an MEF.
    A master of one segment gives ().
    """
    segments: list[tuple[str, MasterQC]] = []
    for position, header in enumerate(headers):
        extname = str(header.get("EXTNAME", "")) if position else ""
        if extname.endswith(("_MASK", "_UNCERT")) or extname in ("MASK", "UNCERT"):
            continue
        amplifiers = amplifier_qc_from_header(header)
        if amplifiers:
            segments += [(_segment_name(extname, name), qc) for name, qc in amplifiers]
        elif extname and (qc := master_qc_from_header(header)) is not None:
            segments.append((extname, qc))
    return tuple(segments)


def _segment_name(extname: str, amplifier: str) -> str:
    """``EXTNAME.AMP`` for an amplifier of an MEF segment (QCA<i>NAM holding either form)."""
    if not extname or amplifier.startswith(f"{extname}."):
        return amplifier
    return f"{extname}.{amplifier}"


def _card_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan
