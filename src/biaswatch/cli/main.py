"""The command line: ``biaswatch run | masters | accept | reject | check-config | ...``.

Each command lives in a module of its own (cli/<command>.py) that is imported only
when that command is chosen: ``biaswatch --help`` lists the commands from the table
below without importing any of them, and ``biaswatch status`` does not load
matplotlib, ccdproc or the combine engine. The combine children pay for this
module too: multiprocessing runs the parent's main script (the installed
``biaswatch`` one imports this module) in every child before its work
(multiprocessing.spawn.prepare), so it must stay as light as argparse.
Exit statuses: cli/common.py.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from biaswatch import __version__
from biaswatch.cli.common import EX_CONFIG, print_problems
from biaswatch.errors import ConfigError


@dataclass(frozen=True)
class Command:
    """A command's one-line help, and where its options and handler live."""

    help: str
    options: str  # "module:function" adding the options and the handler to its parser


COMMANDS: dict[str, Command] = {
    "run": Command(
        "run the service (foreground; systemd Type=notify)", "biaswatch.cli.run:add_run_options"
    ),
    "masters": Command(
        "list masters, or choose one for a frame", "biaswatch.cli.masters:add_masters_options"
    ),
    "accept": Command(
        "mark a master accepted, overruling biaswatch", "biaswatch.cli.verdict:add_accept_options"
    ),
    "reject": Command(
        "mark a master rejected, overruling biaswatch", "biaswatch.cli.verdict:add_reject_options"
    ),
    "attempts": Command(
        "list each combine's attempts (executor, worker, outcome)",
        "biaswatch.cli.attempts:add_attempts_options",
    ),
    "check-config": Command(
        "validate the config and print each camera's effective settings",
        "biaswatch.cli.check_config:add_check_config_options",
    ),
    "log": Command("show the service's log as readable lines", "biaswatch.cli.log:add_log_options"),
    "status": Command(
        "each camera at a glance, and the service", "biaswatch.cli.status:add_status_options"
    ),
    "report": Command(
        "write a night's report as one HTML page", "biaswatch.cli.report:add_report_options"
    ),
    "backfill": Command(
        "group and combine an archive of past nights, as the service would",
        "biaswatch.cli.backfill:add_backfill_options",
    ),
    "simulate": Command(
        "write realistic raw bias frames into a camera's watched directory",
        "biaswatch.cli.simulate:add_simulate_options",
    ),
    "combine": Command(
        "combine frames into a master once, as the service does (no service needed)",
        "biaswatch.cli.combine:add_combine_options",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen_command(arguments))
    args = parser.parse_args(arguments)
    try:
        status: int = args.handler(args)
    except ConfigError as exc:
        print_problems(exc)
        return EX_CONFIG
    return status


def chosen_command(arguments: Sequence[str]) -> str | None:
    """The command named on the line: the first word that is not an option.

    The top-level parser's only options (-h, --version) take no value, so the first
    such word is the one argparse will take as the command too.
    """
    return next((a for a in arguments if not a.startswith("-")), None)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Every command's name and help; the options of the chosen one only (its module loads)."""
    parser = argparse.ArgumentParser(prog="biaswatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"biaswatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if name == chosen:
            _options(command)(sub)
    return parser


def _options(command: Command) -> Callable[[argparse.ArgumentParser], None]:
    """The command's option function, importing its module (and its heavy imports) now."""
    module_name, function = command.options.split(":")
    adder: Callable[[argparse.ArgumentParser], None] = getattr(
        importlib.import_module(module_name), function
    )
    return adder
