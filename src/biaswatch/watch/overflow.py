"""Hearing about inotify queue overflows, which watchdog reports only in its log.

When the kernel's inotify queue fills (``fs.inotify.max_queued_events``, 16384
by default; proc_sys_fs_inotify(5)), events are dropped and one IN_Q_OVERFLOW is
queued instead. watchdog up to 6.x ignored it (issue #654); 7.1 re-adds its
watches and logs a warning (``inotify_c.py``, ``handle_event``) but still tells
no handler. That log record is the only signal, so biaswatch listens for it and
rescans at once (watchman's answer to an overflow: recrawl). If a future
watchdog words it differently, the periodic rescan (``rescan_minutes``) still
finds the files, only later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

# The logger and message of watchdog 7.1's overflow warning (inotify_c.py).
WATCHDOG_LOGGER = "watchdog.observers.inotify_c"
OVERFLOW_MESSAGE = "Inotify queue overflowed"


class _Listener(logging.Handler):
    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(OVERFLOW_MESSAGE):
            self._on_overflow()


def listen_for_overflows(on_overflow: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_overflow`` (from watchdog's thread) at each overflow; returns a remover."""
    logger = logging.getLogger(WATCHDOG_LOGGER)
    # Warnings must reach the handler whatever the service's own log level.
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    listener = _Listener(on_overflow)
    logger.addHandler(listener)
    return lambda: logger.removeHandler(listener)
