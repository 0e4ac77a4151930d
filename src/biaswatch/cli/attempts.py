"""``biaswatch attempts``: where each combine ran, and what became of each run.

The answer to "why did last night's master take an hour?" on a cluster: a
worker lost mid-combine shows as a ``lost`` attempt beside the rerun that made
the master (catalog/attempts.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from biaswatch.catalog.open import open_reading
from biaswatch.cli.common import command_config


def list_attempts(args: argparse.Namespace) -> int:
    """Print the attempts, oldest first, as a table or JSON."""
    database = command_config(args.config).service.state_dir / "catalog.sqlite"
    catalog = open_reading(database)
    if catalog is None:
        # --json promises JSON on stdout: an empty array, and the words on stderr.
        print("[]" if args.json else f"no catalog yet at {database}")
        if args.json:
            print(f"biaswatch: no catalog yet at {database}", file=sys.stderr)
        return 0
    try:
        rows = [dict(row) for row in catalog.attempts(args.set_id, args.night)]
    finally:
        catalog.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no attempts yet")
        return 0
    print(
        f"{'set':>5} {'camera':<10} {'night':<10} {'task':<10} {'executor':<8} "
        f"{'outcome':<8} started / worker / reason"
    )
    for row in rows:
        print(
            f"{row['set_id']:>5} {row['camera']:<10} {row['night']:<10} {row['task']:<10} "
            f"{row['executor']:<8} {row['outcome']:<8} {row['started']}  {row['worker']}"
            + (f"  ({row['reason']})" if row["reason"] else "")
        )
    return 0
