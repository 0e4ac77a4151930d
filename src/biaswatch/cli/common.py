"""What the commands share: exit statuses, the ``--config`` option, how config errors print.

Cheap on purpose (argparse and the standard library only): cli/main.py imports
it for every command, ``biaswatch --help`` included.

Exit statuses: 0 success, 1 failure, 2 usage error (argparse), 69 Dask scheduler
unreachable at start (EX_UNAVAILABLE; systemd restarts it), 75 another service
already runs on the same state directory (EX_TEMPFAIL; ``run`` only), 78
configuration error (EX_CONFIG from sysexits.h; the systemd unit has
RestartPreventExitStatus=78 so a broken config does not restart-loop).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biaswatch.errors import ConfigError

EX_CONFIG = 78
EX_UNAVAILABLE = 69  # sysexits.h: the Dask scheduler did not answer; systemd retries
# sysexits.h "temporary failure; the user is invited to retry": another service holds
# the state directory. Not 78: under systemd (Restart=on-failure, not prevented for
# 75) the unit tries again every RestartSec= up to StartLimitBurst=, so it takes over
# if the other one (a hand-started run, a predecessor stuck in a hung mount) ends soon.
EX_TEMPFAIL = 75


def config_option(parser: argparse.ArgumentParser) -> None:
    """The ``--config`` option every command that reads the configuration takes."""
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("config.toml"),
        help="TOML file (default: ./config.toml)",
    )


def print_problems(exc: ConfigError) -> None:
    """Every problem of a configuration error, one a line, on stderr."""
    print("biaswatch: configuration error:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
