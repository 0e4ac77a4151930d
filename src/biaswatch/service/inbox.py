"""What the main loop's inbox carries: paths from watchers, and work from timers and threads.

Threads and timers never change state themselves; they put one of these in the
inbox and the main loop acts on it (service/loop.py).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

from biaswatch.watch.handler import PathEvent


@dataclass(frozen=True, slots=True)
class SetDue:
    """A timer fired for a set: decide again."""

    set_id: int


@dataclass(frozen=True, slots=True)
class RetryDue:
    """A failed set's back-off has passed: try its combine again."""

    set_id: int


@dataclass(frozen=True, slots=True)
class NightEnded:
    """A camera's night_end (plus NIGHT_CHECK_MINUTES) passed: is there a master?"""

    camera: str


@dataclass(frozen=True, slots=True)
class Overflowed:
    """The kernel dropped inotify events (watch/overflow.py): rescan now."""


@dataclass(frozen=True, slots=True)
class Wake:
    """Something finished in a worker thread: run the loop now."""


WAKE = Wake()


Inbox = queue.Queue[PathEvent | SetDue | RetryDue | NightEnded | Overflowed | Wake]
