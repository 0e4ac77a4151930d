"""The commands about masters: list them, choose one for a frame, accept or reject one.

They read (and, for accept and reject, write) the catalog directly; none needs
the service to be running. SQLite's WAL mode lets them run beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.config import load_config
from biaswatch.publish.master import point_latest
from biaswatch.rules.nights import night_label


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``masters``, ``accept`` and ``reject`` sub-commands."""
    masters = commands.add_parser("masters", help="list masters, or choose one for a frame")
    _config_option(masters)
    masters.add_argument("--camera", help="only this camera")
    masters.add_argument("--night", help="only this night (YYYY-MM-DD, the evening's date)")
    masters.add_argument(
        "--for",
        dest="for_time",
        metavar="TIME",
        help="print the accepted master to use for a frame taken at TIME (ISO, UTC if no "
        "zone); needs --camera",
    )
    masters.add_argument(
        "--current", action="store_true", help="only each camera's current master (latest.fits)"
    )
    masters.add_argument("--json", action="store_true", help="print a JSON array")
    masters.set_defaults(handler=list_masters)
    for verb, state in (("accept", "accepted"), ("reject", "rejected")):
        command = commands.add_parser(verb, help=f"mark a master {state}, overruling biaswatch")
        _config_option(command)
        command.add_argument("master", type=Path, help="the master's path")
        command.add_argument("--why", required=True, help="the reason, kept in the catalog")
        command.set_defaults(handler=_judge, state=state)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="TOML file")


def _catalog(config_path: Path) -> Catalog | None:
    database = load_config(config_path).service.state_dir / "catalog.sqlite"
    return Catalog(database) if database.exists() else None


def list_masters(args: argparse.Namespace) -> int:
    """``biaswatch masters``: the table, JSON, or with --for one path."""
    catalog = _catalog(args.config)
    rows = [] if catalog is None else catalog.masters(args.camera, args.night)
    if catalog is not None:
        if args.current:  # what latest.fits points at: each camera's newest accepted master
            current = catalog.newest_masters()
            rows = [r for r in rows if current.get(r.camera) == r]
        catalog.close()
    if args.for_time is not None:
        return _print_for(args, rows)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no accepted master" if args.current else "no masters yet")
        return 0
    print(f"{'camera':<10} {'night':<10} {'seq':>3} {'n':>3}  {'state':<8} {'RON':>6}  path")
    for r in rows:
        ron = "" if r.qc is None else f"{r.qc.read_noise:6.2f}"
        line = f"{r.camera:<10} {r.night:<10} {r.sequence:>3} {r.ncombine:>3}  {r.state:<8}"
        print(f"{line} {ron:>6}  {r.path}")
    return 0


def _print_for(args: argparse.Namespace, rows: list[MasterRow]) -> int:
    if args.camera is None:
        raise SystemExit("biaswatch masters: --for needs --camera")
    site = load_config(args.config).site
    when = dt.datetime.fromisoformat(args.for_time)
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    chosen = nearest(rows, night_label(when, site.zone, site.night_rollover))
    if chosen is None:
        print(f"no accepted master for camera {args.camera}", flush=True)
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


def _judge(args: argparse.Namespace) -> int:
    catalog = _catalog(args.config)
    if catalog is None:
        raise SystemExit("biaswatch: no catalog yet")
    who = os.environ.get("SUDO_USER") or getpass.getuser()
    # The path as given, or what it links to: latest.fits names the current master.
    known = {m.path for m in catalog.masters()}
    given = str(args.master.absolute())
    path = given if given in known else str(args.master.resolve())
    try:
        master = catalog.judge_master(path, args.state, who, args.why)
    except KeyError:
        raise SystemExit(f"biaswatch: {args.master} is not a master in the catalog") from None
    newest = catalog.newest_masters().get(master.camera)
    catalog.close()
    link = Path(master.path).parent.parent / "latest.fits"
    if newest is not None:
        point_latest(link, Path(newest.path))
    else:  # nothing accepted is left: a link to a rejected master would mislead
        link.unlink(missing_ok=True)
    print(
        f"{master.path}: {args.state} by {who} ({args.why}); latest.fits -> "
        f"{newest.path if newest else 'nothing accepted'}"
    )
    return 0
