"""``biaswatch masters``: list the masters, or choose one for a frame (``--for``).

``--like FRAME`` keeps the masters of that frame's configuration (the geometry label
the service gives it), so ``--for TIME --camera X --like FRAME`` is the master to
subtract from FRAME. The current master of each configuration is also linked as
``<masters_dir>/<camera>/latest-<label>.fits`` (publish/master.py).

It reads the catalog directly and needs no running service: SQLite's WAL mode
lets it run beside the service. Accepting and rejecting: cli/verdict.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from biaswatch.catalog.open import open_reading
from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.config import load_config
from biaswatch.rules.nights import night_label


def existing_catalog(config_path: Path) -> Catalog | None:
    """The configured catalog, read-only, or None before the service has made one."""
    return open_reading(load_config(config_path).service.state_dir / "catalog.sqlite")


def list_masters(args: argparse.Namespace) -> int:
    """``biaswatch masters``: the table, JSON, or with --for one path."""
    like = None if args.like is None else configuration_of(args.config, args.camera, args.like)
    catalog = existing_catalog(args.config)
    rows = [] if catalog is None else catalog.masters(args.camera, args.night)
    if catalog is not None:
        # What latest.fits points at (each camera's newest accepted master), or with
        # --like what latest-<label>.fits points at (each configuration's).
        current = set(catalog.latest_paths().values())
        if like is not None:
            current = set(catalog.latest_by_configuration().values())
        catalog.close()
        if args.current:
            rows = [r for r in rows if r.path in current]
    if like is not None:
        rows = [r for r in rows if r.geometry == like]
    if args.for_time is not None:
        return _print_for(args, rows)
    if args.json:
        print(json.dumps([master_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no accepted master" if args.current else "no masters yet")
        return 0
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
    return 0


def master_json(row: MasterRow) -> dict[str, object]:
    """A master as ``--json`` prints it: its fields, segments as ``[{"name": ..., QC...}]``."""
    shown = asdict(row)
    shown["segments"] = [{"name": name, **asdict(qc)} for name, qc in row.segments]
    return shown


def configuration_of(config_path: Path, camera_name: str | None, frame_path: Path) -> str:
    """The geometry label the service gives ``frame_path`` of this camera (frames/read.py).

    The frame is read as the service reads it (read-only, the camera's settings), so
    downstream code asks for the master of its frame's configuration without knowing
    how biaswatch labels one.
    """
    if camera_name is None:
        raise SystemExit("biaswatch masters: --like needs --camera")
    # Imported here: astropy costs the plain listing (run by scripts) its start-up time.
    from biaswatch.errors import FrameRejected
    from biaswatch.frames.read import label_of

    camera = load_config(config_path).camera(camera_name)
    try:
        return label_of(frame_path, camera)
    except (OSError, FrameRejected) as exc:
        raise SystemExit(f"biaswatch masters: --like {frame_path}: {exc}") from None


def _print_for(args: argparse.Namespace, rows: list[MasterRow]) -> int:
    if args.camera is None:
        raise SystemExit("biaswatch masters: --for needs --camera")
    site = load_config(args.config).site
    when = dt.datetime.fromisoformat(args.for_time)
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    chosen = nearest(rows, night_label(when, site.zone, site.night_rollover))
    if chosen is None:
        like = "" if args.like is None else f" of {args.like.name}'s configuration"
        print(f"no accepted master for camera {args.camera}{like}", flush=True)
        return 1
    print(chosen.path)
    return 0


def nearest(rows: Sequence[MasterRow], night: dt.date) -> MasterRow | None:
    """The accepted master nearest the night; an earlier one wins a tie, then the latest made.

    A master from before the frame is the usual choice when two nights are as far.
    """
    accepted = [r for r in rows if r.state == "accepted"]
    if not accepted:
        return None

    def distance(row: MasterRow) -> tuple[int, int, int]:
        gap = (dt.date.fromisoformat(row.night) - night).days
        return abs(gap), gap > 0, -row.sequence

    return min(accepted, key=distance)
