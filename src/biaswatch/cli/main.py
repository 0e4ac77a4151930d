"""The command line: ``biaswatch run | masters | accept | reject | check-config | ...``.

Each command's handler lives in a module named after it (cli/<command>.py),
imported only when that command runs; its options are in cli/options.py
(argparse only). So ``biaswatch --help`` and ``biaswatch <command> --help`` load
no library of ours beyond these, and ``biaswatch status`` does not load
matplotlib, ccdproc or the combine engine. The combine children pay for this
module too: multiprocessing runs the parent's main script (the installed
``biaswatch`` one imports this module) in every child before its work
(multiprocessing.spawn.prepare), so it must stay as light as argparse.
Exit statuses: cli/common.py.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from biaswatch import __version__
from biaswatch.cli import options
from biaswatch.cli.common import EX_CONFIG, print_problems, resolve_config
from biaswatch.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A command's one-line help, its options, and where its handler lives."""

    help: str
    options: Callable[[argparse.ArgumentParser], None]
    handler: str  # "module:function", imported only when the command runs


COMMANDS: dict[str, Command] = {
    "run": Command(
        "run the service (foreground; systemd Type=notify)",
        options.add_run_options,
        "biaswatch.cli.run:run_service",
    ),
    "masters": Command(
        "list masters, or choose one for a frame",
        options.add_masters_options,
        "biaswatch.cli.masters:list_masters",
    ),
    "accept": Command(
        "mark a master accepted, overruling biaswatch",
        options.add_accept_options,
        "biaswatch.cli.verdict:record_verdict",
    ),
    "reject": Command(
        "mark a master rejected, overruling biaswatch",
        options.add_reject_options,
        "biaswatch.cli.verdict:record_verdict",
    ),
    "attempts": Command(
        "list each combine's attempts (executor, worker, outcome)",
        options.add_attempts_options,
        "biaswatch.cli.attempts:list_attempts",
    ),
    "check-config": Command(
        "validate the config and print each camera's effective settings",
        options.add_check_config_options,
        "biaswatch.cli.check_config:check_config",
    ),
    "log": Command(
        "show the service's log as readable lines",
        options.add_log_options,
        "biaswatch.cli.log:show_log",
    ),
    "status": Command(
        "each camera at a glance, and the service",
        options.add_status_options,
        "biaswatch.cli.status:show_status",
    ),
    "report": Command(
        "write a night's report as one HTML page",
        options.add_report_options,
        "biaswatch.cli.report:write_report_command",
    ),
    "backfill": Command(
        "group and combine an archive of past nights, as the service would",
        options.add_backfill_options,
        "biaswatch.cli.backfill:run_backfill",
    ),
    "simulate": Command(
        "write realistic raw bias frames into a camera's watched directory",
        options.add_simulate_options,
        "biaswatch.cli.simulate:write_simulated_frames",
    ),
    "combine": Command(
        "combine frames into a master once, as the service does (no service needed)",
        options.add_combine_options,
        "biaswatch.cli.combine:combine_command",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    name_the_main_script()
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "config_optional"):  # the commands that read a config (config_option)
            resolve_config(args)
        return command_handler(COMMANDS[args.command])(args)
    except ConfigError as exc:
        print_problems(exc, args)
        # check-config exits 2 on every problem of its config, a missing file included.
        status: int = getattr(args, "config_error_status", EX_CONFIG)
        return status


def name_the_main_script() -> None:
    """Let multiprocessing's children skip the installed ``biaswatch`` script, as under ``-m``.

    Each combine child prepares the parent's main module before its work
    (multiprocessing.spawn.prepare): one known only by path, as the console script
    is, it runs again as __mp_main__ (runpy); one known by name as a package's
    ``__main__`` it leaves alone. Named so, a child of the script starts as one of
    ``python -m biaswatch`` does (what the tests run): warm-service startup_seconds
    14-19 ms -> 9-12 ms (3 sets each). Only a script that called this ``main`` is named.
    """
    script = sys.modules["__main__"]
    if script.__spec__ is None and getattr(script, "main", None) is main:
        script.__spec__ = importlib.util.find_spec("biaswatch.__main__")


def build_parser() -> argparse.ArgumentParser:
    """Every command with its options; no command's module is imported."""
    parser = argparse.ArgumentParser(prog="biaswatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"biaswatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.options(commands.add_parser(name, help=command.help, description=command.help))
    return parser


def command_handler(command: Command) -> Handler:
    """The command's handler, importing its module (and the libraries it needs) now."""
    module_name, function = command.handler.split(":")
    handler: Handler = getattr(importlib.import_module(module_name), function)
    return handler
