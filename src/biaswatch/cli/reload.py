"""``biaswatch reload``: ask the running service to load its config again, and wait for the answer.

The unit's ExecReload= runs it (``--pid $MAINPID``), so ``systemctl reload biaswatch``
fails when the service refused the new config, instead of reporting success for a
``kill -HUP`` that returned at once. It finds the service by the state directory's
lock (system/pidfile.py), writes a request with a fresh nonce into the service's
runtime directory, sends SIGHUP, and waits for the answer to that nonce
(service/reload.py, system/runtime.py). Exit status 0: the new program runs with
the new config; 78: the service refused it (its problems printed) and runs on the
old one; 69: no service, or no answer in time.

Where the state directory is: from the config's ``[service] state_dir`` alone, read
from its TOML, so a config that does not load (the very case a reload must report)
still finds the service. Under systemd, ``$RUNTIME_DIRECTORY`` and ``--pid`` are
enough even for a file that is not TOML at all.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from biaswatch.cli.common import EX_CONFIG, EX_UNAVAILABLE, fail
from biaswatch.config import ServiceConfig, relative_to_config
from biaswatch.errors import ConfigError
from biaswatch.system import pidfile, runtime

# How often the answer file is looked for: a reload takes seconds (a clean stop and
# a new interpreter's imports), so 50 ms costs nothing and adds little to the wait.
POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Target:
    """The service to ask: its pid and its runtime directory."""

    pid: int
    directory: Path


def reload_service(args: argparse.Namespace) -> int:
    """Send the service a reload request and SIGHUP; report its answer."""
    target = _find(args)
    if isinstance(target, int):
        return target
    try:
        nonce = runtime.new_request(target.directory)
    except OSError as exc:
        return fail(
            args,
            EX_UNAVAILABLE,
            f"cannot write the reload request in {target.directory}: {exc.strerror}; "
            "run as root or as the service's user",
        )
    started = time.monotonic()
    try:
        os.kill(target.pid, signal.SIGHUP)
    except OSError as exc:
        runtime.withdraw_request(target.directory, nonce)
        return fail(args, EX_UNAVAILABLE, f"cannot signal pid {target.pid}: {exc.strerror}")
    return _report(args, target, nonce, started)


def _report(args: argparse.Namespace, target: Target, nonce: str, started: float) -> int:
    """Wait for the answer to ``nonce`` and say what it was."""
    outcome = _await_answer(target, nonce, started + args.timeout)
    seconds = round(time.monotonic() - started, 2)
    if outcome is None:
        runtime.withdraw_request(target.directory, nonce)
        why = "ended" if not _alive(target.pid) else f"did not answer within {args.timeout:g} s"
        action = "see its log (biaswatch log, or journalctl -u biaswatch)"
        return fail(args, EX_UNAVAILABLE, f"the service (pid {target.pid}) {why}; {action}")
    if outcome.outcome == "refused":
        message = f"the service refused {outcome.config} and keeps running on the old config"
        code = fail(args, EX_CONFIG, message, problems=outcome.problems, pid=outcome.pid)
        if not args.json:
            for problem in outcome.problems:
                print(f"  {problem}", file=sys.stderr)
        return code
    if args.json:
        answer = {"pid": outcome.pid, "config": outcome.config, "seconds": seconds}
        print(json.dumps({"reloaded": answer}))
    else:
        print(f"biaswatch: reloaded {outcome.config} (pid {outcome.pid}, {seconds:g} s)")
    return 0


def _await_answer(target: Target, nonce: str, deadline: float) -> runtime.ReloadOutcome | None:
    """The service's answer, or None once the deadline passes or the service is gone."""
    while True:
        outcome = runtime.read_outcome(target.directory, nonce)
        if outcome is not None:
            return outcome
        if not _alive(target.pid):  # it may have answered just before it ended
            return runtime.read_outcome(target.directory, nonce)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a re-execution keeps the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def _find(args: argparse.Namespace) -> Target | int:
    """The service to ask, or the exit status of why there is none."""
    state_dir = _state_dir(args.config)
    if isinstance(state_dir, ConfigError):
        if args.pid is not None and os.environ.get(runtime.ENVIRONMENT_VARIABLE):
            return Target(args.pid, runtime.runtime_dir(Path()))  # as systemd's ExecReload=
        message = "the config does not load, so the service could not be found; nothing was sent"
        return fail(args, EX_CONFIG, message, problems=state_dir.problems)
    try:
        holder = pidfile.running(state_dir)
    except OSError as exc:
        return fail(args, EX_UNAVAILABLE, f"cannot read the lock in {state_dir}: {exc.strerror}")
    lock = pidfile.path_for(state_dir)
    if holder is None:
        return fail(args, EX_UNAVAILABLE, f"no biaswatch service is running (none holds {lock})")
    pid = args.pid if args.pid is not None else holder.pid
    if pid is None:  # the service is between its lock and writing its pid: milliseconds
        return fail(args, EX_UNAVAILABLE, f"{lock} names no pid yet; try again")
    if holder.pid is not None and holder.pid != pid:
        return fail(args, EX_UNAVAILABLE, f"{lock} is held by pid {holder.pid}, not pid {pid}")
    return Target(pid, holder.runtime or runtime.runtime_dir(state_dir))


def _state_dir(config: Path) -> Path | ConfigError:
    """The config's ``[service] state_dir``, from its TOML alone, resolved as load_config does.

    Not the whole config: the service checks that and answers; a config that does not
    load (the very case a reload must report) still names its state directory, and no
    watch path is resolved here (a forked child each, up to RESOLVE_SECONDS on a hung
    mount) only to learn where the lock is.
    """
    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        return ConfigError([f"{config}: cannot read: {exc.strerror or exc}"])
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return ConfigError([f"{config}: not valid TOML: {exc}"])
    service = raw.get("service", {})
    given = service.get("state_dir") if isinstance(service, dict) else None
    text = given if isinstance(given, str) else str(ServiceConfig().state_dir)
    return relative_to_config(config.parent, Path(text))
