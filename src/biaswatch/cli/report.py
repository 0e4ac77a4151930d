"""``biaswatch report``: write a night's HTML report on demand (publish/report.py builds it).

The service writes the same page into state_dir/reports after each camera's
night-end check; this command writes one for any night, anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from biaswatch.cli.common import config_option
from biaswatch.config import load_config
from biaswatch.publish.report import write_report


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """The ``report`` command's options."""
    config_option(parser)
    parser.add_argument(
        "--night", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD (the evening)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="the HTML file")
    parser.set_defaults(handler=write_report_command)


def write_report_command(args: argparse.Namespace) -> int:
    """Write the night's page and print where it went."""
    config = load_config(args.config)
    print(write_report(config, args.night, args.output, dt.datetime.now(dt.UTC)))
    return 0
