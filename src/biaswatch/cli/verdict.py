"""``biaswatch accept`` and ``biaswatch reject``: the operator's verdict on a master.

The verdict overrules biaswatch's own, is kept in the catalog with who gave it
and why, and moves the camera's latest.fits to its newest accepted master. No
running service is needed: SQLite's WAL mode lets it write beside the service.
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from biaswatch.catalog.store import Catalog
from biaswatch.config import load_config
from biaswatch.publish.master import point_latest, repair_latest


def record_verdict(args: argparse.Namespace) -> int:
    """Record the operator's verdict and point latest.fits at the newest accepted master."""
    catalog = catalog_to_judge(args.config)
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
    link = Path(master.path).parent.parent / "latest.fits"
    if newest is not None:
        point_latest(link, Path(newest.path))
    else:  # nothing accepted is left: a link to a rejected master would mislead
        link.unlink(missing_ok=True)
    repair_latest(catalog, link.parent.parent, set())  # each configuration's link too
    catalog.close()
    print(
        f"{master.path}: {args.state} by {who} ({args.why}); latest.fits -> "
        f"{newest.path if newest else 'nothing accepted'}"
    )
    return 0


def catalog_to_judge(config_path: Path) -> Catalog | None:
    """The configured catalog opened for writing (a verdict is a write), or None if none yet.

    Not cli.masters.existing_catalog: the reading commands open it read-only (issue 15).
    """
    database = load_config(config_path).service.state_dir / "catalog.sqlite"
    return Catalog(database) if database.exists() else None
