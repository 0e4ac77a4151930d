"""A reload (SIGHUP) that says how it went: to systemd, to the log, and to whoever asked.

On SIGHUP the service tells systemd ``RELOADING=1`` (with ``MONOTONIC_USEC=``, as
Type=notify-reload on systemd >= 253 requires), then loads the config file again:

- It does not load: ``config.reload_failed`` is logged with every problem, the
  service keeps running on the old config, and tells systemd ``READY=1`` with
  ``STATUS=reload failed: ...``. Each waiting request is answered "refused".
- It loads: the service stops cleanly and cli/run.py re-executes it (same pid) with
  the new config. The requests go along in ``BIASWATCH_RELOAD_ANSWER`` (with any
  written while it stopped, whose SIGHUP this program swallowed); the new
  program answers them "reloaded" right after its ``READY=1``, so "reloaded" means
  the new config is in effect. A new program that cannot start exits, which the
  waiting ``biaswatch reload`` sees as the pid gone.

Why a re-execution: everything the service knows is in the catalog and on disk, so
starting afresh is the one way to apply any change (cameras, directories, settings)
correctly. Requests and answers are files in the runtime directory (system/runtime.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

from biaswatch.config import Config, load_config
from biaswatch.errors import ConfigError
from biaswatch.system import runtime
from biaswatch.system.notify import Notifier, reloading_message

log = structlog.get_logger(__name__)

# The requests a reload takes, handed to the program it re-executes:
# {"dir": <runtime directory the requests came from>, "nonces": [...]}.
HANDED_DOWN = "BIASWATCH_RELOAD_ANSWER"


class Reloads:
    """Checks a new config on SIGHUP and answers the reload requests."""

    def __init__(self, config: Config, notifier: Notifier) -> None:
        self._config = config
        self._notifier = notifier
        self._directory = runtime.runtime_dir(config.service.state_dir)
        self._handed: tuple[Path, list[str]] = _handed_down()
        self._taken: list[str] = []  # by a check that passed, for the new program

    def check(self) -> bool:
        """SIGHUP's work: whether the new config loads (the caller then stops to re-execute)."""
        nonces = runtime.take_requests(self._directory)
        path = self._config.path
        self._notifier.notify(reloading_message(f"reloading {path}"))
        try:
            load_config(path)
        except ConfigError as exc:
            log.error(
                "config.reload_failed",
                problems=exc.problems,
                requests=len(nonces),
                action="kept the old config",
            )
            self._notifier.notify(f"READY=1\nSTATUS=reload failed: {exc.problems[0]}")
            self._answer(self._directory, nonces, "refused", list(exc.problems))
            return False
        log.info("config.reloading", config=str(path), requests=len(nonces))
        self._taken = nonces
        return True

    def hand_down(self) -> None:
        """Just before the re-execution: pass the requests on to the new program.

        Requests written since the check go along too: their SIGHUP reached this
        program while it stopped, and the new program reads the config after them.
        """
        nonces = self._taken + runtime.take_requests(self._directory)
        os.environ[HANDED_DOWN] = json.dumps({"dir": str(self._directory), "nonces": nonces})

    def answer_handed_down(self) -> None:
        """After ``READY=1`` of a re-executed service: the reload that started it succeeded."""
        directory, nonces = self._handed
        self._handed = (directory, [])
        self._answer(directory, nonces, "reloaded", [])

    def _answer(
        self, directory: Path, nonces: list[str], outcome: runtime.Outcome, problems: list[str]
    ) -> None:
        for nonce in nonces:
            config = str(self._config.path)
            answer = runtime.ReloadOutcome(nonce, outcome, os.getpid(), config, list(problems))
            try:
                runtime.answer(directory, answer)
            except OSError as exc:  # the asker waits out its timeout and says so
                log.warning(
                    "reload.answer_failed",
                    directory=str(directory),
                    reason=str(exc),
                    action="give the service's user write access to its runtime directory",
                )


def _handed_down() -> tuple[Path, list[str]]:
    """The requests the program before a re-execution took (none at a first start)."""
    text = os.environ.pop(HANDED_DOWN, "")
    try:
        data = json.loads(text) if text else {}
        return Path(data["dir"]), [str(n) for n in data["nonces"]]
    except (ValueError, KeyError, TypeError):
        return Path(), []
