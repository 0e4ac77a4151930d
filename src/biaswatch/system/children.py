"""Questions that may hang in the kernel, each asked in a forked child and abandoned at a deadline.

A stat on a hung FUSE mount or a hard NFS mount whose server is gone blocks in the
kernel. A thread stuck there cannot be abandoned: a FUSE request already handed to
its daemon ends neither by SIGKILL nor by exit (kernel fuse.rst, "Interrupting
filesystem operations"), and a process ends only when its last thread does, so a
command that asked on a thread becomes a zombie that never exits, holding its
caller's pipes open. A child process stuck there is only a child: it is sent
SIGKILL, reaped if already gone (WNOHANG, never a blocking wait), and otherwise
left to end when the mount answers (its parent gone, init reaps it). Its standard
streams point at /dev/null first, so a stuck child never holds its caller's pipes.

fork() is only safe (and silent under Python >= 3.12's DeprecationWarning) in a
process of one thread: the commands (``status``, ``check-config``), never the service.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

# An answer is a short string (a probe's word, a resolved path); PATH_MAX is 4096
# (limits.h on Linux), so 64 KiB reads any answer whole.
_READ_BYTES = 65536


def answers_within(questions: Mapping[K, Callable[[], str]], seconds: float) -> dict[K, str | None]:
    """Each question's answer, asked in its own forked child; None if none came by the deadline.

    None too for a question that raised in its child (it has no answer to give).
    Every child starts at once, so one hung mount costs ``seconds`` in all, not per
    question, and never hides the others' answers.
    """
    pending: dict[int, tuple[K, int]] = {}  # read end -> (question, child pid)
    for key, question in questions.items():
        read_end, pid = _ask(question)
        pending[read_end] = (key, pid)
    answers: dict[K, str | None] = dict.fromkeys(questions)
    chunks: dict[int, list[bytes]] = {fd: [] for fd in pending}
    deadline = time.monotonic() + seconds
    while pending and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(pending), [], [], left)
        for fd in ready:
            data = os.read(fd, _READ_BYTES)
            if data:
                chunks[fd].append(data)
                continue
            key, pid = pending.pop(fd)  # end of file: the child wrote its answer and exited
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) == 0:  # else it failed: no answer
                answers[key] = b"".join(chunks[fd]).decode("utf-8", "surrogateescape")
    for fd, (_key, pid) in pending.items():
        _abandon(fd, pid)
    return answers


def _ask(question: Callable[[], str]) -> tuple[int, int]:
    """Fork a child that answers ``question`` on a pipe; the pipe's read end and the child's pid."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _answer(question, read_end, write_end)
    os.close(write_end)
    return read_end, pid


def _answer(question: Callable[[], str], read_end: int, write_end: int) -> None:
    """In the child: stdio to /dev/null, the answer to the pipe, then _exit (no atexit)."""
    code = 1
    try:
        os.close(read_end)
        null = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1, 2):
            os.dup2(null, stream)
        answer = question().encode("utf-8", "surrogateescape")
        while answer:
            answer = answer[os.write(write_end, answer) :]
        code = 0
    except BaseException:  # the child says nothing: its parent sees no answer (None)
        pass
    finally:
        os._exit(code)


def _abandon(read_end: int, pid: int) -> None:
    """Kill a silent child and reap it only if it is already gone: never wait for it.

    Just after SIGKILL it usually is not: it stays a zombie until this (short) command
    exits, or until the hung call returns and it dies; init reaps it then.
    """
    os.close(read_end)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        pass
