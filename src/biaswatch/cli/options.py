"""Every command's options: argparse and the standard library only.

Apart from the commands' modules so that ``biaswatch --help`` and ``biaswatch
<command> --help`` import nothing else: a command's module, with the libraries it
needs, is imported only when the command runs (cli/main.py). Each function adds
one command's options to its parser; the handler is named in cli/main.py's table.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from biaswatch.cli.common import config_option

# The levels ``biaswatch log --level`` takes, lowest first: the standard logging
# levels' names, lower-cased, as the service's JSON log writes them.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def night_text(text: str) -> str:
    """A ``--night`` value: a calendar date, YYYY-MM-DD, as the catalog writes nights.

    argparse turns the ArgumentTypeError into a one-line usage error (exit 2), not a
    silent "no masters yet" for ``--night yesterday``.
    """
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-03") from None


def night_date(text: str) -> dt.date:
    """A ``--night`` value as a date (``log``, ``report``), with night_text's one-line error."""
    return dt.date.fromisoformat(night_text(text))


def time_text(text: str) -> str:
    """A ``--for`` value: an ISO 8601 time (UTC unless it has a zone), kept as written."""
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2026-12-04T03:12:00 (UTC) or 2026-12-03T21:12:00-06:00"
        ) from None
    return text


def json_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: the command's answer (``what``) as JSON on stdout, its errors too.

    Errors are then one ``{"error": {...}}`` object on stdout (cli/common.py fail),
    with the same exit status as without ``--json``.
    """
    parser.add_argument(
        "--json", action="store_true", help=f"print {what}; errors as one JSON object too"
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The ``run`` command's options."""
    config_option(parser)


# Under systemd ExecReload= is bounded by TimeoutStartSec= (systemd.service(5); default
# DefaultTimeoutStartSec=90s, systemd-system.conf(5)): waiting 80 s, reload reports
# "no answer" itself before systemd kills it.
RELOAD_TIMEOUT_SECONDS = 80.0


def add_reload_options(parser: argparse.ArgumentParser) -> None:
    """The ``reload`` command's options."""
    config_option(parser)
    parser.add_argument(
        "--pid",
        type=int,
        help="the service's pid (systemd's $MAINPID); default: the one holding the state "
        "directory's lock",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=RELOAD_TIMEOUT_SECONDS,
        help=f"seconds to wait for the service's answer (default {RELOAD_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_masters_options(parser: argparse.ArgumentParser) -> None:
    """The ``masters`` command's options."""
    config_option(parser)
    parser.add_argument("--camera", help="only this camera")
    parser.add_argument(
        "--night", type=night_text, help="only this night (YYYY-MM-DD, the evening's date)"
    )
    parser.add_argument(
        "--for",
        dest="for_time",
        metavar="TIME",
        type=time_text,
        help="print the accepted master to use for a frame taken at TIME (ISO, UTC if no "
        "zone); needs --camera",
    )
    parser.add_argument(
        "--like",
        metavar="FRAME",
        type=Path,
        help="only masters of this raw frame's configuration (its geometry: segments, "
        "binning, group_by values), read as the service reads it; needs --camera",
    )
    parser.add_argument(
        "--current", action="store_true", help="only each camera's current master (latest.fits)"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="with --for: list every candidate and why it was or was not chosen (verdict, "
        "configuration, age against the camera's max_age_days, distance in time)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array (with --for: an object, the chosen path and every decision)",
    )


def add_accept_options(parser: argparse.ArgumentParser) -> None:
    """The ``accept`` command's options."""
    _verdict_options(parser, "accepted")


def add_reject_options(parser: argparse.ArgumentParser) -> None:
    """The ``reject`` command's options."""
    _verdict_options(parser, "rejected")


def _verdict_options(parser: argparse.ArgumentParser, state: str) -> None:
    config_option(parser)
    parser.add_argument("master", type=Path, help="the master's path")
    parser.add_argument("--why", required=True, help="the reason, kept in the catalog")
    json_option(parser, "one JSON object: the master's new path, its verdict, latest.fits")
    parser.set_defaults(state=state)


def add_attempts_options(parser: argparse.ArgumentParser) -> None:
    """The ``attempts`` command's options."""
    config_option(parser)
    parser.add_argument("--set", type=int, dest="set_id", help="only this set")
    parser.add_argument(
        "--night", type=night_text, help="only this night (YYYY-MM-DD, the evening's date)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")


def add_check_config_options(parser: argparse.ArgumentParser) -> None:
    """The ``check-config`` command's options."""
    config_option(parser)
    json_option(parser, "the effective settings as one JSON object")


def add_completion_options(parser: argparse.ArgumentParser) -> None:
    """The ``completion`` command's options."""
    parser.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="the shell to complete")


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """The ``log`` command's options."""
    config_option(parser)
    parser.add_argument("--camera", help="only events of this camera (and service-wide ones)")
    parser.add_argument("--night", type=night_date, help="only this night (YYYY-MM-DD)")
    parser.add_argument("--level", choices=LOG_LEVELS, default="info", help="at least this")
    parser.add_argument("--follow", action="store_true", help="keep printing new events")
    json_option(parser, "each event as one JSON object a line (JSON Lines), as logged")


def add_status_options(parser: argparse.ArgumentParser) -> None:
    """The ``status`` command's options."""
    config_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=3.0,  # cli/status.py PROBE_SECONDS (kept out of this light module)
        metavar="SECONDS",
        help="how long the watch directories get to answer; one that does not (a hung "
        "mount) is reported, never waited for (default %(default)g)",
    )


def _positive_seconds(text: str) -> float:
    """A number of seconds above 0, for argparse."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return seconds


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """The ``report`` command's options."""
    config_option(parser)
    parser.add_argument("--night", type=night_date, required=True, help="YYYY-MM-DD (the evening)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the HTML file")
    json_option(parser, "one JSON object naming the page written")


def add_backfill_options(parser: argparse.ArgumentParser) -> None:
    """The ``backfill`` command's options."""
    config_option(parser)
    parser.add_argument("--camera", required=True, help="the camera the frames come from")
    parser.add_argument("directories", nargs="+", type=Path, help="archive directories")
    json_option(parser, "one JSON object with the counts (no progress bars)")


def add_simulate_options(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` command's options."""
    config_option(parser)
    parser.add_argument("--camera", required=True, help="camera name from the config")
    parser.add_argument("--frames", type=int, help="how many (default: expected_frames)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    parser.add_argument("--seed", type=int, help="random seed (default: random)")
    parser.add_argument(
        "--layout",
        choices=["single", "extensions", "amplifiers", "binned"],
        default="single",
        help="one image (default); 4 image extensions with DATASEC only; the camera's "
        "calibrate.amplifiers in one image; a window binned 2x1 (CCDSUM)",
    )
    json_option(parser, "one JSON object with the frames written, at the end")


def add_combine_options(parser: argparse.ArgumentParser) -> None:
    """The ``combine`` command's options."""
    config_option(parser, optional=True)
    parser.add_argument("--camera", help="use this camera's settings from --config")
    parser.add_argument(
        "--calibrated", action="store_true", help="the files are calibrated already"
    )
    parser.add_argument("--mem-limit", help="memory for the combine, e.g. 350MB or 2GB")
    parser.add_argument("--method", choices=["average", "median"])
    parser.add_argument("--sigma", nargs=2, type=float, metavar=("LOW", "HIGH"))
    parser.add_argument("-o", "--output", type=Path, required=True, help="the master to write")
    parser.add_argument("files", nargs="+", type=Path, help="raw (or calibrated) frames")
    json_option(parser, "one JSON object: the master, how many frames, the seconds taken")
