"""The command line: ``biaswatch run | masters | accept | reject | check-config | ...``.

Exit statuses: 0 success, 1 failure, 2 usage error, 69 Dask scheduler unreachable
at start (EX_UNAVAILABLE; systemd restarts it), 75 another service already runs
on the same state directory (EX_TEMPFAIL; ``run`` only), 78 configuration error
(EX_CONFIG from sysexits.h; the systemd unit has RestartPreventExitStatus=78
so a broken config does not restart-loop).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from biaswatch import __version__
from biaswatch.cli.attempts import add_command as add_attempts_command
from biaswatch.cli.backfill import add_command as add_backfill_command
from biaswatch.cli.check_config import add_command
from biaswatch.cli.log import add_command as add_log_command
from biaswatch.cli.masters import add_commands
from biaswatch.cli.status import add_command as add_status_command
from biaswatch.config import Config, load_config
from biaswatch.errors import ConfigError, SchedulerUnreachable
from biaswatch.publish.report import add_command as add_report_command
from biaswatch.system import pidfile

if TYPE_CHECKING:
    from biaswatch.service.loop import Service

EX_CONFIG = 78
EX_UNAVAILABLE = 69  # sysexits.h: the Dask scheduler did not answer; systemd retries
# sysexits.h "temporary failure; the user is invited to retry": another service holds
# the state directory. Not 78: under systemd (Restart=on-failure, not prevented for
# 75) the unit tries again every RestartSec= up to StartLimitBurst=, so it takes over
# if the other one (a hand-started run, a predecessor stuck in a hung mount) ends soon.
EX_TEMPFAIL = 75


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except ConfigError as exc:
        _print_problems(exc)
        return EX_CONFIG
    return status


def _print_problems(exc: ConfigError) -> None:
    print("biaswatch: configuration error:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biaswatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"biaswatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the service (foreground; systemd Type=notify)")
    _config_option(run)
    run.set_defaults(handler=_run)

    add_commands(commands)
    add_attempts_command(commands)
    add_command(commands)
    add_log_command(commands)
    add_status_command(commands)
    add_report_command(commands)
    add_backfill_command(commands)

    simulate = commands.add_parser(
        "simulate", help="write realistic raw bias frames into a camera's watched directory"
    )
    _config_option(simulate)
    simulate.add_argument("--camera", required=True, help="camera name from the config")
    simulate.add_argument("--frames", type=int, help="how many (default: expected_frames)")
    simulate.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    simulate.add_argument("--seed", type=int, help="random seed (default: random)")
    simulate.set_defaults(handler=_simulate)
    _combine_parser(commands)
    return parser


def _combine_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    combine = commands.add_parser(
        "combine",
        help="combine frames into a master once, as the service does (no service needed)",
    )
    combine.add_argument("--config", type=Path, help="TOML file (default: built-in defaults)")
    combine.add_argument("--camera", help="use this camera's settings from --config")
    combine.add_argument(
        "--calibrated", action="store_true", help="the files are calibrated already"
    )
    combine.add_argument("--mem-limit", help="memory for the combine, e.g. 350MB or 2GB")
    combine.add_argument("--method", choices=["average", "median"])
    combine.add_argument("--sigma", nargs=2, type=float, metavar=("LOW", "HIGH"))
    combine.add_argument("-o", "--output", type=Path, required=True, help="the master to write")
    combine.add_argument("files", nargs="+", type=Path, help="raw (or calibrated) frames")
    combine.set_defaults(handler=_combine)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("config.toml"),
        help="TOML file (default: ./config.toml)",
    )


def _run(args: argparse.Namespace) -> int:
    from biaswatch import logs

    # A SIGHUP before the service can take it would end the process (the default
    # action), and systemd counts SIGHUP as a clean exit: no restart. A reload blocks
    # SIGHUP across its exec; from here on one is kept for the service.
    early: list[bool] = []
    signal.signal(signal.SIGHUP, lambda _signum, _frame: early.append(True))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    config = load_config(args.config)
    logs.configure(config.log_path, config.service.log_level)
    started = _start_service(config)
    if isinstance(started, int):
        return started
    lock, service = started
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    signal.signal(signal.SIGHUP, service.request_reload)
    if early:
        service.request_reload()
    status = service.run()
    if service.reload_requested:
        # The same process id (systemd's MainPID) runs again from the top with the new
        # config; the catalog and a start scan pick up where this one stopped. The lock
        # goes along, so no other service can start in between.
        lock.keep_across_exec()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        os.execv(sys.executable, sys.orig_argv)
    lock.release()
    return status


def _start_service(config: Config) -> tuple[pidfile.Lock, Service] | int:
    """Lock the state directory first, then build the service; an exit status if not."""
    from biaswatch.service.loop import Service

    log = structlog.get_logger("biaswatch.service")
    try:
        lock = pidfile.take(config.service.state_dir, dt.datetime.now(dt.UTC))
    except pidfile.AlreadyRunning as exc:
        return _refused(exc)
    except ConfigError as exc:
        return _cannot_start(exc)
    try:
        return lock, Service(config)
    except SchedulerUnreachable as exc:
        lock.release()
        action = "start the scheduler, or set [service] fallback_local = true"
        log.error("executor.unreachable", reason=str(exc), action=action)
        print(f"biaswatch: {exc}; {action}", file=sys.stderr)
        return EX_UNAVAILABLE
    except ConfigError as exc:
        lock.release()
        return _cannot_start(exc)


def _refused(exc: pidfile.AlreadyRunning) -> int:
    """A second ``run`` on one state directory: say who runs, touch nothing, exit 75."""
    holder = f"pid {exc.pid}" if exc.pid is not None else "pid not recorded yet"
    action = f"already running ({holder}); stop that one first, or give this one another state_dir"
    structlog.get_logger("biaswatch.service").error(
        "service.already_running", pid=exc.pid, lock=str(exc.path), action=action
    )
    print(f"biaswatch: another service holds {exc.path}: {action}", file=sys.stderr)
    return EX_TEMPFAIL


def _cannot_start(exc: ConfigError) -> int:
    """A deployment problem found while starting: logged and told, exit 78 (no restart)."""
    action = "fix what is listed and start again; systemd does not restart on status 78"
    structlog.get_logger("biaswatch.service").error(
        "service.cannot_start", problems=exc.problems, action=action
    )
    _print_problems(exc)
    return EX_CONFIG


def _simulate(args: argparse.Namespace) -> int:
    from biaswatch.testing.camera import simulate

    config = load_config(args.config)
    camera = config.camera(args.camera)
    frames = args.frames or camera.expected_frames
    print(f"writing {frames} bias frames for {camera.name} into {camera.watch[0]}")
    paths = simulate(
        camera,
        frames=frames,
        interval=args.interval,
        seed=args.seed,
        on_frame=lambda p: print(f"  wrote {p.name}", flush=True),
    )
    print(f"done: {len(paths)} frames")
    return 0


def _combine(args: argparse.Namespace) -> int:
    import logging

    import structlog

    from biaswatch.cli import combine as oneshot
    from biaswatch.config import ServiceConfig, SiteConfig
    from biaswatch.errors import CombineFailed
    from biaswatch.settings import CombineSettings, parse_size

    # A one-shot command: its summary on stdout, only warnings (a frame's date taken
    # from its mtime, say) on stderr, not the service's per-frame info events.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    config = load_config(args.config) if args.config is not None else None
    if args.camera is not None and config is None:
        raise ConfigError(["--camera needs --config"])
    configured = config.camera(args.camera) if config and args.camera else None
    camera = oneshot.camera_for(configured, args.files)
    overrides: dict[str, object] = {}
    if args.method is not None:
        overrides["method"] = args.method
    if args.sigma is not None:
        overrides["sigma_low"], overrides["sigma_high"] = args.sigma
    service = config.service if config else ServiceConfig()
    try:
        mem_limit = parse_size(args.mem_limit) if args.mem_limit else service.mem_limit
        request = oneshot.Request(
            files=tuple(args.files),
            output=args.output,
            camera=camera,
            site=config.site if config else SiteConfig(),
            # Validated again: model_copy(update=...) would skip validation.
            combine=CombineSettings.model_validate({**camera.combine.model_dump(), **overrides}),
            mem_limit=mem_limit,
            calibrated=args.calibrated,
        )
        print(oneshot.run(request))
    except (CombineFailed, ValueError) as exc:
        print(f"biaswatch combine: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    return 0
