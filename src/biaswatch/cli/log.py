"""``biaswatch log``: the JSON log as readable lines, filtered by camera, night and level.

The log is one JSON object per line (logs.py). An operator asking "what
happened last night?" wants the events of one night, one camera, warnings and
worse, as lines they can read; ``--follow`` keeps printing as the service
writes. An event belongs to a night when it says so (``night``), or, when it
carries no night, when its time falls between that night's two rollovers.

With ``log_file = "-"`` the service logs to journald (journald.py): the events are
read back with ``journalctl -o json -t biaswatch``, each entry's MESSAGE being the
JSON event (lines that are not, such as a traceback on stderr, are shown with the
entry's priority and time). With a file, ``--follow`` follows logrotate's rename.
``--json`` prints each matching event as the JSON object it was logged as, one a line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from biaswatch import journald
from biaswatch.cli.common import EX_NOTFOUND, EX_UNAVAILABLE, command_config, fail
from biaswatch.cli.options import LOG_LEVELS
from biaswatch.config import SiteConfig
from biaswatch.names import for_terminal, shown

# logging.DEBUG 10, INFO 20, WARNING 30, ERROR 40, CRITICAL 50: steps of 10 from debug.
_LEVELS = {name: 10 * (step + 1) for step, name in enumerate(LOG_LEVELS)}
_SHOWN_FIRST = ("camera", "night", "set", "file", "path")
_NOT_SHOWN = {"event", "level", "timestamp", "logger"}
FOLLOW_SECONDS = 0.5  # how often --follow looks for new lines


def show_log(args: argparse.Namespace) -> int:
    """Print the matching events; with --follow, until interrupted."""
    config = command_config(args.config)
    if args.camera is not None:
        config.camera(args.camera)  # an unknown camera is a config error (78), not no output
    keep = Filter(args.camera, args.night, _LEVELS[args.level], config.site)
    path = config.log_path
    if path is None:
        return _show_journal(args, keep)
    try:
        log = open(path, encoding="utf-8")  # noqa: SIM115 (_file_events closes it)
    except OSError as error:
        return fail(args, EX_NOTFOUND, f"cannot read {shown(str(path))}: {error.strerror}")
    _print_matching(_file_events(path, log, follow=args.follow), keep, as_json=args.json)
    return 0


def _print_matching(events: Iterator[dict[str, Any]], keep: Filter, *, as_json: bool) -> int:
    """Print the events ``keep`` passes, until the source ends or Ctrl-C; how many were read."""
    seen = 0
    try:
        for event in events:
            seen += 1
            if keep(event):
                print(json.dumps(event) if as_json else render_event(event), flush=True)
    except KeyboardInterrupt:
        pass
    return seen


def _show_journal(args: argparse.Namespace, keep: Filter) -> int:
    """The service's entries from journald, through ``journalctl -o json``."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        why = 'the service logs to journald (log_file = "-") and there is no journalctl here'
        return fail(args, EX_UNAVAILABLE, why + " to read it")
    level, follow = args.level, args.follow
    command = [journalctl, "-o", "json", "--no-pager", "-t", journald.IDENTIFIER]
    command += ["-p", str(journald.priority(level))]
    command += ["--follow", "--no-tail"] if follow else []
    # journalctl's complaints go to a file, read at the end: a pipe read only after stdout
    # ends would fill (64 KiB, pipe(7)) on a journal with many corrupt files and block
    # journalctl, and with it `log --follow`, silently.
    with (
        tempfile.TemporaryFile("w+") as complaints,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=complaints, text=True) as reader,
    ):
        assert reader.stdout is not None
        seen = _print_matching(_journal_events(reader.stdout), keep, as_json=args.json)
        reader.terminate()  # on Ctrl-C with --follow; a no-op once journalctl has ended
        reader.wait()
        complaints.seek(0)
        problem = complaints.read().strip().splitlines()
    if reader.returncode not in (0, -15):  # -15: the SIGTERM above
        why = problem[-1] if problem else f"exit status {reader.returncode}"
        return fail(args, EX_UNAVAILABLE, f"journalctl failed: {for_terminal(why)}")
    if seen == 0 and not follow:
        empty = f"no entries in the journal (journalctl -t {journald.IDENTIFIER})"
        return fail(args, EX_NOTFOUND, empty)
    return 0


def _journal_events(lines: IO[str]) -> Iterator[dict[str, Any]]:
    """Each ``journalctl -o json`` entry as an event."""
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # journalctl writes one JSON object per line; nothing else is ours
        if isinstance(entry, dict):
            event = journal_event(entry)
            if event is not None:
                yield event


def journal_event(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The event a journal entry holds: its MESSAGE's JSON, or the plain line with the
    entry's priority and time (a traceback, a line from a library printing to stdout)."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journalctl's form for a value that is not UTF-8
        message = bytes(message).decode("utf-8", "surrogateescape")
    if not isinstance(message, str):
        return None
    try:
        event = json.loads(message)
    except json.JSONDecodeError:
        event = None
    if isinstance(event, dict) and "event" in event:
        return event
    micros = int(entry.get("__REALTIME_TIMESTAMP", 0))
    when = dt.datetime.fromtimestamp(micros / 1e6, dt.UTC)
    level = _level_of(str(entry.get("PRIORITY", "6")))
    return {"event": shown(message), "level": level, "timestamp": when.isoformat()}


def _level_of(priority: str) -> str:
    """The level of a syslog priority, journald.priority read backwards: the most severe
    level not more severe than it (0-2 critical, 3 error, 4 warning, 5-6 info, 7 debug)."""
    number = int(priority) if priority.isdigit() else journald.priority("info")
    at_most = [name for name in LOG_LEVELS if journald.priority(name) >= number]
    return min(at_most, key=journald.priority, default="debug")


class Filter:
    """Which events to show."""

    def __init__(
        self, camera: str | None, night: dt.date | None, level: int, site: SiteConfig
    ) -> None:
        self._camera = camera
        self._night = night
        self._level = level
        self._window: tuple[dt.datetime, dt.datetime] | None = None
        if night is not None:
            start = dt.datetime.combine(night, site.night_rollover, tzinfo=site.zone)
            self._window = (start, start + dt.timedelta(days=1))

    def __call__(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` passes camera, night and level."""
        if _LEVELS.get(str(event.get("level", "info")), 20) < self._level:
            return False
        if self._camera is not None and event.get("camera", self._camera) != self._camera:
            return False
        return self._window is None or self._in_night(event)

    def _in_night(self, event: dict[str, Any]) -> bool:
        assert self._window is not None and self._night is not None
        if "night" in event:
            return bool(event["night"] == self._night.isoformat())
        try:
            when = dt.datetime.fromisoformat(str(event["timestamp"]))
        except (KeyError, ValueError):
            return False
        return self._window[0] <= when < self._window[1]


def render_event(event: dict[str, Any]) -> str:
    """``2026-11-25 03:10:02Z WARNING frame.rejected camera=cryo file=... reason=...``."""
    stamp = str(event.get("timestamp", ""))[:19].replace("T", " ")
    level = str(event.get("level", "")).upper()
    keys = [k for k in _SHOWN_FIRST if k in event]
    keys += sorted(k for k in event if k not in _NOT_SHOWN and k not in keys)
    fields = " ".join(f"{k}={_text(event[k])}" for k in keys)
    # A file name may hold ESC and other controls: escaped, never sent to the terminal.
    return for_terminal(f"{stamp}Z {level:<7} {event.get('event', '?')} {fields}".rstrip())


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return json.dumps(text) if " " in text else text


def _file_events(path: Path, log: IO[str], *, follow: bool) -> Iterator[dict[str, Any]]:
    """Each JSON event of the open ``log``; with ``follow``, new ones as they are written,
    through logrotate's rename (reopened at ``path``) or truncation (read from the top)."""
    try:
        while True:
            yield from _whole_lines(log)
            if not follow:
                return
            if _renamed(path, log):
                yield from _whole_lines(log)  # written before the service switched files
                log.close()
                log = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
                continue
            if os.fstat(log.fileno()).st_size < log.tell():
                log.seek(0)  # truncated in place (copytruncate)
                continue
            time.sleep(FOLLOW_SECONDS)
    finally:
        log.close()


def _whole_lines(log: IO[str]) -> Iterator[dict[str, Any]]:
    """The events of the complete lines from the current position on."""
    while True:
        start = log.tell()
        line = log.readline()
        if not line.endswith("\n"):
            log.seek(start)  # nothing new, or a line half-written: read it whole later
            return
        event = _parse(line)
        if event is not None:
            yield event


def _renamed(path: Path, log: IO[str]) -> bool:
    """Whether ``path`` now names another file than the open ``log`` (and one exists)."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False  # renamed, the new one not created yet: look again later
    opened = os.fstat(log.fileno())
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        print(f"(not JSON: {for_terminal(line.strip()[:80])})", file=sys.stderr)
        return None
    return event if isinstance(event, dict) else None
