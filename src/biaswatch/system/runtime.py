"""The runtime directory: the plain pidfile and the files of a reload's request and answer.

Under systemd (``RuntimeDirectory=biaswatch``) it is ``$RUNTIME_DIRECTORY``, i.e.
/run/biaswatch: emptied at every stop of the unit and at boot (systemd.exec(5),
RuntimeDirectory=), so nothing in it outlives the service. Outside systemd it is
``<state_dir>/run``: a directory of the one service on that state directory (a
per-user /run/user/UID would be shared by every service the user starts).

Nothing here decides who runs: that is the state directory's lock alone
(system/pidfile.py). The pidfile is for tools that want a pid in /run; ``status``
never trusts it. The lock file records this directory, so ``biaswatch reload``,
started by hand outside the unit, finds the files of a service systemd started.

A reload (``biaswatch reload``, cli/reload.py) writes ``reload-request.<nonce>``
before its SIGHUP. The service takes (removes) every request when it handles the
signal and, once it knows the outcome, writes ``reload-outcome.<nonce>.json`` for
each, atomically (a temporary file renamed over), so a reader never sees half of
one. A plain ``kill -HUP`` leaves no request and gets no answer file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

ENVIRONMENT_VARIABLE = "RUNTIME_DIRECTORY"
PIDFILE = "biaswatch.pid"
REQUEST_PREFIX = "reload-request."
OUTCOME_PREFIX = "reload-outcome."
OUTCOME_SUFFIX = ".json"

Outcome = Literal["reloaded", "refused"]


def runtime_dir(state_dir: Path, environ: dict[str, str] | None = None) -> Path:
    """``$RUNTIME_DIRECTORY`` (its first entry), else ``<state_dir>/run``."""
    given = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
    # systemd joins several RuntimeDirectory= entries with ":" (systemd.exec(5)).
    first = given.split(":")[0]
    return Path(first) if first else state_dir / "run"


def prepare(directory: Path) -> None:
    """Create the runtime directory (mode 0750, as the unit's RuntimeDirectoryMode=)."""
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)


def write_pidfile(directory: Path, pid: int) -> Path:
    """Write ``pid`` into the pidfile, atomically; returns its path."""
    path = directory / PIDFILE
    _write_atomically(path, f"{pid}\n")
    return path


def remove_pidfile(directory: Path) -> None:
    """Remove the pidfile at a clean stop (a crash leaves it: only the lock is trusted)."""
    with contextlib.suppress(OSError):
        (directory / PIDFILE).unlink()


def new_request(directory: Path) -> str:
    """Write a reload request with a fresh nonce, before the SIGHUP; returns the nonce."""
    nonce = secrets.token_hex(8)
    _write_atomically(directory / f"{REQUEST_PREFIX}{nonce}", f"{os.getpid()}\n")
    return nonce


def withdraw_request(directory: Path, nonce: str) -> None:
    """Remove a request no one answered (the signal could not be sent)."""
    with contextlib.suppress(OSError):
        (directory / f"{REQUEST_PREFIX}{nonce}").unlink()


def take_requests(directory: Path) -> list[str]:
    """The nonces of the reload requests waiting, each removed as it is taken."""
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError:
        return []  # no directory (yet): no request
    taken = []
    for name in names:
        nonce = name.removeprefix(REQUEST_PREFIX)
        if nonce == name or not _is_nonce(nonce):
            continue
        try:
            (directory / name).unlink()
        except OSError:
            continue  # taken by someone else
        taken.append(nonce)
    return taken


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The service's answer to one reload request."""

    nonce: str
    outcome: Outcome
    pid: int
    config: str
    problems: list[str] = field(default_factory=list)


def answer(directory: Path, outcome: ReloadOutcome) -> None:
    """Write the answer to one request, atomically; errors are the caller's to log."""
    path = directory / f"{OUTCOME_PREFIX}{outcome.nonce}{OUTCOME_SUFFIX}"
    _write_atomically(path, json.dumps(asdict(outcome)) + "\n")


def read_outcome(directory: Path, nonce: str) -> ReloadOutcome | None:
    """The answer to ``nonce`` if it is there, removing it once read; None: not yet."""
    path = directory / f"{OUTCOME_PREFIX}{nonce}{OUTCOME_SUFFIX}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    return ReloadOutcome(
        nonce=str(data["nonce"]),
        outcome="reloaded" if data["outcome"] == "reloaded" else "refused",
        pid=int(data["pid"]),
        config=str(data["config"]),
        problems=[str(p) for p in data.get("problems", [])],
    )


def _is_nonce(text: str) -> bool:
    """Whether ``text`` is one of ours (hex): a stray temporary file is not a request."""
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
