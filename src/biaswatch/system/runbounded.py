"""Run a program with bounded memory and time: the alert command's runner.

``subprocess.run(capture_output=True, timeout=...)`` holds all the program's output in
memory (a program printing 10 MB costs the service 40 MB), kills only the program on
timeout (its children live on, orphaned), and then waits for them anyway, since they
hold its pipes. Here the program gets its own session, its standard error is read as
it comes and only its end is kept, and at the deadline the whole process group is
killed and the program reaped.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

# Read in pipe-sized pieces: a Linux pipe holds 64 KiB (pipe(7), "Pipe capacity").
_CHUNK = 65536
# select.PIPE_BUF: the most a write to a pipe that select called writable takes at once.
_PIPE_BUF = 4096
# How often the loop looks whether the program has ended while something (a child it
# left running) still holds its standard error open.
_POLL = 0.2


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the program ended: its status (None: killed at the deadline), its stderr's end."""

    status: int | None
    stderr: bytes


def run_bounded(
    command: Sequence[str],
    payload: bytes,
    env: Mapping[str, str],
    timeout: float,
    keep: int,
) -> Outcome:
    """Run ``command`` with ``payload`` on stdin; keep the last ``keep`` bytes of stderr.

    Raises:
        OSError: the program could not be started.
    """
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,  # its own process group, ended whole at the deadline
    )
    try:
        tail = _exchange(proc, payload, deadline, keep)
        status = _wait(proc, deadline)
    finally:
        if proc.returncode is None:
            _kill_group(proc)
        _close(proc.stdin, proc.stderr)
    return Outcome(status, bytes(tail))


def _exchange(
    proc: subprocess.Popen[bytes], payload: bytes, deadline: float, keep: int
) -> bytearray:
    """Write the payload and read stderr until EOF, the program's end or the deadline."""
    assert proc.stdin is not None and proc.stderr is not None
    tail = bytearray()
    view, written = memoryview(payload), 0
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        if payload:
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0 or (proc.poll() is not None and not selector.select(0)):
                break
            for key, _ in selector.select(min(left, _POLL)):
                if key.fileobj is proc.stdin:
                    written = _write(proc.stdin, view, written, selector)
                elif not _read(proc.stderr, tail, keep):
                    selector.unregister(proc.stderr)
    return tail


def _write(
    stdin: IO[bytes], view: memoryview, written: int, selector: selectors.BaseSelector
) -> int:
    try:
        written += os.write(stdin.fileno(), view[written : written + _PIPE_BUF])
    except BrokenPipeError:  # the program does not read its input: fine
        written = len(view)
    if written >= len(view):
        selector.unregister(stdin)
        stdin.close()
    return written


def _read(stderr: IO[bytes], tail: bytearray, keep: int) -> bool:
    """Append a chunk, drop all but the last ``keep`` bytes; False at end of file."""
    chunk = os.read(stderr.fileno(), _CHUNK)
    tail += chunk
    del tail[:-keep]
    return bool(chunk)


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> int | None:
    try:
        return proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # Killed before it is reaped, so its pid (the group's id) cannot have been reused.
    with contextlib.suppress(ProcessLookupError):  # the group already ended
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _close(*pipes: IO[bytes] | None) -> None:
    for pipe in pipes:
        if pipe is not None and not pipe.closed:
            pipe.close()
