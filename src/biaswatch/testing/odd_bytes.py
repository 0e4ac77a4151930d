"""Byte edits astropy refuses to make: FITS from biaswatch.testing with odd cards written in.

astropy will not write a card holding a control character, a negative NAXISn
or an unknown BITPIX, and appending 10,000 cards through it is quadratic; the
files of issue 11 are made by editing the bytes of a valid file instead.
"""

from __future__ import annotations

BLOCK = 2880  # FITS 4.0 sect. 3.1
CARD = 80


def with_value(content: bytes, keyword: str, value: bytes) -> bytes:
    """``content`` with ``keyword``'s first card's value field replaced by ``value`` (raw)."""
    start = _card_at(content, keyword)
    card = f"{keyword:<8}= ".encode() + value
    return content[:start] + card.ljust(CARD) + content[start + CARD :]


def with_cards(content: bytes, count: int) -> bytes:
    """``content`` (one HDU) with ``count`` numbered cards ``Xnnnnnnn = n`` added before END."""
    end = _card_at(content, "END")
    data_start = (end // BLOCK + 1) * BLOCK
    extra = b"".join(f"{f'X{i:07d}':<8}= {i:>20}".encode().ljust(CARD) for i in range(count))
    header = content[:end] + extra + b"END".ljust(CARD)
    header += b" " * (-len(header) % BLOCK)
    return header + content[data_start:]


def _card_at(content: bytes, keyword: str) -> int:
    """Offset of ``keyword``'s first card in the primary header."""
    name = keyword.encode().ljust(8)
    for offset in range(0, len(content), CARD):
        if content[offset : offset + 8] == name:
            return offset
        if content[offset : offset + 8] == b"END     ":
            break
    raise ValueError(f"{keyword} is not in the primary header")
