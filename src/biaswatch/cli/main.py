"""The command line: biaswatch run | masters | accept | reject | check-config | ....

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
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from biaswatch import __version__
from biaswatch.cli import options
from biaswatch.cli.common import EX_CONFIG, EX_USAGE, fail, print_problems, resolve_config
from biaswatch.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A command's one-line help, its options, and where its handler lives."""

    help: str
    options: Callable[[argparse.ArgumentParser], None]
    handler: str  # "module:function", imported only when the command runs
    example: str = ""  # shown under "example:" in the command's --help
    statuses: str = ""  # its exit statuses when they differ from EXIT_STATUSES (status)


# status follows the Nagios plugin convention (monitoring runs it), not the table below.
STATUS_EXIT_STATUSES = """exit status (Nagios plugin convention, unlike the other commands):
  0   OK
  1   WARNING: degraded (a watch directory unreadable or not answering, a silent night)
  2   CRITICAL: service not running, or a finished night's frames have no accepted master
  3   UNKNOWN: the service's or the catalog's state cannot be read
  78  configuration error (monitoring shows it as UNKNOWN)"""


COMMANDS: dict[str, Command] = {
    "run": Command(
        "run the service (foreground; systemd Type=notify)",
        options.add_run_options,
        "biaswatch.cli.run:run_service",
        "biaswatch run --config /etc/biaswatch/config.toml   # as the systemd unit runs it",
    ),
    "reload": Command(
        "make the running service load its config again, and wait for the outcome",
        options.add_reload_options,
        "biaswatch.cli.reload:reload_service",
        "biaswatch reload --config /etc/biaswatch/config.toml   # systemctl reload does this",
    ),
    "masters": Command(
        "list masters, or choose one for a frame",
        options.add_masters_options,
        "biaswatch.cli.masters:list_masters",
        "biaswatch masters --camera cryo --for 2026-12-04T03:12:00 --like sci.fits --explain",
    ),
    "accept": Command(
        "mark a master accepted, overruling biaswatch",
        options.add_accept_options,
        "biaswatch.cli.verdict:record_verdict",
        "biaswatch accept /srv/masters/cryo/rejected/2026-12-03/rejected_cryo_2026-12-03"
        "_02_4096x4128-1x1.fits --why 'drift is real: new controller'",
    ),
    "reject": Command(
        "mark a master rejected, overruling biaswatch",
        options.add_reject_options,
        "biaswatch.cli.verdict:record_verdict",
        "biaswatch reject /srv/masters/cryo/latest.fits --why 'light leak in frames 3-7'",
    ),
    "attempts": Command(
        "list each combine's attempts (executor, worker, outcome)",
        options.add_attempts_options,
        "biaswatch.cli.attempts:list_attempts",
        "biaswatch attempts --night 2026-12-03",
    ),
    "check-config": Command(
        "validate the config and print each camera's effective settings",
        options.add_check_config_options,
        "biaswatch.cli.check_config:check_config",
        "biaswatch check-config --config /etc/biaswatch/config.toml",
    ),
    "log": Command(
        "show the service's log as readable lines",
        options.add_log_options,
        "biaswatch.cli.log:show_log",
        "biaswatch log --camera cryo --night 2026-12-03 --level warning",
    ),
    "status": Command(
        "each camera at a glance, and the service; exits 0 OK, 1 WARNING, 2 CRITICAL, "
        "3 UNKNOWN (Nagios)",
        options.add_status_options,
        "biaswatch.cli.status:show_status",
        "biaswatch status --timeout 5   # as an NRPE or Icinga check command",
        STATUS_EXIT_STATUSES,
    ),
    "report": Command(
        "write a night's report as one HTML page",
        options.add_report_options,
        "biaswatch.cli.report:write_report_command",
        "biaswatch report --night 2026-12-03 -o night.html",
    ),
    "backfill": Command(
        "group and combine an archive of past nights, as the service would",
        options.add_backfill_options,
        "biaswatch.cli.backfill:run_backfill",
        "biaswatch backfill --camera cryo /archive/cryo/2026-11",
    ),
    "simulate": Command(
        "write realistic raw bias frames into a camera's watched directory",
        options.add_simulate_options,
        "biaswatch.cli.simulate:write_simulated_frames",
        "biaswatch simulate --camera te --frames 10 --interval 2",
    ),
    "combine": Command(
        "combine frames into a master once, as the service does (no service needed)",
        options.add_combine_options,
        "biaswatch.cli.combine:combine_command",
        "biaswatch combine --config config.toml --camera cryo -o master.fits raw/bias_*.fits",
    ),
    "completion": Command(
        "print the shell completion script (bash, zsh or tcsh), made by shtab from this parser",
        options.add_completion_options,
        "biaswatch.cli.completion:print_completion",
        "biaswatch completion bash  # save as /etc/bash_completion.d/biaswatch",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    name_the_main_script()
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(json_errors="--json" in given).parse_args(given)
    try:
        if hasattr(args, "config_optional"):  # the commands that read a config (config_option)
            resolve_config(args)
        return command_handler(COMMANDS[args.command])(args)
    except ConfigError as exc:
        print_problems(exc, args)
        return EX_CONFIG
    except BrokenPipeError:
        # `biaswatch status | head`: the reader left. Python's recipe (docs.python.org,
        # "Note on SIGPIPE"): point stdout at /dev/null so the flush at exit cannot raise
        # again, and exit as a process killed by SIGPIPE would be reported (128 + 13).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


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


# The exit statuses every command uses (cli/common.py), shown under each --help.
EXIT_STATUSES = """exit status:
  0   success
  1   failure, or nothing found (masters --for with no master that fits)
  2   usage: a bad option or argument (argparse)
  69  unavailable: the Dask scheduler did not answer at start (run);
      no service running, or no answer in time (reload)
  75  another service holds the state directory (run; systemd retries)
  78  configuration error: every problem listed on stderr (EX_CONFIG);
      the running service refused the new config and kept the old one (reload)
with --json, an error is one {"error": {"exit_status", "message", ...}} object on stdout"""


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are JSON when the command line asks for JSON."""

    json_errors = False  # set on each parser by build_parser

    def error(self, message: str) -> NoReturn:
        """A usage error: argparse's usage and message, or with ``--json`` one error object."""
        if self.json_errors:
            asked = argparse.Namespace(json=True)  # the command line is not parsed yet
            fail(asked, EX_USAGE, message, usage=self.format_usage().strip())
            sys.exit(EX_USAGE)
        super().error(message)


def build_parser(*, json_errors: bool = False) -> argparse.ArgumentParser:
    """Every command with its options; no command's module is imported.

    With ``json_errors`` (``--json`` on the command line), a usage error is printed as
    the JSON error object every command prints (cli/common.py fail), exit status 2.
    """
    parser = Parser(
        prog="biaswatch",
        description="The nightly master-bias service for observatory cameras, and its tools.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"biaswatch {__version__}")
    parser.json_errors = json_errors
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        example = f"example:\n  {command.example}\n\n" if command.example else ""
        sub = commands.add_parser(
            name,
            help=command.help,
            description=command.help[0].upper() + command.help[1:] + ".",
            epilog=example + (command.statuses or EXIT_STATUSES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.json_errors = json_errors
        command.options(sub)
    return parser


def command_handler(command: Command) -> Handler:
    """The command's handler, importing its module (and the libraries it needs) now."""
    module_name, function = command.handler.split(":")
    handler: Handler = getattr(importlib.import_module(module_name), function)
    return handler
