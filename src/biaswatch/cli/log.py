"""``biaswatch log``: the JSON log as readable lines, filtered by camera, night and level.

The log is one JSON object per line (logs.py). An operator asking "what
happened last night?" wants the events of one night, one camera, warnings and
worse, as lines they can read; ``--follow`` keeps printing as the service
writes. An event belongs to a night when it says so (``night``), or, when it
carries no night, when its time falls between that night's two rollovers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biaswatch.cli.options import LOG_LEVELS
from biaswatch.config import SiteConfig, load_config
from biaswatch.names import for_terminal

# logging.DEBUG 10, INFO 20, WARNING 30, ERROR 40, CRITICAL 50: steps of 10 from debug.
_LEVELS = {name: 10 * (step + 1) for step, name in enumerate(LOG_LEVELS)}
_SHOWN_FIRST = ("camera", "night", "set", "file", "path")
_NOT_SHOWN = {"event", "level", "timestamp", "logger"}
FOLLOW_SECONDS = 0.5  # how often --follow looks for new lines


def show_log(args: argparse.Namespace) -> int:
    """Print the matching events; with --follow, until interrupted."""
    config = load_config(args.config)
    path = config.log_path
    if path is None:
        print("the log goes to standard output (journald): journalctl -u biaswatch -o cat")
        return 1
    keep = Filter(args.camera, args.night, _LEVELS[args.level], config.site)
    try:
        for event in _events(path, follow=args.follow):
            if keep(event):
                print(render_event(event), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


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


def _events(path: Path, *, follow: bool) -> Iterator[dict[str, Any]]:
    """Each JSON event of the log; with ``follow``, new ones as they are written."""
    with open(path, encoding="utf-8") as log:
        while True:
            start = log.tell()
            line = log.readline()
            if line.endswith("\n"):
                event = _parse(line)
                if event is not None:
                    yield event
                continue
            log.seek(start)  # nothing new, or a line half-written: read it whole later
            if not follow:
                return
            time.sleep(FOLLOW_SECONDS)


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        print(f"(not JSON: {for_terminal(line.strip()[:80])})", file=sys.stderr)
        return None
    return event if isinstance(event, dict) else None
