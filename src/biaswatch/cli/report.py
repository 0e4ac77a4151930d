"""``biaswatch report``: write a night's HTML report on demand (publish/report.py builds it).

The service writes the same page into state_dir/reports after each camera's
night-end check; this command writes one for any night, anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from biaswatch.cli.common import command_config
from biaswatch.publish.report import write_report


def write_report_command(args: argparse.Namespace) -> int:
    """Write the night's page and print where it went."""
    config = command_config(args.config)
    database = config.service.state_dir / "catalog.sqlite"
    if not database.exists():  # before, an empty catalog was made here: now nothing is
        why = f"no catalog yet at {database}"
        print(json.dumps({"report": None, "reason": why}) if args.json else why)
        return 0
    page = write_report(config, args.night, args.output, dt.datetime.now(dt.UTC))
    shown = {"report": str(page), "night": args.night.isoformat()}
    print(json.dumps(shown) if args.json else page)
    return 0
