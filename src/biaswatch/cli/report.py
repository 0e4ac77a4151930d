"""``biaswatch report``: write a night's HTML report on demand (publish/report.py builds it).

The service writes the same page into state_dir/reports after each camera's
night-end check; this command writes one for any night, anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt

from biaswatch.config import load_config
from biaswatch.publish.report import write_report


def write_report_command(args: argparse.Namespace) -> int:
    """Write the night's page and print where it went."""
    config = load_config(args.config)
    database = config.service.state_dir / "catalog.sqlite"
    if not database.exists():  # before, an empty catalog was made here: now nothing is
        print(f"no catalog yet at {database}")
        return 0
    print(write_report(config, args.night, args.output, dt.datetime.now(dt.UTC)))
    return 0
