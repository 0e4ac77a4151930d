"""``biaswatch check-config``: validate a configuration and print what it means.

Prints the effective settings of every camera, ``[defaults]`` merged in, as
TOML an operator can read back, with a comment per watch directory saying
whether it is there and how it will be watched; every table, ``[alerts]`` and
``[notify]`` included. ``--json`` prints the same as one JSON object. Exit 0 when
valid; 78 (EX_CONFIG, as ``run`` exits for the same problems) with every problem
listed when not, and in one line when the config asks for an optional part this
install lacks (``executor = "dask"`` without the ``[dask]`` extra): the config is
right, the install is not, as ``run`` says.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from biaswatch.cli.common import EX_CONFIG, command_config, print_problems
from biaswatch.combine.dask_extra import require_dask_extra
from biaswatch.config import CameraConfig, Config
from biaswatch.errors import ConfigError, MissingExtra
from biaswatch.sections import SectionSource
from biaswatch.settings import TIME_OF_DAY_KEYWORDS, BiasRule, DateRange
from biaswatch.system.mounts import Mount, network_mount, read_mounts
from biaswatch.system.overlaps import RESOLVE_SECONDS
from biaswatch.watch.scan import probe_directories


def check_config(args: argparse.Namespace) -> int:
    """Print the effective settings, or every problem; returns the exit status."""
    try:
        config = command_config(args.config)
    except ConfigError as exc:
        if args.json:
            raise  # cli/main.py prints it as every command's JSON error (print_problems)
        count = len(exc.problems)
        print(f"{args.config} (from {args.config_source}): {count} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    try:
        require_dask_extra(config.service)
    except MissingExtra as exc:
        print_problems(exc, args)
        return EX_CONFIG
    if args.json:
        print(json.dumps(settings_json(config), indent=2))
    else:
        print(render_settings(config), end="")
    return 0


def settings_json(config: Config) -> dict[str, Any]:
    """The effective settings as JSON-ready data: the tables of render_settings, as objects."""
    tables = {name: _plain(getattr(config, name)) for name in ("service", "site", "alerts")}
    tables["notify"] = _plain(config.notify)
    cameras, seen = [], _watch_states(config)
    for camera in config.cameras:
        settings = _plain(camera)
        settings["directories"] = {str(d): seen[d] for d in camera.watch}
        settings["meanings"] = _meanings(camera)
        cameras.append(settings)
    return {"config": str(config.path), "valid": True, **tables, "cameras": cameras}


def _plain(value: object) -> Any:
    """A setting as JSON data; the same spelling as the TOML of render_settings."""
    if isinstance(value, BaseModel):
        return {key: _plain(item) for key, item in value}
    if isinstance(value, tuple | list):
        rules = [item for item in value if isinstance(item, BiasRule)]
        if rules:  # bias_when: each keyword and what it must be, as in the TOML
            return {rule.keyword: _json_rule_value(rule.describe()) for rule in rules}
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.loads(_value(value))  # sections, date ranges, times, paths: as TOML spells them


def render_settings(config: Config) -> str:
    """The configuration as TOML, every default written out."""
    lines = [f"# {config.path}: valid", ""]
    lines += _table("service", config.service)
    lines += _table("site", config.site)
    lines += _table("alerts", config.alerts)
    lines += _table("notify", config.notify)
    seen, mounts = _watch_states(config), read_mounts()
    for camera in config.cameras:
        lines += _directories(camera, seen, mounts)
        lines += _table(f"cameras.{camera.name}", camera, skip={"name"}, notes=_meanings(camera))
    return "\n".join(lines) + "\n"


def _watch_states(config: Config) -> dict[Path, str]:
    """Every watch directory's state, each asked in a child: a hung mount cannot hang us.

    Given the patience of the config's own overlap check (RESOLVE_SECONDS, 5 s), after
    which a directory is shown as not answering (watch/scan.py probe_directories).
    """
    watched = (d for camera in config.cameras for d in camera.watch)
    return probe_directories(watched, RESOLVE_SECONDS)


def _directories(camera: CameraConfig, seen: dict[Path, str], mounts: list[Mount]) -> list[str]:
    notes = []
    for directory in camera.watch:
        mount = network_mount(directory, mounts)
        where = "local disk" if mount is None else f"{mount.fstype} ({mount.source})"
        notes.append(f"# {directory}: {seen[directory]}, {where}")
    return notes


def _meanings(camera: CameraConfig) -> dict[str, str]:
    """What the keys deciding which frames are biases, when and with whom, do for this camera."""
    if camera.bias_when is None:
        values = ", ".join(json.dumps(v) for v in camera.bias_values)
        kind = f"a frame is a bias when {camera.imagetyp_keyword} is one of {values}"
    else:
        rules = [f"{r.keyword} is {_any_of(r)}" for r in camera.bias_when]
        kind = f"a frame is a bias when {' and '.join(rules)}; others are ignored"
    times = [
        f"{k} (a date alone takes its time from {', '.join(TIME_OF_DAY_KEYWORDS)})"
        if k == "DATE-OBS"
        else k
        for k in camera.date_keywords
    ]
    when = f"dated by the first of {', '.join(times)} that reads, TIMESYS honoured"
    modes = "".join(f", {k}" for k in camera.group_by)
    binning = "binning (CCDSUM, XBINNING/YBINNING, BINNING)"
    split = f"sets split by night, image layout, {binning}{modes}"
    return {"bias_when": kind, "date_keywords": when + "; else the file's mtime", "group_by": split}


def _any_of(rule: BiasRule) -> str:
    shown = rule.describe()
    return f"any of {shown}" if shown.startswith("[") else shown


def _table(
    name: str, model: BaseModel, skip: set[str] | None = None, notes: dict[str, str] | None = None
) -> list[str]:
    lines, subtables = [f"[{name}]"], []
    for key, value in model:
        if key in (skip or set()):
            continue
        note = (notes or {}).get(key)
        if note is not None and value is not None:
            lines.append(f"# {note}")
        if isinstance(value, BaseModel):
            subtables.append((f"{name}.{key}", value))
        elif value is None:
            lines.append(f"# {key} is unset" + (f": {note}" if note else ""))
        else:
            lines.append(f"{key} = {_value(value)}")
    lines.append("")
    for subname, submodel in subtables:
        lines += _table(subname, submodel)
    return lines


def _json_rule_value(text: str) -> Any:
    """A rule's TOML value as data when JSON reads it the same ("bias", 0, [..]); else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _value(value: object) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, BiasRule) for v in value):
        rules = [f"{_key(r.keyword)} = {r.describe()}" for r in value if isinstance(r, BiasRule)]
        return "{ " + ", ".join(rules) + " }"
    if isinstance(value, SectionSource):
        return json.dumps(value.describe())
    if isinstance(value, DateRange):
        return json.dumps([value.earliest.describe(), value.latest.describe()])
    if isinstance(value, dt.time):
        return json.dumps(value.strftime("%H:%M"))
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):  # an entry of an array of tables (calibrate.amplifiers)
        pairs = (f"{key} = {_value(item)}" for key, item in value if item is not None)
        return "{ " + ", ".join(pairs) + " }"
    return json.dumps(value)


def _key(keyword: str) -> str:
    """A TOML key: bare when it can be (A-Z 0-9 _ -), quoted otherwise (HIERARCH words)."""
    return keyword if all(c.isalnum() or c in "_-" for c in keyword) else json.dumps(keyword)
