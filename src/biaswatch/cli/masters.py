"""``biaswatch masters``: list the masters, or choose one for a frame (``--for``).

``--like FRAME`` keeps the masters of that frame's configuration (the geometry label
the service gives it), so ``--for TIME --camera X --like FRAME`` is the master to
subtract from FRAME. The current master of each configuration is also linked as
``<masters_dir>/<camera>/latest-<label>.fits`` (publish/master.py). ``--for`` never
picks a master further than the camera's ``max_age_days`` from TIME; ``--explain``
prints every candidate's decision (rules/matching.py decides, this module prints).

It reads the catalog directly and needs no running service: SQLite's WAL mode
lets it run beside the service. Accepting and rejecting: cli/verdict.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

from biaswatch.calibrations import match_rows
from biaswatch.catalog.open import open_reading
from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.cli.common import EX_NOTFOUND, EX_USAGE, command_config, fail
from biaswatch.config import Config


class UnreadableFrame(Exception):
    """``--like`` names a frame that cannot be read as the camera's."""


def existing_catalog(config: Config) -> Catalog | None:
    """The configured catalog, read-only, or None before the service has made one."""
    return open_reading(config.service.state_dir / "catalog.sqlite")


def list_masters(args: argparse.Namespace) -> int:
    """``biaswatch masters``: the table, JSON, or with --for one path."""
    misuse = _misused(args)
    if misuse is not None:
        return fail(args, EX_USAGE, misuse)
    config = command_config(args.config)  # once: --like and --for read it too
    if args.camera is not None:
        config.camera(args.camera)  # an unknown camera is a config error, not "no masters yet"
    try:
        like = None if args.like is None else configuration_of(config, args.camera, args.like)
    except UnreadableFrame as exc:
        return fail(args, EX_NOTFOUND, str(exc))
    catalog = existing_catalog(config)
    rows = [] if catalog is None else catalog.masters(args.camera, args.night)
    if catalog is not None:
        if args.current:
            # What latest.fits points at (each camera's newest accepted master), or
            # with --like what latest-<label>.fits points at (each configuration's).
            links = catalog.latest_by_configuration() if like else catalog.latest_paths()
            rows = [r for r in rows if r.path in set(links.values())]
        catalog.close()
    if args.for_time is not None:
        # Every configuration's masters go to the matcher: --explain names those of
        # another configuration as such.
        return _print_for(args, config, rows, like)
    if like is not None:
        rows = [r for r in rows if r.geometry == like]
    if args.json:
        print(json.dumps([master_json(r) for r in rows], indent=2))
    elif not rows:
        print("no accepted master" if args.current else "no masters yet")
    else:
        _print_table(rows)
    return 0


def _misused(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of options, if anything (a usage error)."""
    if args.explain and args.for_time is None:
        return "--explain needs --for"
    if (args.for_time is not None or args.like is not None) and args.camera is None:
        return f"{'--for' if args.for_time else '--like'} needs --camera"
    return None


def _print_table(rows: list[MasterRow]) -> None:
    """The masters as a table, each segment's QC under its master."""
    print(f"{'camera':<10} {'night':<10} {'seq':>3} {'n':>3}  {'state':<8} {'RON':>6}  path")
    for r in rows:
        ron = "" if r.qc is None else f"{r.qc.read_noise:6.2f}"
        line = f"{r.camera:<10} {r.night:<10} {r.sequence:>3} {r.ncombine:>3}  {r.state:<8}"
        print(f"{line} {ron:>6}  {r.path}")
        for name, qc in r.segments:  # each image HDU or amplifier, under its master
            print(
                f"{'':<10} segment {name}: level {qc.level:.2f} ADU, read noise "
                f"{qc.read_noise:.2f} ADU, noise {qc.noise:.2f} ADU"
            )


def master_json(row: MasterRow) -> dict[str, object]:
    """A master as ``--json`` prints it: its fields, segments as ``[{"name": ..., QC...}]``."""
    shown = asdict(row)
    shown["segments"] = [{"name": name, **asdict(qc)} for name, qc in row.segments]
    return shown


def configuration_of(config: Config, camera_name: str | None, frame_path: Path) -> str:
    """The geometry label the service gives ``frame_path`` of this camera (frames/read.py).

    The frame is read as the service reads it (read-only, the camera's settings), so
    downstream code asks for the master of its frame's configuration without knowing
    how biaswatch labels one.
    """
    if camera_name is None:
        raise ValueError("--like needs --camera")  # list_masters checks first
    # Imported here: astropy costs the plain listing (run by scripts) its start-up time.
    from biaswatch.errors import FrameRejected
    from biaswatch.frames.read import label_of

    camera = config.camera(camera_name)
    try:
        return label_of(frame_path, camera)
    except (OSError, FrameRejected) as exc:
        raise UnreadableFrame(f"--like {frame_path}: {exc}") from None


def _print_for(
    args: argparse.Namespace, config: Config, rows: list[MasterRow], like: str | None
) -> int:
    """``--for``: the chosen master's path; ``--explain`` adds every candidate's decision.

    With ``--json``, one object (the request, the chosen path or null, every decision)
    and nothing else; the exit status is 1 when no master fits, either way. The
    decisions are the Python API's (biaswatch.calibrations.match_rows).
    """
    camera = config.camera(str(args.camera))  # list_masters made sure it is given
    when = dt.datetime.fromisoformat(args.for_time)
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    match = match_rows(config, args.camera, rows, when, like, camera.max_age_days)
    if args.json:
        print(json.dumps(match.as_json(), indent=2))
    elif args.explain:
        print("\n".join(match.lines()))
    if match.chosen is None:
        if not args.json:
            like_name = None if args.like is None else args.like.name
            print(match.why_none(args.for_time, like_name), flush=True)
        return 1
    if not args.json:
        print(match.chosen)
    return 0
