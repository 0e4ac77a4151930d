"""``biaswatch run``: the service in the foreground (systemd Type=notify).

The service, the catalog and the executors are imported only here, when the
service runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
from pathlib import Path

import structlog

from biaswatch import logs
from biaswatch.cli.common import (
    EX_CONFIG,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    print_problems,
)
from biaswatch.config import Config, load_config
from biaswatch.errors import ConfigError, SchedulerUnreachable
from biaswatch.service.loop import Service
from biaswatch.system import pidfile, runtime


def run_service(args: argparse.Namespace) -> int:
    """Run the service until it is stopped; re-exec itself on a reload."""
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
        service.reloads.hand_down()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        os.execv(sys.executable, sys.orig_argv)
    _let_go(lock, runtime.runtime_dir(config.service.state_dir))
    return status


def _start_service(config: Config) -> tuple[pidfile.Lock, Service] | int:
    """Lock the state directory first, then build the service; an exit status if not."""
    log = structlog.get_logger(__name__)
    directory = runtime.runtime_dir(config.service.state_dir)
    try:
        lock = pidfile.take(config.service.state_dir, dt.datetime.now(dt.UTC), directory)
    except pidfile.AlreadyRunning as exc:
        return _refused(exc)
    except ConfigError as exc:
        return _cannot_start(exc)
    try:
        _write_pidfile(directory)
        return lock, Service(config)
    except SchedulerUnreachable as exc:
        _let_go(lock, directory)
        action = "start the scheduler, or set [service] fallback_local = true"
        log.error("executor.unreachable", reason=str(exc), action=action)
        print(f"biaswatch: {exc}; {action}", file=sys.stderr)
        return EX_UNAVAILABLE
    except ConfigError as exc:
        _let_go(lock, directory)
        return _cannot_start(exc)


def _let_go(lock: pidfile.Lock, directory: Path) -> None:
    """At a stop or a start that failed: the pidfile goes first, then the lock.

    In that order, a pidfile is never left naming a process that no longer holds the lock.
    """
    runtime.remove_pidfile(directory)
    lock.release()


def _write_pidfile(directory: Path) -> None:
    """The plain pidfile in the runtime directory (system/runtime.py); never trusted."""
    try:
        runtime.prepare(directory)
        runtime.write_pidfile(directory, os.getpid())
    except OSError as exc:
        problem = f"runtime directory {directory}: {exc.strerror}; "
        problem += "give the service's user write access to it (systemd: RuntimeDirectory=)"
        raise ConfigError([problem]) from exc


def _refused(exc: pidfile.AlreadyRunning) -> int:
    """A second ``run`` on one state directory: say who runs, touch nothing, exit 75."""
    holder = f"pid {exc.pid}" if exc.pid is not None else "pid not recorded yet"
    action = f"already running ({holder}); stop that one first, or give this one another state_dir"
    structlog.get_logger(__name__).error(
        "service.already_running", pid=exc.pid, lock=str(exc.path), action=action
    )
    print(f"biaswatch: another service holds {exc.path}: {action}", file=sys.stderr)
    return EX_TEMPFAIL


def _cannot_start(exc: ConfigError) -> int:
    """A deployment problem found while starting: logged and told, exit 78 (no restart)."""
    action = "fix what is listed and start again; systemd does not restart on status 78"
    structlog.get_logger(__name__).error(
        "service.cannot_start", problems=exc.problems, action=action
    )
    print_problems(exc)
    return EX_CONFIG
