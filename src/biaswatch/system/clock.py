"""Time, behind a small interface so that tests can pass a fake clock instead of patching."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time (aware UTC) and monotonic seconds."""

    def now(self) -> dt.datetime:
        """The current time, aware UTC."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        """The current time, aware UTC."""
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()
