"""File names as bytes: stored losslessly, shown escaped.

A POSIX file name is any byte sequence without '/' or NUL; Python gives the
bytes that are not UTF-8 to ``str`` as lone surrogates (PEP 383,
``os.fsdecode``). SQLite will not take such a ``str`` (it binds text as UTF-8
and ``sqlite3`` raises UnicodeEncodeError), so a name that is not UTF-8 is bound
as a BLOB of its bytes: a column of TEXT affinity keeps a BLOB as a BLOB
(sqlite.org/datatype3.html, section 3), equality and UNIQUE compare its bytes,
and :func:`register_decoder` turns it back into the same ``str``. Every other
name stays TEXT, as before, so older catalogs need no migration.

People see names through :func:`shown` (undecodable bytes as ``\\xff``) and
terminals through :func:`for_terminal` (control characters escaped too, so a
name cannot move the cursor or recolour an operator's terminal).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

# Catalog connections made with this see TEXT columns through the decoder below.
DETECT_TYPES = sqlite3.PARSE_DECLTYPES


def bound(path: str | Path) -> str | bytes:
    """What to bind in SQL for a file path: its text, or its bytes if not UTF-8."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def _decode(value: bytes) -> str:
    # TEXT values arrive as their UTF-8 bytes and decode as before; a BLOB that
    # bound() stored decodes to the very str it came from (surrogateescape).
    return os.fsdecode(value)


def register_decoder() -> None:
    """Decode TEXT columns (with DETECT_TYPES) so BLOB-stored names come back as ``str``.

    sqlite3 looks converters up by the column's declared type (its first word), so
    this covers every column declared TEXT in records.SCHEMA and nothing else.
    """
    sqlite3.register_converter("TEXT", _decode)


def shown(path: str | Path) -> str:
    """A path as people read it: bytes that are not UTF-8 written ``\\xff``."""
    text = str(path)
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (from JSON, say)
        raw = text.encode("utf-8", errors="backslashreplace")
    return raw.decode("utf-8", errors="backslashreplace")


def for_terminal(text: str) -> str:
    """``text`` safe to print: control characters and undecodable bytes escaped.

    C0, DEL and C1 controls (Unicode category Cc) would otherwise reach the
    terminal, where ESC starts a sequence that can rewrite what the operator sees.
    """
    return "".join(_escape(c) for c in shown(text))


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:
        return f"\\x{code:02x}"
    return char


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def shown_values(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: file names that are not UTF-8 written as :func:`shown` does.

    Without it the JSON log would hold ``\\udcff`` escapes of lone surrogates, which
    jq and most readers turn into U+FFFD: the bytes would be lost to the reader.
    """
    for key, value in event.items():
        if isinstance(value, str) and _has_surrogate(value):
            event[key] = shown(value)
    return event


def terminal_values(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor for the console view: every string value :func:`for_terminal`."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = for_terminal(value)
    return event


register_decoder()
