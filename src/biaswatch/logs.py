"""Logging: structlog, one JSON object per line, readable on a terminal.

Events have stable dotted names (``frame.rejected``, ``set.completed``,
``master.published``) and carry their context (camera, night, set, file) as
keys, so ``jq`` and journald can filter them. Timestamps are UTC ISO-8601.

Under systemd (stdout is the journal stream) the same JSON goes to journald with a
priority and the context as journal fields (journald.py). A log file is reopened
when logrotate renames it (systemd/biaswatch.logrotate).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import IO

import structlog

from biaswatch import journald, names

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def configure(
    log_file: Path | None,
    level: str,
    *,
    console: bool | None = None,
    journal_socket: Path = journald.SOCKET,
) -> None:
    """Send JSON lines to ``log_file`` (None: stdout); a console view when on a terminal.

    Args:
        log_file: the JSON log, or None for standard output (journald under systemd).
        level: debug, info, warning or error.
        console: force the human-readable view on stderr on or off (default: if a tty).
        journal_socket: journald's native socket, used when stdout is the journal.
    """
    handlers: list[logging.Handler] = []
    json_formatter = _formatter(structlog.processors.JSONRenderer(), names.shown_values)
    if log_file is None:
        handlers.append(_stdout_handler(json_formatter, console, journal_socket))
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # logrotate renames the file (systemd/biaswatch.logrotate): the handler sees the
        # path's inode change before each write and opens the new file.
        file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(json_formatter)
        handlers.append(file_handler)
        if sys.stderr.isatty() if console is None else console:
            handlers.append(_console_view(sys.stderr))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
    # apscheduler logs every job added and run at INFO; its warnings (missed or
    # failed jobs) are what matter here.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _stdout_handler(
    json_formatter: logging.Formatter, console: bool | None, journal_socket: Path
) -> logging.Handler:
    """The console view on a terminal; the journal's forms when systemd reads stdout
    (journald.py); plain JSON lines otherwise (a pipe, or a file a supervisor keeps)."""
    if sys.stdout.isatty() if console is None else console:
        return _console_view(sys.stdout)
    if journald.stdout_is_journal(sys.stdout, os.environ):
        handler = journald.journal_handler(sys.stdout, journal_socket)
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_formatter)
    return handler


def _console_view(stream: IO[str]) -> logging.Handler:
    """The human-readable view on ``stream`` (a terminal), names escaped for it."""
    view = logging.StreamHandler(stream)
    view.setFormatter(_formatter(_console(), names.terminal_values))
    return view


def _console() -> structlog.dev.ConsoleRenderer:
    """The terminal view: plain tracebacks, whether or not ``rich`` is installed.

    structlog's default formatter switches to rich's tracebacks (with local variables)
    when rich is importable, and import-linter (a test tool) brings rich in: the same
    service would print differently on a developer's machine and under systemd.
    """
    return structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)


def _formatter(
    renderer: structlog.types.Processor, escape: structlog.types.Processor
) -> structlog.stdlib.ProcessorFormatter:
    # escape: file names may hold any bytes, and control characters (names.py).
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, escape, renderer],
    )
