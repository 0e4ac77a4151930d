"""What the commands share: exit statuses, the ``--config`` option, how config errors print.

Which config a command reads: biaswatch.discovery's rule (``--config PATH``, else
``$BIASWATCH_CONFIG``, else /etc/biaswatch/config.toml if it exists, else ./config.toml),
the same as the Python API's (biaswatch.calibrations); cli/main.py
resolves it before the command's handler runs, so handlers read ``args.config``.

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
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from biaswatch.discovery import (
    BUILT_IN,
    ENVIRONMENT_VARIABLE,
    LOCAL,
    SYSTEM_CONFIG,
    NoConfig,
    discover_config,
    why_chosen,
)
from biaswatch.errors import ConfigError, MissingExtra

if TYPE_CHECKING:  # config (pydantic) is imported when a command loads one, not for --help
    from biaswatch.config import Config

EX_CONFIG = 78
EX_USAGE = 2  # argparse's own status for a bad option; ours for a bad argument too
EX_NOTFOUND = 1  # failure, or nothing found (masters --for with no master that fits)
EX_UNAVAILABLE = 69  # sysexits.h: the Dask scheduler did not answer; systemd retries
# sysexits.h "temporary failure; the user is invited to retry": another service holds
# the state directory. Not 78: under systemd (Restart=on-failure, not prevented for
# 75) the unit tries again every RestartSec= up to StartLimitBurst=, so it takes over
# if the other one (a hand-started run, a predecessor stuck in a hung mount) ends soon.
EX_TEMPFAIL = 75


def config_option(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """The ``--config`` and ``--verbose`` options of every command that reads the configuration.

    With ``optional`` (``combine``), ./config.toml is not tried: built-in defaults instead.
    """
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML file (default: ${ENVIRONMENT_VARIABLE}, else {SYSTEM_CONFIG} if it "
        f"exists, else {'built-in defaults' if optional else './config.toml'})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="say which config is used and why"
    )
    parser.set_defaults(config_optional=optional)


def command_config(path: Path) -> Config:
    """load_config for a command: the watch paths' overlap check asked in forked children.

    A command runs one thread: a realpath stuck in a hung mount on a thread would keep
    it from ever exiting (system/overlaps.py resolve_in_children); in a child it is left
    behind after RESOLVE_SECONDS and the path compared as written.
    """
    from biaswatch.config import load_config
    from biaswatch.system.overlaps import resolve_in_children

    return load_config(path, resolve_in_children)


def config_path(
    args: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    system: Path = SYSTEM_CONFIG,
) -> tuple[Path, str]:
    """The config file to use and how it was chosen: biaswatch.discovery's rule on ``args``."""
    return discover_config(args.config, environ, system)


def resolve_config(args: argparse.Namespace) -> None:
    """Set ``args.config`` (None: built-in defaults) and ``args.config_source``; say so if verbose.

    Raises:
        NoConfig: the chosen file does not exist (and the command needs one).
    """
    path, source = config_path(args)
    path = path.absolute()
    if source == LOCAL and args.config_optional:
        # combine never read ./config.toml: a stray one in the working directory (the
        # repository's example) must not change a one-off combine behind the user's back.
        args.config, args.config_source = None, BUILT_IN
    elif not path.exists():
        args.config = None
        raise NoConfig([f"no config at {path} (from {why_chosen(source)})"])
    else:
        args.config, args.config_source = path, source
    if args.verbose:
        shown = BUILT_IN if args.config is None else f"config {args.config}"
        print(f"biaswatch: using {shown} (from {why_chosen(args.config_source)})", file=sys.stderr)


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command was asked for JSON (``--json``)."""
    return bool(getattr(args, "json", False))


def fail(args: argparse.Namespace, code: int, message: str, **details: object) -> int:
    """Say why the command failed and return its exit status ``code``.

    Without ``--json``: ``biaswatch <command>: message`` on stderr, one line. With it:
    one JSON object on stdout, the stream a script parses, ``{"error": {"exit_status":
    code, "message": ..., **details}}``; the exit status is the same either way.
    """
    if wants_json(args):
        error = {"exit_status": code, "message": message, **details}
        print(json.dumps({"error": error}, default=str))
        return code
    command = getattr(args, "command", None)
    print(f"biaswatch{' ' + command if command else ''}: {message}", file=sys.stderr)
    return code


def print_problems(exc: ConfigError, args: argparse.Namespace | None = None) -> None:
    """Every problem of a configuration error, one a line, on stderr, naming the file used.

    With ``--json``: one ``{"error": ...}`` object on stdout with every problem (fail()).
    """
    if args is not None and wants_json(args):
        message = exc.problems[0] if len(exc.problems) == 1 else "configuration error"
        config = getattr(args, "config", None)
        fail(args, EX_CONFIG, message, problems=list(exc.problems), config=config)
        return
    if isinstance(exc, NoConfig | MissingExtra):  # one line says it all
        print(f"biaswatch: {exc.problems[0]}", file=sys.stderr)
        return
    where = ""
    if args is not None and getattr(args, "config", None) is not None:
        where = f" in {args.config} (from {why_chosen(args.config_source)})"
    print(f"biaswatch: configuration error{where}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
