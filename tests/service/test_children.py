"""system/children.py: questions asked in forked children, abandoned at their deadline.

A sleep stands in for a call hung in a dead mount (the service tier: real children,
real timers); the hung-FUSE case itself is tests/service/test_status.py's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from biaswatch.system.children import answers_within


def _slow() -> str:
    time.sleep(30)
    return "too late"


def _broken() -> str:
    raise OSError("no such thing")


def test_one_silent_question_hides_none_of_the_others_answers() -> None:
    """Answers come back by key; the silent one is None after the deadline, not 30 s later."""
    start = time.monotonic()
    answers = answers_within({"a": lambda: "ok", "slow": _slow, "b": lambda: "missing"}, 0.5)
    seconds = time.monotonic() - start
    assert answers == {"a": "ok", "slow": None, "b": "missing"}
    assert seconds < 2


def test_a_question_that_raises_has_no_answer() -> None:
    """A question whose child raises gives None, and the caller goes on."""
    assert answers_within({"x": _broken, "y": lambda: "fine"}, 5) == {"x": None, "y": "fine"}


def test_answers_keep_any_bytes_and_any_length() -> None:
    """An answer longer than one pipe buffer, with bytes no codec knows, comes back whole."""
    odd = os.fsdecode(b"/data/\xff\xfe") * 20000  # 160 kB: more than a 64 KiB pipe holds
    assert answers_within({"long": lambda: odd}, 5) == {"long": odd}


def test_the_silent_child_is_killed_and_not_left_running() -> None:
    """A child silent past the deadline is sent SIGKILL: no process sleeps on after it."""
    before = _children()
    answers_within({"slow": _slow}, 0.2)
    time.sleep(0.5)  # SIGKILL ends a sleeping child at once; it is reaped when asked next
    left = [pid for pid in _children() - before if _state(pid) != "Z"]
    assert left == []


def _children() -> set[int]:
    """Pids of this process's children (from /proc)."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def _state(pid: int) -> str:
    """A process's state letter (R, S, D, Z...), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
